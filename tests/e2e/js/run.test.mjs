// run() and stream() of the official JavaScript client against a live Modelyard: by model name, by
// version, with file outputs read through FileOutput, and the error paths users see.
import assert from "node:assert/strict";
import { test } from "node:test";

import { BASE_URL, URL_, VERSIONS, client, rejection } from "./env.mjs";

test("run by model name returns the iterator's output as an array of strings", async () => {
  const replicate = client();
  const output = await replicate.run("admin/hello", { input: { name: "Ada", repeat: 2 } });
  assert.deepEqual(output, ["Hello, Ada! ", "Hello, Ada! "]);
});

test("run by owner/name:version runs that version", async () => {
  const replicate = client();
  const seen = [];
  const output = await replicate.run(
    `admin/hello:${VERSIONS.hello}`,
    { input: { name: "Bo" } },
    (prediction) => seen.push(prediction)
  );
  assert.deepEqual(output, ["Hello, Bo! "]);
  const last = seen.at(-1);
  assert.equal(last.version, VERSIONS.hello);
  assert.equal(last.model, "admin/hello");
  assert.equal(last.status, "succeeded");
});

test("run with polling instead of a blocking create", async () => {
  const replicate = client();
  const output = await replicate.run("admin/hello", {
    input: { name: "Poll" },
    wait: { mode: "poll", interval: 100 },
  });
  assert.deepEqual(output, ["Hello, Poll! "]);
});

test("stream yields output events then done (the stream URL needs no auth)", async () => {
  const replicate = client();
  const events = [];
  for await (const event of replicate.stream("admin/hello", { input: { name: "Cy", repeat: 3 } })) {
    events.push(event);
  }
  const names = events.map((e) => e.event);
  assert.equal(names.at(-1), "done", `events: ${JSON.stringify(events)}`);
  assert.ok(names.every((n) => ["output", "logs", "done"].includes(n)), names.join(","));
  const outputs = events.filter((e) => e.event === "output").map(String);
  assert.deepEqual(outputs, ["Hello, Cy! ", "Hello, Cy! ", "Hello, Cy! "]);
  for (const event of events) {
    assert.ok(event.id, `every event has an id: ${JSON.stringify(event)}`);
  }
});

test("stream by owner/name:version", async () => {
  const replicate = client();
  const outputs = [];
  for await (const event of replicate.stream(`admin/hello:${VERSIONS.hello}`, {
    input: { name: "Di" },
  })) {
    if (event.event === "output") outputs.push(event.toString());
  }
  assert.deepEqual(outputs, ["Hello, Di! "]);
});

test("a file output comes back as a FileOutput whose blob() has the file's bytes", async () => {
  const replicate = client();
  const output = await replicate.run("admin/text-file", { input: { text: "bytes from JS" } });
  assert.ok(output instanceof ReadableStream, `FileOutput expected, got ${typeof output}`);
  const url = output.url();
  assert.equal(url.protocol, "https:");
  assert.ok(String(output).startsWith(URL_), `${output} is on the server's public URL`);
  // FileOutput downloads with a plain fetch, without the Authorization header.
  const blob = await output.blob();
  assert.equal(await blob.text(), "bytes from JS");
});

test("useFileOutput: false returns the output URL as a string that works without auth", async () => {
  const replicate = client({ useFileOutput: false });
  const output = await replicate.run(`admin/text-file:${VERSIONS.textFile}`, {
    input: { text: "plain url" },
  });
  assert.equal(typeof output, "string");
  assert.ok(output.startsWith("https://"), output);
  const response = await fetch(output);
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "plain url");
});

test("a bad token is an ApiError with status 401 and Replicate's wording", async () => {
  const replicate = client({ auth: "r8_not-a-real-token" });
  const error = await rejection(replicate.run("admin/hello", { input: { name: "x" } }));
  assert.equal(error.name, "ApiError", String(error));
  assert.equal(error.response.status, 401);
  assert.match(error.message, /You did not pass a valid authentication token/);
  assert.ok(error.message.startsWith(`Request to ${BASE_URL}/models/admin/hello/predictions`));
});

test("invalid input is a 422 ApiError naming the field", async () => {
  const replicate = client();
  const error = await rejection(replicate.run("admin/hello", { input: { repeat: 99 } }));
  assert.equal(error.name, "ApiError", String(error));
  assert.equal(error.response.status, 422);
  assert.match(error.message, /repeat/);
  const wrongType = await rejection(
    replicate.run(`admin/hello:${VERSIONS.hello}`, { input: { repeat: "many" } })
  );
  assert.equal(wrongType.response.status, 422);
  assert.match(wrongType.message, /repeat/);
});

test("an unknown model is an ApiError with status 404", async () => {
  const replicate = client();
  const error = await rejection(replicate.run("admin/no-such-model", { input: {} }));
  assert.equal(error.name, "ApiError", String(error));
  assert.equal(error.response.status, 404);
});
