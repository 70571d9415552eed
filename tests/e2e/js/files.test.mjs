// The Files API through the JavaScript client, which sends `metadata` as a file part of the
// multipart body, and file inputs, which the client uploads before creating the prediction.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { BASE_URL, VERSIONS, client, rejection } from "./env.mjs";

function sha256(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

function assertFileShape(file) {
  for (const key of ["id", "name", "content_type", "size", "etag", "checksums", "metadata"]) {
    assert.ok(key in file, `file has ${key}: ${JSON.stringify(file)}`);
  }
  assert.ok(file.created_at && file.expires_at, JSON.stringify(file));
  assert.equal(file.urls.get, `${BASE_URL}/files/${file.id}`);
}

test("files.create uploads a Buffer; get, list and delete see it", async () => {
  const replicate = client();
  const bytes = Buffer.from("uploaded by the JavaScript client\n");
  const file = await replicate.files.create(bytes);
  assertFileShape(file);
  assert.match(file.name, /^buffer_\d+$/);
  assert.equal(file.content_type, "application/octet-stream");
  assert.equal(file.size, bytes.length);
  assert.equal(file.checksums.sha256, sha256(bytes));
  assert.deepEqual(file.metadata, {});

  const fetched = await replicate.files.get(file.id);
  assert.deepEqual(fetched, file);

  const listed = await replicate.files.list();
  assert.ok(
    listed.results.some((f) => f.id === file.id),
    `${file.id} in ${JSON.stringify(listed.results.map((f) => f.id))}`
  );

  assert.equal(await replicate.files.delete(file.id), true);
  const gone = await rejection(replicate.files.get(file.id));
  assert.equal(gone.name, "ApiError", String(gone));
  assert.equal(gone.response.status, 404);
});

test("files.create keeps the metadata the client sends as a JSON file part", async () => {
  const replicate = client();
  const blob = new Blob(["a,b\n1,2\n"], { type: "text/csv" });
  const metadata = { purpose: "e2e", nested: { n: 1 } };
  const file = await replicate.files.create(blob, metadata);
  assertFileShape(file);
  assert.match(file.name, /^blob_\d+$/);
  assert.match(file.content_type, /^text\/csv/);
  assert.deepEqual(file.metadata, metadata);
  assert.equal(file.checksums.sha256, sha256("a,b\n1,2\n"));
  await replicate.files.delete(file.id);
});

test("run with a Buffer input uploads it and passes its urls.get to the model", async () => {
  const replicate = client();
  const seen = [];
  const output = await replicate.run(
    "admin/read-file",
    { input: { document: Buffer.from("read back from a Buffer") } },
    (prediction) => seen.push(prediction)
  );
  assert.equal(output, "read back from a Buffer");
  // The prediction's input holds the uploaded file's URL, not a data URI: the upload path was used.
  const input = seen[0].input.document;
  assert.ok(input.startsWith(`${BASE_URL}/files/`), input);
});

test("run with a Blob input by version", async () => {
  const replicate = client({ fileEncodingStrategy: "upload" });
  const output = await replicate.run(`admin/read-file:${VERSIONS.readFile}`, {
    input: { document: new Blob(["read back from a Blob"], { type: "text/plain" }) },
  });
  assert.equal(output, "read back from a Blob");
});

test("a data: URI input needs no upload", async () => {
  const replicate = client();
  const text = "inline as a data URI";
  const output = await replicate.run("admin/read-file", {
    input: { document: `data:text/plain;base64,${Buffer.from(text).toString("base64")}` },
  });
  assert.equal(output, text);
});
