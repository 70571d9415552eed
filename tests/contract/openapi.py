"""Check HTTP responses against Replicate's published OpenAPI spec and the official Python client.

`Contract.load()` reads `replicate-openapi.json` next to this file. It is a verbatim copy of
`/work/shared/replicate-openapi.json`, which is `https://api.replicate.com/openapi.json` as vendored
by tryAGI/Replicate (`src/libs/Replicate/openapi.json`, commit 1625ee75, 2026-03-16; `info.version`
"1.0.0-a1", sha256 4500bf86…8b39); see docs `reference/replicate-api.md` §1.

- `contract.operation(method, path)` maps a concrete request (`GET /v1/models/a/b`, with or without
  `/v1`, query strings ignored) to its `Operation`; `contract.operations()` lists all 37.
- `contract.check(method, path, status, body, content_type)` raises `ContractError` listing every
  violation with its JSON path. The response is the one declared for `status`, else `NXX`, else
  `default`, else (for a 2xx) the first declared 2xx: both clients accept any 2xx. A 204 must have no
  body. Every 4xx/5xx must be problem details (`detail` string, `status` equal to the HTTP status),
  whether or not the spec declares it. 2xx bodies also go through `CLIENT_CHECKS`: JSON Schemas
  for what `replicate` 1.0.7 requires beyond the spec (messages prefixed `[py-client]`).
- `Recorder().attach(client)` records every response of an `httpx.Client`/`AsyncClient`;
  `recorder.check_all(contract)` checks them all and returns the operationIds covered.

The spec is normalised before use: OpenAPI 3.0 `nullable: true` (used although the file says 3.1)
becomes a type union, and Prediction `version`'s `oneOf` becomes `anyOf` because `"hidden"`
matches both of its branches, so `oneOf` would reject the very value it documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).with_name("replicate-openapi.json")
SPEC_URI = "urn:replicate-openapi"
PY_URI = "urn:replicate-python-1.0.7"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace", "query")
PROBLEM_JSON = "application/problem+json"
_C = TypeVar("_C", httpx.Client, httpx.AsyncClient)

FORMATS = FormatChecker(formats=())
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value[:19])  # month/day/hour ranges
    return _RFC3339.fullmatch(value) is not None


@FORMATS.checks("uri")
def _is_absolute_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme)


# --- what `replicate` 1.0.7's pydantic v1 models require (replicate-api.md §2, §6) -------------
# fmt: off
_S, _I, _OBJ = {"type": "string"}, {"type": "integer"}, {"type": "object"}
_STR_MAP = {"type": "object", "additionalProperties": _S}
_ABS_URL = {"type": "string", "pattern": r"^https?://[^/?#]+"}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null; `if`/`then` rather than `anyOf` so errors inside keep their JSON paths."""
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"if": {"not": {"type": "null"}}, "then": schema}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {**required, **(optional or {})}
    return {"type": "object", "required": list(required), "properties": props}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def _page(item: str) -> dict[str, Any]:
    results = {"type": "array", "items": _ref(item)}
    return _obj({"results": results}, {"next": _opt(_ABS_URL), "previous": _opt(_ABS_URL)})


_STATUS = {"enum": ["starting", "processing", "succeeded", "failed", "canceled"]}
_RUN = {"input": _opt(_OBJ), "logs": _opt(_S), "error": _opt(_S), "metrics": _opt(_OBJ),
        "created_at": _opt(_S), "started_at": _opt(_S), "completed_at": _opt(_S),
        "urls": _opt(_STR_MAP)}
_TRAINED = {"type": "string", "pattern": r"^[^/]+/[^/:]+:.+$"}  # owner/name:version_id
_RELEASE = _obj(
    {"number": _I, "model": _S, "version": _S, "created_at": _S,
     "configuration": _obj({"hardware": _S, "min_instances": _I, "max_instances": _I})},
    {"created_by": _opt(_ref("account"))})
_DEFS: dict[str, Any] = {
    "prediction": _obj({"id": _S, "model": _S, "version": _S, "status": _STATUS}, _RUN),
    "training": _obj({"id": _S, "model": _S, "version": _S, "status": _STATUS}, {**_RUN, "output": {
        "if": {"type": "object", "required": ["version"]},
        "then": {"properties": {"version": _TRAINED}}}}),
    "version": _obj({"id": _S, "created_at": {"type": "string", "format": "date-time"},
                     "cog_version": _S, "openapi_schema": _OBJ}),
    "model": _obj(
        {"url": _S, "owner": _S, "name": _S, "visibility": {"enum": ["public", "private"]},
         "run_count": _I},
        {"default_example": _opt(_ref("prediction")), "latest_version": _opt(_ref("version")),
         **{k: _opt(_S) for k in ("description", "github_url", "paper_url", "license_url",
                                  "cover_image_url")}}),
    "file": _obj({"id": _S, "name": _S, "content_type": _S, "size": _I, "etag": _S,
                  "checksums": _STR_MAP, "metadata": _OBJ, "created_at": _S, "urls": _STR_MAP},
                 {"expires_at": _opt(_S)}),
    "collection": _obj({"slug": _S, "name": _S, "description": _S},
                       {"models": _opt({"type": "array", "items": _ref("model")})}),
    "account": _obj({"type": {"enum": ["user", "organization"]}, "username": _S, "name": _S},
                    {"github_url": _opt(_S)}),
    "deployment": _obj({"owner": _S, "name": _S}, {"current_release": _opt(_RELEASE)}),
    "hardware": {"type": "array", "items": _obj({"sku": _S, "name": _S})},
    # Py splits the key on "_" and needs exactly two parts: whsec_<standard base64>.
    "secret": _obj({"key": {"type": "string", "pattern": r"^whsec_[A-Za-z0-9+/=]+$"}}),
    "search": {"properties": {"models": {"items": {"properties": {"model": _ref("model")}}}}},
}
_DEFS.update({f"page_{n}": _page(n)
              for n in ("collection", "deployment", "file", "model", "prediction", "training",
                        "version")})
PY_CLIENT_SCHEMA: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                                    "$id": PY_URI, "$defs": _DEFS}

#: operationId -> the `PY_CLIENT_SCHEMA` definition its 2xx body must also satisfy.
CLIENT_CHECKS: dict[str, str] = {op: name for name, ops in {
    "account": "account.get", "collection": "collections.get", "hardware": "hardware.list",
    "deployment": "deployments.create deployments.get deployments.update",
    "file": "files.create files.get", "model": "models.create models.get models.update",
    "prediction": "predictions.create predictions.get predictions.cancel "
                  "models.predictions.create deployments.predictions.create",
    "training": "trainings.create trainings.get trainings.cancel",
    "version": "models.versions.get", "secret": "webhooks.default.secret.get", "search": "search",
    "page_collection": "collections.list", "page_deployment": "deployments.list",
    "page_file": "files.list", "page_model": "models.list models.search",
    "page_prediction": "predictions.list models.examples.list",
    "page_training": "trainings.list", "page_version": "models.versions.list",
}.items() for op in ops.split()}
# fmt: on


@dataclass(frozen=True)
class Operation:
    method: str  # upper case, e.g. "QUERY"
    path: str  # spec template, relative to /v1
    operation_id: str


@dataclass(frozen=True)
class Violation:
    where: str  # JSON path into the body, "$" for the body itself
    message: str
    request: str = ""  # "GET /v1/models -> 200", filled in by `ContractError`

    def __str__(self) -> str:
        return f"{self.request}: {self.where}: {self.message}".lstrip(": ")


class ContractError(AssertionError):
    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = "\n".join(f"  {v}" for v in violations)
        super().__init__(f"{len(violations)} contract violation(s):\n{lines}")


class OperationNotFound(LookupError):
    pass


def _normalise(node: Any) -> Any:
    """Turn OpenAPI 3.0 `nullable: true` into JSON Schema 2020-12 (recursively, on a copy)."""
    if isinstance(node, list):
        return [_normalise(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _normalise(v) for k, v in node.items() if not (k == "nullable" and v is True)}
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif isinstance(out.get("type"), list) and "null" not in out["type"]:
            out["type"] = [*out["type"], "null"]
        elif "type" not in out and len(out.keys() - {"description", "example"}):
            out = {"anyOf": [{"type": "null"}, out]}
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _media(content_type: str | None) -> str | None:
    return content_type.split(";")[0].strip().lower() if content_type else None


class Contract:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = _normalise(spec)
        version = self.spec["components"]["schemas"]["schemas_prediction_response"]["properties"]
        if "oneOf" in version.get("version", {}):
            version["version"]["anyOf"] = version["version"].pop("oneOf")
        spec_res = DRAFT202012.create_resource(self.spec)
        py_res = DRAFT202012.create_resource(PY_CLIENT_SCHEMA)
        self.registry = Registry().with_resources([(SPEC_URI, spec_res), (PY_URI, py_res)])
        self.client_checks = dict(CLIENT_CHECKS)
        self._ops: list[tuple[re.Pattern[str], int, Operation, dict[str, Any]]] = []
        for template, item in self.spec["paths"].items():
            rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            literal = sum(1 for seg in template.split("/") if seg and "{" not in seg)
            for method, op in item.items():
                if method in HTTP_METHODS and isinstance(op, dict):
                    operation = Operation(method.upper(), template, op["operationId"])
                    self._ops.append((rx, literal, operation, op.get("responses", {})))
        self._ops.sort(key=lambda entry: -entry[1])  # literal segments win over parameters
        self._validators: dict[str, Draft202012Validator] = {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> Contract:
        return cls(json.loads(Path(path or SPEC_PATH).read_text()))

    def operations(self) -> list[Operation]:
        return sorted((e[2] for e in self._ops), key=lambda o: (o.path, o.method))

    def operation(self, method: str, path: str) -> Operation:
        return self._find(method, path)[0]

    def _find(self, method: str, path: str) -> tuple[Operation, dict[str, Any]]:
        relative = urlsplit(path).path
        if relative == "/v1" or relative.startswith("/v1/"):
            relative = relative[3:]
        matches = [(op, responses) for rx, _, op, responses in self._ops if rx.match(relative)]
        for op, responses in matches:
            if op.method == method.upper():
                return op, responses
        if matches:
            allowed = ", ".join(f"{op.method} ({op.operation_id})" for op, _ in matches)
            raise OperationNotFound(
                f"{method.upper()} {path}: {matches[0][0].path} has only {allowed}"
            )
        raise OperationNotFound(f"{method.upper()} {path}: no spec path matches {relative!r}")

    def check(
        self, method: str, path: str, status: int, body: Any, content_type: str | None = None
    ) -> None:
        violations = self.violations(method, path, status, body, content_type)
        if violations:
            raise ContractError(violations)

    def violations(
        self, method: str, path: str, status: int, body: Any, content_type: str | None = None
    ) -> list[Violation]:
        op, responses = self._find(method, path)
        request = f"{method.upper()} {path} -> {status}"
        found: list[tuple[str, str]] = []
        family = f"{status // 100}XX"
        key = next(
            (k for k in (str(status), family, family.lower(), "default") if k in responses), None
        )
        if key is None and 200 <= status < 300:
            key = next((k for k in responses if k.startswith("2")), None)
        if status == 204:
            if body not in (None, b"", ""):
                found.append(("$", f"a 204 response must have no body, got {body!r:.80}"))
            return [Violation(w, m, request) for w, m in found]
        if key is None and status < 400:
            declared = ", ".join(responses)
            found.append(("$", f"status {status} is not declared ({declared})"))
        content: dict[str, Any] = responses.get(key, {}).get("content", {}) if key else {}
        media = _media(content_type)
        if status >= 400:
            found += self._problem(status, body, media, content)
        elif media and content and media not in content:
            found.append(("$", f"content type {media} is not declared ({', '.join(content)})"))
        chosen = media if media in content else next(iter(content), None)
        schema = content.get(chosen, {}).get("schema") if chosen else None
        if key and chosen and schema and schema.get("format") != "binary":
            parts = ("paths", op.path, op.method.lower(), "responses", key, "content", chosen)
            pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)
            found += self._validate(f"{SPEC_URI}#{pointer}/schema", body, "")
        if 200 <= status < 300 and op.operation_id in self.client_checks:
            uri = f"{PY_URI}#/$defs/{self.client_checks[op.operation_id]}"
            found += self._validate(uri, body, "[py-client] ")
        return [Violation(w, m, request) for w, m in found]

    @staticmethod
    def _problem(
        status: int, body: Any, media: str | None, content: dict[str, Any]
    ) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if media and media != PROBLEM_JSON and media not in content:
            out.append(("$", f"an error must be {PROBLEM_JSON}, got {media}"))
        if not isinstance(body, dict):
            return [*out, ("$", f"problem details must be a JSON object, got {body!r:.80}")]
        detail, code = body.get("detail"), body.get("status")
        if not isinstance(detail, str):
            out.append(("$.detail", f"problem details need a string detail, got {detail!r:.80}"))
        if type(code) is not int or code != status:
            out.append(("$.status", f"must be the HTTP status {status} (an integer), got {code!r}"))
        return out

    def _validate(self, uri: str, body: Any, prefix: str) -> list[tuple[str, str]]:
        if uri not in self._validators:
            self._validators[uri] = Draft202012Validator(
                {"$ref": uri}, registry=self.registry, format_checker=FORMATS
            )
        errors = self._validators[uri].iter_errors(body)
        return sorted((e.json_path, prefix + e.message) for e in errors)


@dataclass(frozen=True)
class Recorded:
    method: str
    url: str
    path: str
    status: int
    content_type: str | None
    body: Any  # parsed JSON, text for text/*, bytes otherwise, None when empty or not read


class Recorder:
    """Records every response of the httpx clients it is attached to, for `check_all`."""

    def __init__(self) -> None:
        self.responses: list[Recorded] = []
        self.skipped: list[Recorded] = []  # set by check_all: SSE and paths outside the spec

    def attach(self, client: _C) -> _C:
        """Add a response hook to `client` (before or after it is opened) and return it."""
        hook: Callable[[httpx.Response], Any] = (
            self._async_hook if isinstance(client, httpx.AsyncClient) else self._hook
        )
        hooks = client.event_hooks
        hooks["response"] = [*hooks.get("response", []), hook]
        client.event_hooks = hooks
        return client

    @staticmethod
    def _is_stream(response: httpx.Response) -> bool:
        return _media(response.headers.get("content-type")) == "text/event-stream"

    def _hook(self, response: httpx.Response) -> None:
        if not self._is_stream(response):
            response.read()
        self._record(response)

    async def _async_hook(self, response: httpx.Response) -> None:
        if not self._is_stream(response):
            await response.aread()
        self._record(response)

    def _record(self, response: httpx.Response) -> None:
        media, body = _media(response.headers.get("content-type")), None
        if media != "text/event-stream" and response.content:
            if media and media.endswith(("/json", "+json")):
                try:
                    body = response.json()
                except ValueError:
                    body = response.text  # fails any object schema, and shows what came back
            else:
                body = response.text if media and media.startswith("text/") else response.content
        url, ctype = response.request.url, response.headers.get("content-type")
        req = response.request
        self.responses.append(
            Recorded(req.method, str(url), url.path, response.status_code, ctype, body)
        )

    def check_all(self, contract: Contract) -> set[str]:
        """Check every recorded response; raise one ContractError listing all violations."""
        covered: set[str] = set()
        violations: list[Violation] = []
        self.skipped = []
        for r in self.responses:
            try:
                op = contract.operation(r.method, r.path)
            except OperationNotFound:
                op = None
            if op is None or _media(r.content_type) == "text/event-stream":
                self.skipped.append(r)
                continue
            covered.add(op.operation_id)
            violations += contract.violations(r.method, r.path, r.status, r.body, r.content_type)
        if violations:
            raise ContractError(violations)
        return covered
