// The predictions API through the JavaScript client: create, wait, get, list and paginate.
import assert from "node:assert/strict";
import { test } from "node:test";

import { BASE_URL, VERSIONS, client } from "./env.mjs";

const PAGE_SIZE = 100;

function assertPredictionShape(prediction) {
  for (const key of ["id", "model", "version", "input", "status", "created_at", "urls"]) {
    assert.ok(key in prediction, `prediction has ${key}: ${JSON.stringify(prediction)}`);
  }
  for (const [name, url] of Object.entries(prediction.urls)) {
    assert.equal(typeof url, "string", `urls.${name} is a string`);
    assert.match(url, /^https:\/\//, `urls.${name} is absolute`);
  }
}

test("predictions.create by version, then replicate.wait until it succeeds", async () => {
  const replicate = client();
  const created = await replicate.predictions.create({
    version: VERSIONS.hello,
    input: { name: "Cy" },
  });
  assertPredictionShape(created);
  assert.equal(created.version, VERSIONS.hello);
  assert.equal(created.urls.get, `${BASE_URL}/predictions/${created.id}`);
  assert.ok(created.urls.stream, "an iterator model gets urls.stream");

  const done = await replicate.wait(created, { interval: 100 });
  assert.equal(done.status, "succeeded", JSON.stringify(done));
  assert.deepEqual(done.output, ["Hello, Cy! "]);
  assert.ok(done.metrics.predict_time > 0, JSON.stringify(done.metrics));
  assert.match(done.logs, /greeting 1 of 1/);

  const fetched = await replicate.predictions.get(created.id);
  assert.equal(fetched.id, created.id);
  assert.equal(fetched.status, "succeeded");
  assert.deepEqual(fetched.output, done.output);
});

test("predictions.create by model, with Prefer: wait", async () => {
  const replicate = client();
  const prediction = await replicate.predictions.create({
    model: "admin/hello",
    input: { name: "Wait" },
    wait: 30,
  });
  assertPredictionShape(prediction);
  assert.equal(prediction.model, "admin/hello");
  const done = await replicate.wait(prediction, { interval: 100 });
  assert.deepEqual(done.output, ["Hello, Wait! "]);
});

test("predictions.list pages follow `next` through paginate, newest first", async () => {
  const replicate = client();
  // One more than a page, on a model of its own so the queue of admin/hello stays short.
  const created = [];
  for (let i = 0; i < PAGE_SIZE + 1; i += 1) {
    created.push(
      await replicate.predictions.create({ version: VERSIONS.echo, input: { name: `p${i}` } })
    );
  }

  const first = await replicate.predictions.list();
  assert.equal(first.results.length, PAGE_SIZE);
  assert.match(first.next, /^https:\/\//, "next is an absolute URL");
  assert.equal(first.previous ?? null, null);

  const pages = [];
  for await (const results of replicate.paginate(replicate.predictions.list)) {
    pages.push(results);
  }
  assert.ok(pages.length >= 2, `expected at least two pages, got ${pages.length}`);
  const ids = pages.flat().map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, "no prediction is listed twice");
  for (const prediction of created) {
    assert.ok(ids.includes(prediction.id), `${prediction.id} is listed`);
  }
  // Newest first: our predictions appear in the reverse of the order they were created.
  const ours = ids.filter((id) => created.some((p) => p.id === id));
  assert.deepEqual(ours, created.map((p) => p.id).reverse());
  for (const prediction of pages.flat()) assertPredictionShape(prediction);
});
