"""Hostile numbers, headers and URLs (issue 13): every number is range-checked and every header
is read before anything is stored, so a bad one answers 4xx and a retrying client makes no
duplicates; NULs in URLs (which PostgreSQL cannot compare) are refused up front.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hostile import api, push

from modelyard.api.jobs import CANCEL_AFTER_MAX
from modelyard.api.routes.deployments import INSTANCES_MAX

__all__ = ["api"]
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def predictions(client: httpx.AsyncClient) -> list[dict]:
    listed = await client.get("/v1/predictions")
    assert listed.status_code == 200, listed.text
    return listed.json()["results"]


@pytest.mark.parametrize(
    "value",
    ["99999999999999999999h", "9" * 5000, f"{int(CANCEL_AFTER_MAX.total_seconds()) + 1}",
     "1h" * 3, "²", "5 s", "-5s"],
)  # fmt: skip
async def test_a_bad_cancel_after_is_a_400_before_anything_is_stored(
    api: httpx.AsyncClient, tmp_path: Path, value: str
) -> None:
    version = await push(api, tmp_path)
    answer = await api.post(
        "/v1/predictions",
        json={"version": version, "input": {"tag": "t"}},
        headers={"Cancel-After": value.encode("utf-8")},
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Cancel-After" in answer.json()["detail"]
    assert await predictions(api) == []


async def test_a_long_cancel_after_within_the_maximum_sets_the_deadline(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    version = await push(api, tmp_path)
    answer = await api.post(
        "/v1/predictions",
        json={"version": version, "input": {"tag": "t"}},
        headers={"Cancel-After": "167h59m60s"},
    )
    assert answer.status_code == 201 and answer.json()["deadline"]


@pytest.mark.parametrize("prefer", ["wait=" + "9" * 5000, "wait=0", "wait=99999999999"])
async def test_prefer_wait_numbers_are_capped_not_errors(
    api: httpx.AsyncClient, tmp_path: Path, prefer: str
) -> None:
    """Replicate caps `wait` at 60 s (this server at `--sync-wait-max`, 0.5 s here); a number too
    long to read is above the cap too. One prediction is made, once."""
    version = await push(api, tmp_path)
    answer = await api.post(
        "/v1/predictions",
        json={"version": version, "input": {"tag": "t"}},
        headers={"Prefer": prefer},
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers["Preference-Applied"] in ("wait=0", "wait=1")
    assert len(await predictions(api)) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_instances": 10**21}, "max_instances"),
        ({"max_instances": INSTANCES_MAX + 1}, "max_instances"),
        ({"min_instances": 10**21, "max_instances": 10**21}, "min_instances"),
        ({"min_instances": -1}, "min_instances"),
    ],
)
async def test_deployment_instances_are_range_checked(
    api: httpx.AsyncClient, tmp_path: Path, changes: dict, field: str
) -> None:
    version = await push(api, tmp_path)
    base = {"name": "d", "model": "admin/slow", "version": version, "hardware": "cpu",
            "min_instances": 0, "max_instances": 1}  # fmt: skip
    created = await api.post("/v1/deployments", json={**base, **changes})
    assert created.status_code == 422, created.text
    assert [f["field"] for f in created.json()["invalid_fields"]] == [field]
    assert (await api.get("/v1/deployments")).json()["results"] == []
    assert (await api.post("/v1/deployments", json=base)).status_code == 200
    updated = await api.patch("/v1/deployments/admin/d", json=changes)
    assert updated.status_code == 422, updated.text
    after = (await api.get("/v1/deployments/admin/d")).json()["current_release"]
    assert after["number"] == 1 and after["configuration"]["max_instances"] == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/search?query=a&limit=%C2%B2", 400),  # "²" passes str.isdigit()
        ("/v1/search?query=a&limit=" + "9" * 5000, 400),
        ("/v1/search?query=" + "a" * 1001, 400),
        ("/v1/models?cursor=" + "MjAyNC0wMS0wMVQwMDowMDowMHzCsg==", 400),  # "2024-01-01T00:00:00|²"
        ("/v1/models?cursor=" + "A" * 5000, 400),
        ("/v1/files/x/download?owner=admin&expiry=%C2%B2&signature=s", 422),
        ("/v1/files/x/download?owner=admin&expiry=" + "9" * 5000 + "&signature=s", 422),
        ("/v1/predictions?model=admin/x%00", 422),
        ("/v1/models/admin/x%00", 400),
    ],
)
async def test_numbers_and_nuls_in_urls_are_4xx(
    api: httpx.AsyncClient, path: str, status: int
) -> None:
    answer = await api.get(path)
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"].startswith("application/problem+json")
