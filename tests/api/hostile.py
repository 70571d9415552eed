"""The in-process API for the hostile-input tests (tests/api/test_hostile_*.py): the platform from
the composition root behind `httpx.ASGITransport`, with instances that never boot (nothing here
needs a worker), and an app error answered as a 500 rather than raised into the test, so a test
sees exactly what a client would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from test_inprocess import HeldBackend, push

from modelyard.platform import build_app
from modelyard.settings import Settings
from modelyard.store.accounts import ensure_admin

__all__ = ["JSON", "api", "push", "raw_json"]

JSON = {"Content-Type": "application/json"}


def raw_json(text: str) -> dict[str, Any]:
    """Keyword arguments for a request whose body is the JSON text `text`, as written: a lone
    surrogate goes as its escape (`"\\ud800"`), which is valid JSON (httpx's `json=` would
    refuse the Python string it decodes to)."""
    return {"content": text.encode(), "headers": JSON}


@pytest_asyncio.fixture(loop_scope="session")
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path / "data", public_url="http://modelyard.test", sync_wait_max=0.5
    )
    app = build_app(settings, backend=HeldBackend())
    with app.state.platform.db.session() as session:
        issued = ensure_admin(session, "admin")
    assert issued is not None
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url=settings.public_url, headers=headers, timeout=60
        ) as client,
    ):
        yield client
