"""The HTTP API's per-prediction overhead: `modelyard serve` against coglet's own server.

One no-op Cog model (``bench/models/noop``: ``predict(self, text: str = "ok") -> str``) is
served twice in the same run, on the same machine, from the same model environment:

- ours: ``modelyard serve`` over plain http (coglet has no TLS either) with one instance and no
  rate limits, the model pushed with ``modelyard push``; each request is
  ``POST /v1/predictions`` with ``Prefer: wait`` and a bearer token, so it is authenticated,
  stored in the database, queued, run and read back from the prediction's event log;
- coglet: Cog's server (coglet 0.23.1) started by :class:`bench.coglet.CogletServer`; each
  request is ``POST /predictions``, which runs the prediction and keeps nothing.

Two loads, the same client code for both servers:

- sequential: one keep-alive ``httpx.Client``, ``--n`` requests per round, ``--rounds`` rounds
  alternating ours/coglet so that drift of the machine hits both alike;
- concurrent: ``--clients`` asyncio tasks, each with its own keep-alive ``httpx.AsyncClient``,
  each sending ``--per-client`` requests back to back.

Nothing is retried. An error is any answer that is not a succeeded prediction with output
``"ok"`` (coglet answers 409 while its one slot is busy; ours queues, so it should have none).
Latency figures are over the successful requests; throughput counts successful requests per
second of wall time. Targets (from the issue): our sequential median is no worse than coglet's,
and ours has zero errors at concurrency 8. Whether they are met is printed; the exit status is 0
either way (benchmarks do not gate CI).

    python -m bench.api_overhead [--n 500] [--rounds 3] [--clients 8] [--per-client 200]
                                 [--warmup 50] [--json FILE] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.coglet import CogletServer
from bench.modelyard_serve import ModelyardServer, tree_cpu_s
from bench.runtime_overhead import percentile

NOOP = Path(__file__).resolve().parent / "models" / "noop"
MODEL = "admin/noop"
INPUT = {"text": "ok"}
#: One instance, as coglet runs one worker; no rate limits for a load test.
SERVE_ARGS = ["--max-instances", "1", "--requests-per-minute", "0", "--creates-per-minute", "0"]
#: The first prediction boots the instance (and may build the environment): be patient once.
BOOT_TIMEOUT = 600.0


@dataclass
class Target:
    """One server as the load generators see it: where to POST what, and what success is."""

    name: str
    url: str
    path: str
    body: dict[str, Any]
    ping: str  # a cheap GET, to open connections before the clock starts
    pid: int  # the server's process: its tree's CPU time is read from /proc
    headers: dict[str, str] = field(default_factory=dict)

    def ok(self, response: httpx.Response) -> bool:
        if response.status_code not in (200, 201):
            return False
        try:
            body = response.json()
        except ValueError:
            return False
        return body.get("status") == "succeeded" and body.get("output") == INPUT["text"]


@dataclass
class Load:
    """What one load against one target measured."""

    latencies_ns: list[int] = field(default_factory=list)  # successful requests only
    errors: dict[str, int] = field(default_factory=dict)  # "409" / "transport" / ... -> count
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the server's CPU time (all its processes) over the timed requests

    def record(self, target: Target, response: httpx.Response, elapsed_ns: int) -> None:
        if target.ok(response):
            self.latencies_ns.append(elapsed_ns)
        else:
            self.add_error(_error_kind(response))

    def add_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: Load) -> None:
        self.latencies_ns.extend(other.latencies_ns)
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s


def _error_kind(response: httpx.Response) -> str:
    if response.status_code in (200, 201):
        try:
            return f"status {response.json().get('status')}"
        except ValueError:
            return "not JSON"
    return str(response.status_code)


# --- the loads ------------------------------------------------------------------------------


def sequential(target: Target, n: int, warmup: int) -> Load:
    """`n` requests one after the other on one keep-alive client, after `warmup` untimed ones."""
    load = Load()
    clock = time.perf_counter_ns
    with httpx.Client(base_url=target.url, headers=target.headers, timeout=120.0) as client:
        for _ in range(warmup):
            client.post(target.path, json=target.body)
        cpu = tree_cpu_s(target.pid)
        began = clock()
        for _ in range(n):
            start = clock()
            try:
                response = client.post(target.path, json=target.body)
            except httpx.TransportError as exc:
                load.add_error(type(exc).__name__)
                continue
            load.record(target, response, clock() - start)
        load.wall_s = (clock() - began) / 1e9
        load.cpu_s = tree_cpu_s(target.pid) - cpu
    return load


async def concurrent(target: Target, clients: int, per_client: int) -> Load:
    """`clients` tasks, each with its own keep-alive client, `per_client` requests back to back."""
    load = Load()
    clock = time.perf_counter_ns

    async def one_client(client: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            start = clock()
            try:
                response = await client.post(target.path, json=target.body)
            except httpx.TransportError as exc:
                load.add_error(type(exc).__name__)
                continue
            load.record(target, response, clock() - start)

    async with contextlib.AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=120.0)
            )
            for _ in range(clients)
        ]
        # One untimed request each opens the connections before the clock starts.
        await asyncio.gather(*(c.get(target.ping) for c in pool))
        cpu = tree_cpu_s(target.pid)
        began = clock()
        await asyncio.gather(*(one_client(c) for c in pool))
        load.wall_s = (clock() - began) / 1e9
        load.cpu_s = tree_cpu_s(target.pid) - cpu
    return load


def summary(load: Load, requests: int) -> dict[str, Any]:
    ms = [s / 1e6 for s in load.latencies_ns]
    return {
        "median_ms": statistics.median(ms) if ms else float("nan"),
        "p99_ms": percentile(ms, 99) if ms else float("nan"),
        "ok": len(ms),
        "requests": requests,
        "errors": sum(load.errors.values()),
        "error_kinds": dict(load.errors),
        "throughput_rps": len(ms) / load.wall_s if load.wall_s else 0.0,
        # Per answered request, errors included: a refusal costs the server something too.
        "server_cpu_ms": 1000 * load.cpu_s / requests,
    }


# --- the run --------------------------------------------------------------------------------


def modelyard_target(server: ModelyardServer, name: str, version: str | None = None) -> Target:
    """`server` (started) with the no-op model: its create route, with `Prefer: wait`. The
    model is pushed unless its `version` is given (replicas of one database share a push)."""
    version = version or server.push(NOOP, MODEL)
    assert server.process is not None
    return Target(
        name,
        server.url,
        "/v1/predictions",
        {"version": version, "input": INPUT},
        "/v1/predictions?limit=1",
        server.process.pid,
        {**server.auth, "Prefer": "wait"},
    )


def coglet_target(coglet: CogletServer) -> Target:
    """`coglet` (started): its prediction route."""
    assert coglet.process is not None
    return Target(
        "coglet", coglet.url, "/predictions", {"input": INPUT}, "/health-check", coglet.process.pid
    )


def warm_up(target: Target, times: int = 1) -> None:
    """Predictions, untimed: the first boots Modelyard's instance (and may build the
    environment; the others' first calls are slow too)."""
    with httpx.Client(headers=target.headers, timeout=BOOT_TIMEOUT) as client:
        for _ in range(times):
            first = client.post(target.url + target.path, json=target.body)
            if not target.ok(first):
                raise RuntimeError(
                    f"{target.name}'s first prediction failed: {first.status_code} {first.text}"
                )


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="modelyard-apibench-") as tmp:
        ours_server = ModelyardServer(Path(tmp) / "data", SERVE_ARGS)
        coglet = CogletServer.for_package(NOOP)
        try:
            say("starting modelyard serve and coglet ...")
            ours_server.start()
            coglet.start()
            ours = modelyard_target(ours_server, "ours")
            theirs = coglet_target(coglet)
            say("warming up (the first prediction boots our instance) ...")
            warm_up(ours)
            result = measure(args, ours, theirs, say)
            if args.profile:
                profile(args, ours, ours_server, say)
            return result
        finally:
            ours_server.stop()
            coglet.stop()


def measure(
    args: argparse.Namespace, ours: Target, theirs: Target, say: Callable[[str], None]
) -> dict[str, Any]:
    seq = {"ours": Load(), "coglet": Load()}
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        say(f"sequential round {r + 1}/{args.rounds} ...")
        medians = {}
        for target in (ours, theirs) if r % 2 == 0 else (theirs, ours):
            load = sequential(target, args.n, args.warmup)
            seq[target.name].merge(load)
            medians[target.name] = statistics.median(load.latencies_ns) / 1e6
        rounds.append(medians)
    conc = {}
    for target in (ours, theirs):
        say(f"{args.clients} concurrent clients x {args.per_client}: {target.name} ...")
        conc[target.name] = asyncio.run(concurrent(target, args.clients, args.per_client))
    stats = {
        "sequential": {k: summary(v, args.n * args.rounds) for k, v in seq.items()},
        "concurrent": {k: summary(v, args.clients * args.per_client) for k, v in conc.items()},
    }
    seq_ratio = (
        stats["sequential"]["ours"]["median_ms"] / stats["sequential"]["coglet"]["median_ms"]
    )
    conc_ratio = (
        stats["concurrent"]["ours"]["median_ms"] / stats["concurrent"]["coglet"]["median_ms"]
    )
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "n": args.n,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "clients": args.clients,
        "per_client": args.per_client,
        "stats": stats,
        "per_round_medians_ms": rounds,
        "sequential_ratio": seq_ratio,
        "concurrent_ratio": conc_ratio,
        "targets": {
            "sequential_median_met": seq_ratio <= 1.0,
            "zero_errors_met": stats["concurrent"]["ours"]["errors"] == 0
            and stats["sequential"]["ours"]["errors"] == 0,
        },
    }


def profile(
    args: argparse.Namespace, ours: Target, server: ModelyardServer, say: Callable[[str], None]
) -> None:
    """A py-spy profile of our server under the sequential load, after the measurement
    (sampling slows the server down, so it never overlaps the timed runs)."""
    assert server.process is not None
    if shutil.which("py-spy") is None:
        say("--profile needs py-spy (pip install py-spy): skipped")
        return
    say(f"profiling our server with py-spy into {args.profile} ...")
    # The file's suffix picks the format: .svg a flame graph, .json speedscope, else collapsed
    # stacks (one line per stack, `frame;frame;... count`, for grep and sort).
    kind = {".svg": "flamegraph", ".json": "speedscope"}.get(args.profile.suffix, "raw")
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(server.process.pid), "--rate", "250",
         "--format", kind, "--output", str(args.profile), "--subprocesses"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    sequential(ours, args.n, 0)
    spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=60)
    if spy.returncode not in (0, -signal.SIGINT):
        say(f"py-spy failed: {err.decode(errors='replace').strip()}")


def report(result: dict[str, Any]) -> str:
    s = result["stats"]
    m = result["machine"]
    header = (
        f"{'method':<46} {'median ms':>10} {'p99 ms':>9} {'req/s':>8} {'errors':>13}"
        f" {'server CPU ms/req':>18}"
    )

    def row(label: str, figures: dict[str, Any]) -> str:
        errors = f"{figures['errors']}/{figures['requests']}"
        return (
            f"{label:<46} {figures['median_ms']:>10.2f} {figures['p99_ms']:>9.2f} "
            f"{figures['throughput_rps']:>8.0f} {errors:>13} {figures['server_cpu_ms']:>18.2f}"
        )

    kinds = {
        f"{load} {name}": figures["error_kinds"]
        for load, per in s.items()
        for name, figures in per.items()
        if figures["error_kinds"]
    }
    rounds = "; ".join(
        ", ".join(f"{k} {v:.2f}" for k, v in r.items()) for r in result["per_round_medians_ms"]
    )
    t = result["targets"]
    c = result["clients"]
    lines = [
        (
            f"No-op prediction over HTTP, {result['date']}; {m['cpus']} CPUs, Python "
            f"{m['python']}, load average {m['load_average'][0]:.2f}"
        ),
        "",
        header,
        row(f"ours, sequential ({result['rounds']} x {result['n']})", s["sequential"]["ours"]),
        row(f"coglet, sequential ({result['rounds']} x {result['n']})", s["sequential"]["coglet"]),
        row(f"ours, {c} concurrent ({c} x {result['per_client']})", s["concurrent"]["ours"]),
        row(f"coglet, {c} concurrent ({c} x {result['per_client']})", s["concurrent"]["coglet"]),
        "",
        f"per-round sequential medians ms: {rounds}",
        f"errors by kind: {kinds or 'none'}",
        "",
        (
            f"ours / coglet, sequential median: {result['sequential_ratio']:.2f} (target ≤ 1): "
            + ("met" if t["sequential_median_met"] else "NOT met")
        ),
        (
            f"ours / coglet, concurrent median: {result['concurrent_ratio']:.2f} (ours queues "
            f"all {c}; coglet's figure is over the requests it did not refuse)"
        ),
        "zero errors for ours: " + ("met" if t["zero_errors_met"] else "NOT met"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="sequential requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="sequential rounds, alternating")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per round")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--per-client", type=int, default=200, help="requests per client")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        help="afterwards, py-spy our server under the sequential load into this file (.svg, .json, .txt)",
    )
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(args, say)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
