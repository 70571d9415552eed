// What every test file shares: the live server's address, the admin token, the pushed versions and
// a client built exactly as a user would build it (only `baseUrl` differs from Replicate's default).
// tests/e2e/test_js_client.py sets these variables; see README.md to run the files by hand.
import Replicate from "replicate";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run these tests through tests/e2e/test_js_client.py (see README.md)`
    );
  }
  return value;
}

export const URL_ = required("MODELYARD_URL").replace(/\/+$/, "");
export const TOKEN = required("MODELYARD_TOKEN");
export const BASE_URL = `${URL_}/v1`;

/** Version ids of the models the pytest wrapper pushed, by model name (owner is `admin`). */
export const VERSIONS = {
  hello: required("MODELYARD_HELLO_VERSION"),
  textFile: required("MODELYARD_TEXT_FILE_VERSION"),
  readFile: required("MODELYARD_READ_FILE_VERSION"),
  echo: required("MODELYARD_ECHO_VERSION"),
};

/** The official client pointed at the server; `options` are passed through (e.g. `auth`). */
export function client(options = {}) {
  return new Replicate({ auth: TOKEN, baseUrl: BASE_URL, ...options });
}

/** Runs `promise` and returns the error it rejects with (failing if it resolves). */
export async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected the call to fail, but it succeeded");
}
