"""The cluster's costs, side by side in one run: the Ray backend against the local one, and one
API replica with one Ray node against two of each.

1. Added latency per prediction. One no-op model (``bench/models/noop``) on two ``modelyard
   serve`` processes that differ only in ``--backend``: ``local`` (a worker process of the
   server) and ``ray`` (the same worker inside a Ray actor on the cluster's head node). Both use
   SQLite and a blob folder, so the backend is the only difference. Sequential ``POST
   /v1/predictions`` with ``Prefer: wait``, ``--rounds`` rounds alternating the two; the
   difference of the medians is the Ray backend's cost. Target: at most 2 ms.
2. Throughput. The whole cluster setup, PostgreSQL and S3 (a local moto server) included: one
   replica with ``--max-instances 1`` on a Ray cluster of one node, against two replicas with
   ``--max-instances 2`` on a cluster of two nodes, each loaded by ``--clients`` concurrent
   clients (split evenly over the replicas), ``--per-client`` requests each. Printed: requests
   per second of each and their ratio. On a machine with few cores both setups share the same
   cores, so the ratio says what the coordination costs more than what a second machine adds.

Needs what the cluster tests need (``pip install -e '.[test]'``; PostgreSQL on 127.0.0.1:5432).
The exit status is 0 whatever the figures (benchmarks do not gate CI).

    python -m bench.cluster [--n 200] [--rounds 3] [--warmup 20] [--clients 8]
                            [--per-client 50] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support.postgres import fresh_database
from tests.support.raycluster import RayCluster, ray_cluster
from tests.support.s3 import moto_server

from bench.api_overhead import (
    MODEL,
    NOOP,
    Load,
    Target,
    concurrent,
    modelyard_target,
    sequential,
    summary,
    warm_up,
)
from bench.modelyard_serve import ModelyardServer

NO_LIMITS = ["--requests-per-minute", "0", "--creates-per-minute", "0", "--no-catalog"]
LATENCY_TARGET_MS = 2.0


def _ray_env(cluster: RayCluster) -> dict[str, str]:
    return {k: v for k, v in cluster.env.items() if k.startswith("RAY_")}


@contextlib.contextmanager
def _servers(*servers: ModelyardServer) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


# -- 1. latency --------------------------------------------------------------------------------


def latency(args: argparse.Namespace, tmp: Path, say: Callable[[str], None]) -> dict[str, Any]:
    with ray_cluster(worker=False) as cluster:
        local = ModelyardServer(tmp / "local", ["--max-instances", "1", *NO_LIMITS])
        ray = ModelyardServer(
            tmp / "ray",
            ["--max-instances", "1", *NO_LIMITS, "--backend", "ray",
             "--ray-address", cluster.address],
            env=_ray_env(cluster),
        )  # fmt: skip
        with _servers(local, ray):
            targets = [
                modelyard_target(local, "local"),
                modelyard_target(ray, "ray"),
            ]
            say("warming up (first predictions boot the instances) ...")
            for target in targets:
                warm_up(target)
            loads = {t.name: Load() for t in targets}
            rounds = []
            for r in range(args.rounds):
                say(f"sequential round {r + 1}/{args.rounds} ...")
                medians = {}
                for target in targets if r % 2 == 0 else targets[::-1]:
                    load = sequential(target, args.n, args.warmup)
                    loads[target.name].merge(load)
                    medians[target.name] = statistics.median(load.latencies_ns) / 1e6
                rounds.append(medians)
    stats = {name: summary(load, args.n * args.rounds) for name, load in loads.items()}
    added = stats["ray"]["median_ms"] - stats["local"]["median_ms"]
    return {
        "stats": stats,
        "per_round_medians_ms": rounds,
        "added_ms": added,
        "target_met": added <= LATENCY_TARGET_MS,
    }


# -- 2. throughput -------------------------------------------------------------------------------


async def _spread(targets: list[Target], clients: int, per_client: int) -> Load:
    """`clients` clients split evenly over the replicas, all at once."""
    shares = [clients // len(targets) + (i < clients % len(targets)) for i in range(len(targets))]
    began = time.perf_counter()
    loads = await asyncio.gather(
        *(concurrent(t, n, per_client) for t, n in zip(targets, shares, strict=True) if n)
    )
    total = Load()
    for load in loads:
        total.merge(load)
    total.wall_s = time.perf_counter() - began  # the loads overlap: wall time once
    return total


def throughput(
    args: argparse.Namespace, tmp: Path, replicas: int, say: Callable[[str], None]
) -> dict[str, Any]:
    label = f"{replicas} replica(s), {replicas} node(s)"
    with (
        fresh_database("bench") as database_url,
        moto_server() as s3,
        ray_cluster(worker=replicas > 1, env=s3.environ({})) as cluster,
    ):
        bucket = s3.create_bucket(prefix="bench")
        serve_args = ["--max-instances", str(replicas), *NO_LIMITS, "--backend", "ray",
                      "--ray-address", cluster.address, "--storage-url", bucket]  # fmt: skip
        servers = [
            ModelyardServer(
                tmp / f"{label[:1]}-replica-{i}",
                serve_args,
                database_url=database_url,
                env={**_ray_env(cluster), **s3.environ({})},
            )
            for i in range(replicas)
        ]
        with _servers(*servers):
            version = servers[0].push(NOOP, MODEL)
            targets = [modelyard_target(s, f"replica {i}", version) for i, s in enumerate(servers)]
            say(f"{label}: warming up ...")
            for target in targets:
                warm_up(target, times=replicas)
            say(f"{label}: {args.clients} clients x {args.per_client} ...")
            load = asyncio.run(_spread(targets, args.clients, args.per_client))
    return summary(load, args.clients * args.per_client)


# -- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="modelyard-clusterbench-") as folder:
        tmp = Path(folder)
        result: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "n": args.n,
            "rounds": args.rounds,
            "clients": args.clients,
            "per_client": args.per_client,
        }
        result["latency"] = latency(args, tmp, say)
        one = throughput(args, tmp, 1, say)
        two = throughput(args, tmp, 2, say)
        result["throughput"] = {
            "one": one,
            "two": two,
            "ratio": two["throughput_rps"] / one["throughput_rps"] if one["throughput_rps"] else 0,
        }
        return result


def report(result: dict[str, Any]) -> str:
    lat = result["latency"]
    lines = [
        f"bench.cluster, {result['date']}, {result['cpus']} CPUs",
        "",
        (
            f"1. per prediction, sequential, {result['n']} x {result['rounds']} rounds "
            "(Prefer: wait, one instance)"
        ),
        f"   {'backend':<10} {'median ms':>10} {'p99 ms':>9} {'errors':>8}",
    ]
    for name in ("local", "ray"):
        s = lat["stats"][name]
        lines.append(
            f"   {name:<10} {s['median_ms']:>10.2f} {s['p99_ms']:>9.2f} "
            f"{s['errors']:>4}/{s['requests']}"
        )
    verdict = "met" if lat["target_met"] else "NOT met"
    lines += [
        (
            f"   Ray adds {lat['added_ms']:.2f} ms per prediction "
            f"(target <= {LATENCY_TARGET_MS:g} ms: {verdict})"
        ),
        "",
        (
            f"2. throughput, PostgreSQL + S3 + Ray, {result['clients']} clients x "
            f"{result['per_client']}"
        ),
        f"   {'setup':<26} {'req/s':>8} {'median ms':>10} {'errors':>8}",
    ]
    for key, label in (("one", "1 replica, 1 node"), ("two", "2 replicas, 2 nodes")):
        s = result["throughput"][key]
        lines.append(
            f"   {label:<26} {s['throughput_rps']:>8.1f} {s['median_ms']:>10.2f} "
            f"{s['errors']:>4}/{s['requests']}"
        )
    lines.append(f"   two / one: {result['throughput']['ratio']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="sequential requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args, lambda text: print(text, file=sys.stderr, flush=True))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
