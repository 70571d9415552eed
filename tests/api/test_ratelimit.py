"""Rate limits: the bucket arithmetic, and 429 problem+json from a live server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import replicate.exceptions

from modelyard.api.ratelimit import RateLimiter
from modelyard.settings import RateLimits

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from live import EXAMPLES, LiveServer, Tls  # noqa: E402


def test_bucket_allows_a_minute_of_burst_then_refills() -> None:
    limiter = RateLimiter(RateLimits(creates_per_minute=3, other_per_minute=0))
    assert [limiter.check("a", "create", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.check("a", "create", now=0.0)
    assert wait == pytest.approx(20.0)  # one token every 60/3 seconds
    assert limiter.check("b", "create", now=0.0) == 0.0  # callers do not share buckets
    assert limiter.check("a", "create", now=20.0) == 0.0
    assert limiter.check("a", "other", now=0.0) == 0.0  # 0 means no limit


def test_live_server_answers_429_with_retry_after(tmp_path: Path) -> None:
    server = LiveServer(
        data_dir=tmp_path / "data",
        tls=Tls(tmp_path / "tls"),
        extra_args=["--creates-per-minute", "2"],
    ).start()
    try:
        version = server.push(EXAMPLES / "hello-world", "admin/hello")
        with server.http() as http:
            for _ in range(2):
                created = http.post("/v1/predictions", json={"version": version, "input": {}})
                assert created.status_code == 201
            refused = http.post("/v1/predictions", json={"version": version, "input": {}})
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["retry-after"]) >= 1
            body = refused.json()
            assert body["status"] == 429 and body["detail"].startswith("Request was throttled.")
            assert http.get("/v1/predictions").status_code == 200  # other requests still pass
        with pytest.raises(replicate.exceptions.ReplicateError) as raised:
            server.replicate().predictions.create(version=version, input={})
        assert raised.value.status == 429
        with server.http() as http:  # nothing was stored for the refused creates
            assert len(http.get("/v1/predictions").json()["results"]) == 2
    finally:
        server.stop()
