"""Replicate's official MCP server (npm `replicate-mcp` 0.9.0) against a live server, over stdio.

The MCP server is the unmodified package pinned in tests/e2e/js (package-lock.json), started the
way an MCP client starts it (`npx replicate-mcp` runs the same file), with only
`REPLICATE_BASE_URL` and `REPLICATE_API_TOKEN` pointing it at Modelyard; `NODE_EXTRA_CA_CERTS`
makes Node trust the test CA. The client side is the official Python MCP SDK (`mcp`), speaking
MCP's stdio transport to it: list tools, list models and read a version's schema, run
predictions and poll them through the tools until they succeed.

Twelve of its tools (`get_models`, `list_models_versions`, `get_models_versions`, `search_models`,
the collections, ...) send their request and then answer only "Successful tool call": the
generated handler awaits the response and drops it (its SDK, `replicate-stainless` 0.9.0, types
those responses as `void`). `test_model_and_version_tools_drop_the_answer` pins that down and
shows the same requests get full answers from the server; docs/agents.md says what to use instead.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from live import LiveServer
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

JS = Path(__file__).parent / "js"
MCP_SERVER = JS / "node_modules" / "replicate-mcp" / "index.js"  # its package.json "bin"
CALL_TIMEOUT_S = 120.0  # one tool call; a cold boot of the model happens inside one
POLL_LIMIT_S = 180.0  # polling get_predictions until the prediction ends
TERMINAL = {"succeeded", "failed", "canceled"}
# The tools that answer "Successful tool call" whatever the server sent (docs/agents.md lists
# them; `test_default_mode_has_a_tool_per_endpoint` checks the list against the package's code).
DROPPING = {
    "list_collections", "get_collections", "delete_deployments", "delete_files", "create_models",
    "delete_models", "list_models_examples", "get_models", "search_models",
    "delete_models_versions", "get_models_versions", "list_models_versions",
}  # fmt: skip


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned MCP server installed (fails loudly rather than skipping)."""
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH: install Node.js 20 or newer to run the MCP e2e tests")
    if not MCP_SERVER.is_file():
        pytest.fail(
            "tests/e2e/js/node_modules/replicate-mcp is missing: install it with\n"
            "    (cd tests/e2e/js && npm ci --no-audit --no-fund)\n"
            "(.ci/run does this)"
        )
    return found


@asynccontextmanager
async def mcp_session(
    node: str, server: LiveServer, log: Path, *args: str
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with `replicate-mcp *args`, its stderr going to `log`."""
    params = StdioServerParameters(
        command=node,
        args=[str(MCP_SERVER), *args],
        env={
            # the SDK's base URL includes /v1, as its default https://api.replicate.com/v1 does
            "REPLICATE_BASE_URL": f"{server.url}/v1",
            "REPLICATE_API_TOKEN": server.token,
            "NODE_EXTRA_CA_CERTS": str(server.tls.ca_file),
        },
    )
    with log.open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT_S) as session,
        ):
            await session.initialize()
            yield session


async def call_text(session: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
    """The text the tool answered (the server's tools answer one text block)."""
    result = await session.call_tool(tool, arguments)
    content = getattr(result, "content", None)
    assert content and not getattr(result, "isError", False), f"{tool}: {result!r}"
    return str(content[0].text)


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> Any:
    """The tool's answer, parsed: the server puts `JSON.stringify(response)` in a text block."""
    return json.loads(await call_text(session, tool, arguments))


async def poll(
    session: ClientSession, prediction: dict[str, Any], dynamic: bool = False
) -> dict[str, Any]:
    """get_predictions until the prediction ends, as an agent would (bounded); `dynamic`: through
    invoke_api_endpoint, the only way to it in `--tools=dynamic` mode."""
    deadline = time.monotonic() + POLL_LIMIT_S
    while prediction["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"still {prediction['status']}: {prediction}"
        await anyio.sleep(0.2)
        arguments = {"prediction_id": prediction["id"]}
        if dynamic:
            invoke = {"endpoint_name": "get_predictions", "args": arguments}
            prediction = await call(session, "invoke_api_endpoint", invoke)
        else:
            prediction = await call(session, "get_predictions", arguments)
    return prediction


async def test_default_mode_has_a_tool_per_endpoint(
    node: str, server: LiveServer, tmp_path: Path
) -> None:
    async with mcp_session(node, server, tmp_path / "mcp.log") as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
    # 0.9.0 exposes 35 tools, one per endpoint of Replicate's API, when started without flags
    assert len(tools) == 35, sorted(tools)
    used = {"list_models", "create_predictions", "create_models_predictions", "get_predictions"}
    assert used | DROPPING <= tools, sorted(tools)
    # The handlers that throw the answer away, read from the installed package (the CommonJS
    # build that `index.js` loads): each such file names its tool as `name: '...'`.
    dropping = set()
    for handler in (MCP_SERVER.parent / "tools").rglob("*.js"):
        code = handler.read_text()
        if "'Successful tool call'" in code:
            dropping.add(code.split("name: '", 1)[1].split("'", 1)[0])
    assert dropping == DROPPING


async def test_lists_models_and_reads_a_schema(
    node: str, server: LiveServer, hello: str, tmp_path: Path
) -> None:
    async with mcp_session(node, server, tmp_path / "mcp.log") as session:
        page = await call(session, "list_models", {})
    # The answer is the SDK's page object: the HTTP body is under "body", its items under "results".
    models = {f"{m['owner']}/{m['name']}": m for m in page["results"]}
    assert page["body"]["results"] == page["results"]
    model = models["admin/hello"]
    assert model["url"] == f"{server.url}/admin/hello"
    latest = model["latest_version"]
    assert latest["id"] == hello
    schemas = latest["openapi_schema"]["components"]["schemas"]
    assert set(schemas["Input"]["properties"]) == {"name", "repeat"}
    assert schemas["Input"]["properties"]["repeat"]["maximum"] == 10
    assert schemas["Output"]["type"] == "array"


async def test_runs_predictions_and_polls_their_output(
    node: str, server: LiveServer, hello: str, tmp_path: Path
) -> None:
    async with mcp_session(node, server, tmp_path / "mcp.log") as session:
        created = await call(
            session, "create_predictions", {"version": hello, "input": {"name": "MCP", "repeat": 2}}
        )
        assert created["version"] == hello
        assert created["urls"]["get"] == f"{server.url}/v1/predictions/{created['id']}"
        done = await poll(session, created)
        assert done["status"] == "succeeded", done
        assert done["output"] == ["Hello, MCP! ", "Hello, MCP! "]

        # By model name, with the `Prefer` header the tool offers as an argument.
        by_model = await call(
            session,
            "create_models_predictions",
            {"model_owner": "admin", "model_name": "hello", "input": {}, "Prefer": "wait=30"},
        )
        assert by_model["model"] == "admin/hello"
        assert (await poll(session, by_model))["output"] == ["Hello, world! "]

        listed = await call(session, "list_predictions", {})
        assert {created["id"], by_model["id"]} <= {p["id"] for p in listed["results"]}

        # A refused input comes back as the MCP error carrying our problem details.
        with pytest.raises(MCPError) as refused:
            await call(session, "create_predictions", {"version": hello, "input": {"repeat": 99}})
        assert "422" in str(refused.value) and "repeat" in str(refused.value)


async def test_model_and_version_tools_drop_the_answer(
    node: str, server: LiveServer, hello: str, tmp_path: Path
) -> None:
    """The tool's doing, not ours: each request reaches the server (an unknown model's 404 comes
    back), the server answers it in full, and the tool replies "Successful tool call"."""
    model = {"model_owner": "admin", "model_name": "hello"}
    requests = {
        "get_models": ("/v1/models/admin/hello", model),
        "list_models_versions": ("/v1/models/admin/hello/versions", model),
        "get_models_versions": (
            f"/v1/models/admin/hello/versions/{hello}",
            {**model, "version_id": hello},
        ),
    }
    async with mcp_session(node, server, tmp_path / "mcp.log") as session:
        for tool, (_path, arguments) in requests.items():
            assert await call(session, tool, arguments) == "Successful tool call", tool
        with pytest.raises(MCPError) as missing:
            await call(session, "get_models", {"model_owner": "admin", "model_name": "nope"})
        assert "404" in str(missing.value) and "does not exist" in str(missing.value)

    # The same requests as the SDK sends them (it asks these with `Accept: */*`) get full bodies.
    with server.http(headers={"Accept": "*/*"}) as http:
        bodies = {tool: http.get(path) for tool, (path, _args) in requests.items()}
    for tool, response in bodies.items():
        assert response.status_code == 200, (tool, response.text)
        assert response.headers["content-type"].startswith("application/json"), tool
    assert bodies["get_models"].json()["latest_version"]["id"] == hello
    assert bodies["list_models_versions"].json()["results"][0]["id"] == hello
    schema = bodies["get_models_versions"].json()["openapi_schema"]
    assert "Input" in schema["components"]["schemas"]


async def test_dynamic_tools_mode(
    node: str, server: LiveServer, hello: str, tmp_path: Path
) -> None:
    """`--tools=dynamic`: three tools to discover and invoke the endpoints (same handlers)."""
    async with mcp_session(node, server, tmp_path / "mcp.log", "--tools=dynamic") as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert tools == {"list_api_endpoints", "get_api_endpoint_schema", "invoke_api_endpoint"}
        found = await call(session, "list_api_endpoints", {"search_query": "predictions"})
        assert "create_models_predictions" in {t["name"] for t in found["tools"]}
        created = await call(
            session,
            "invoke_api_endpoint",
            {
                "endpoint_name": "create_models_predictions",
                "args": {"model_owner": "admin", "model_name": "hello", "input": {"name": "dyn"}},
            },
        )
        assert (await poll(session, created, dynamic=True))["output"] == ["Hello, dyn! "]
