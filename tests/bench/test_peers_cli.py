"""`bench/peers.py`'s command line and table, without starting any server (the benchmark itself
is run by hand: it installs BentoML and Ray Serve and takes minutes)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from bench.peers import PEERS, parse_args, report, tree_memory_mb


def test_defaults_measure_all_four_at_8_and_64() -> None:
    args = parse_args([])
    assert args.peers == list(PEERS)
    assert args.concurrency == [8, 64]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--peers", "modelyard,torchserve"], "comma-separated list of modelyard, coglet"),
        (["--concurrency", "8,x"], "invalid"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--concurrency", "0"], "--concurrency levels must be at least 1"),
    ],
)
def test_bad_arguments_get_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def _load(median_ms: float, rps: float, errors: dict[str, int] | None = None) -> dict[str, Any]:
    errors = errors or {}
    return {
        "median_ms": median_ms,
        "p99_ms": 2 * median_ms,
        "ok": 100 - sum(errors.values()),
        "requests": 100,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "throughput_rps": rps,
        "server_cpu_ms": 1.0,
    }


def test_table_has_a_row_per_peer_and_ratios_against_modelyard() -> None:
    result = {
        "date": "2026-12-07 19:00",
        "machine": {"cpus": 2, "python": "3.11.7", "load_average": [1.0, 1.0, 1.0]},
        "settings": {"n": 100, "rounds": 2, "warmup": 0, "concurrency": [8], "requests": 100},
        "peers": ["modelyard", "coglet"],
        "idle": {
            "modelyard": {"rss_mb": 150.0, "pss_mb": 120.0, "idle_cpu_pct": 1.0},
            "coglet": {"rss_mb": 75.0, "pss_mb": 50.0, "idle_cpu_pct": 0.0},
        },
        "sequential": {
            "modelyard": [_load(2.0, 400), _load(2.0, 400)],
            "coglet": [_load(1.0, 800), _load(1.0, 800, {"409": 2})],
        },
        "concurrent": {
            "8": {
                "modelyard": [_load(20.0, 400), _load(20.0, 500)],
                "coglet": [_load(5.0, 300, {"409": 50}), _load(5.0, 300, {"409": 50})],
            }
        },
    }
    text = report(result)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # the header and one row per peer
    assert rows[1].startswith("| Modelyard")
    assert "| 2.00 |" in rows[1] and "450 (400–500)" in rows[1]
    assert "409 for 1 % at seq; 409 for 50 % at c=8" in rows[2]
    assert "- coglet: p50 2.00x, req/s at c=8 1.50x, idle RSS 2.00x" in text


def test_idle_memory_of_a_real_process_tree() -> None:
    rss, pss = tree_memory_mb(os.getpid())
    assert rss > 0
    assert 0 < pss <= rss
