// Models, versions, search, account, hardware and the webhook secret through the JavaScript client.
import assert from "node:assert/strict";
import { test } from "node:test";

import { VERSIONS, client } from "./env.mjs";

function assertModelShape(model) {
  for (const key of ["url", "owner", "name", "visibility", "run_count"]) {
    assert.ok(key in model, `model has ${key}: ${JSON.stringify(model)}`);
  }
  assert.ok(["public", "private"].includes(model.visibility), model.visibility);
  assert.equal(typeof model.run_count, "number");
}

test("models.get gives the model with its latest version", async () => {
  const replicate = client();
  const model = await replicate.models.get("admin", "hello");
  assertModelShape(model);
  assert.equal(model.owner, "admin");
  assert.equal(model.name, "hello");
  assert.equal(model.latest_version.id, VERSIONS.hello);
  assert.ok(model.latest_version.cog_version, "cog_version is not null");
});

test("models.versions.list and models.versions.get", async () => {
  const replicate = client();
  const page = await replicate.models.versions.list("admin", "hello");
  assert.ok(page.results.some((v) => v.id === VERSIONS.hello), JSON.stringify(page));
  const version = await replicate.models.versions.get("admin", "hello", VERSIONS.hello);
  assert.equal(version.id, VERSIONS.hello);
  assert.ok(version.cog_version);
  const output = version.openapi_schema.components.schemas.Output;
  assert.equal(output.type, "array");
  assert.equal(output["x-cog-array-type"], "iterator");
});

test("models.list pages through models with absolute next URLs", async () => {
  const replicate = client();
  const names = [];
  for await (const results of replicate.paginate(replicate.models.list)) {
    for (const model of results) {
      assertModelShape(model);
      names.push(`${model.owner}/${model.name}`);
    }
  }
  assert.ok(names.includes("admin/hello"), names.join(", "));
});

test("models.search sends a JSON-quoted QUERY body and finds the model", async () => {
  const replicate = client();
  const page = await replicate.models.search("hello");
  assert.ok(Array.isArray(page.results), JSON.stringify(page));
  const found = page.results.find((m) => m.owner === "admin" && m.name === "hello");
  assert.ok(found, `admin/hello in ${JSON.stringify(page.results.map((m) => m.name))}`);
  assertModelShape(found);
  const none = await replicate.models.search("zz-no-model-matches-this-zz");
  assert.deepEqual(none.results, []);
});

test("accounts.current is the token's account", async () => {
  const replicate = client();
  const account = await replicate.accounts.current();
  assert.equal(account.type, "user");
  assert.equal(account.username, "admin");
  assert.equal(typeof account.name, "string");
});

test("hardware.list is a bare array that includes cpu", async () => {
  const replicate = client();
  const hardware = await replicate.hardware.list();
  assert.ok(Array.isArray(hardware), JSON.stringify(hardware));
  for (const sku of hardware) {
    assert.equal(typeof sku.sku, "string");
    assert.equal(typeof sku.name, "string");
  }
  assert.ok(hardware.some((h) => h.sku === "cpu"), JSON.stringify(hardware));
});

test("webhooks.default.secret.get gives a whsec_ key in standard base64", async () => {
  const replicate = client();
  const secret = await replicate.webhooks.default.secret.get();
  assert.match(secret.key, /^whsec_[A-Za-z0-9+/]+={0,2}$/);
  const again = await replicate.webhooks.default.secret.get();
  assert.equal(again.key, secret.key, "the secret is stable");
});
