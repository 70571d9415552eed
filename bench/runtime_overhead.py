"""Per-prediction overhead of Modelyard's Runner, against a direct call and against coglet.

A no-op Cog model (``predict(self, n: int = 0) -> str: return "ok"``), in its Modelyard
environment, is called sequentially ``--n`` times (after ``--warmup`` calls) in three ways:

(a) direct: the predictor class imported and called in-process, in the model environment's own
    interpreter (the same Python the worker runs);
(b) runner: Modelyard's ``Runner``, one event stream per prediction, read to ``Done``;
(c) coglet: Cog's server (coglet 0.23.1) over HTTP, one keep-alive httpx client, sequential,
    retrying at once on a spurious 409 (counted).

Rounds alternate (a, b, c, a, b, c, ...) so that drift of the machine hits each alike; the
figures pool all rounds. Targets (from the issue): the Runner's overhead over (a) is at most
150 µs at the median, and (b) is at most a quarter of (c). Whether they are met is printed; the
exit status is 0 either way (benchmarks do not gate CI).

    python -m bench.runtime_overhead [--n 2000] [--warmup 100] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.coglet import CogletServer
from modelyard.cogspec.config import load_config
from modelyard.cogspec.schema import predictor_schema
from modelyard.runtime.environment import EnvironmentBuilder, spec_from_config
from modelyard.runtime.events import Done
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import Runner, RunnerSpec

RUNNER_OVERHEAD_TARGET_US = 150.0
RUNNER_TO_COGLET_TARGET = 0.25

COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
PREDICT_PY = """\
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, n: int = 0) -> str:
        return "ok"
"""

#: Run by the model environment's interpreter: (a), the direct in-process call.
DIRECT_SCRIPT = textwrap.dedent("""\
    import importlib.util, json, sys, time
    warmup, n = int(sys.argv[1]), int(sys.argv[2])
    spec = importlib.util.spec_from_file_location("predict", "predict.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["predict"] = module
    spec.loader.exec_module(module)
    predictor = module.Predictor()
    predictor.setup()
    clock = time.perf_counter_ns
    for _ in range(warmup):
        predictor.predict(n=0)
    samples = []
    for _ in range(n):
        start = clock()
        predictor.predict(n=0)
        samples.append(clock() - start)
    json.dump(samples, sys.stdout)
""")


def write_model(folder: Path) -> Path:
    (folder / "cog.yaml").write_text(COG_YAML)
    (folder / "predict.py").write_text(PREDICT_PY)
    return folder


def bench_direct(package: Path, python: Path, warmup: int, n: int) -> list[int]:
    """(a): latencies in ns of the bare method call, in the model's interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run(
        [str(python), "-c", DIRECT_SCRIPT, str(warmup), str(n)],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


async def time_calls(once: Callable[[], Awaitable[None]], warmup: int, n: int) -> list[int]:
    """Nanoseconds of each of `n` sequential calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        await once()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await once()
        samples.append(time.perf_counter_ns() - start)
    return samples


async def bench_runner(runner: Runner, warmup: int, n: int, inputs: dict[str, Any]) -> list[int]:
    """(b): one event stream per prediction, read to Done."""

    async def once() -> None:
        done = None
        async for event in runner.predict(inputs):
            if isinstance(event, Done):
                done = event
        if done is None or done.status != "succeeded" or done.output != "ok":
            raise RuntimeError(f"runner prediction went wrong: {done}")

    return await time_calls(once, warmup, n)


async def bench_local_model(
    model: LocalModel, warmup: int, n: int, payload: dict[str, Any]
) -> list[int]:
    """(b'), for reference: LocalModel.validate() + predict(), what the engine calls."""

    async def once() -> None:
        inputs = model.validate(payload)
        async for event in model.predict(inputs):
            if isinstance(event, Done) and event.status != "succeeded":
                raise RuntimeError(f"prediction went wrong: {event}")

    return await time_calls(once, warmup, n)


def bench_coglet(
    server: CogletServer, warmup: int, n: int, payload: dict[str, Any]
) -> tuple[list[int], int]:
    """(c): sequential POST /predictions on one keep-alive client; immediate retry on 409."""
    clock = time.perf_counter_ns
    conflicts = 0
    body = {"input": payload}
    with httpx.Client(base_url=server.url, timeout=60.0) as client:

        def once() -> None:
            nonlocal conflicts
            while True:
                response = client.post("/predictions", json=body)
                if response.status_code != 409:
                    break
                conflicts += 1
            if response.status_code != 200 or response.json().get("output") != "ok":
                raise RuntimeError(f"coglet answered {response.status_code}: {response.text}")

        for _ in range(warmup):
            once()
        conflicts = 0
        samples = []
        for _ in range(n):
            start = clock()
            once()
            samples.append(clock() - start)
    return samples, conflicts


#: (floor) A child that answers each frame at once: what a process round trip costs here.
FLOOR_CHILD = textwrap.dedent("""\
    import json, socket, struct, sys
    header = struct.Struct(">I")
    sock = socket.socket(fileno=int(sys.argv[1]))
    def recv(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise SystemExit
            data += chunk
        return data
    while True:
        (size,) = header.unpack(recv(4))
        message = json.loads(recv(size))
        body = json.dumps({"t": "done", "id": message["id"], "output": "ok"}).encode()
        sock.sendall(header.pack(len(body)) + body)
""")


async def bench_floor(python: Path, warmup: int, n: int) -> list[int]:
    """(floor): a bare asyncio parent and a bare child, the Runner's framing and JSON, no more."""
    parent, child = socket.socketpair()
    process = await asyncio.create_subprocess_exec(
        str(python), "-c", FLOOR_CHILD, str(child.fileno()), pass_fds=(child.fileno(),)
    )
    child.close()
    clock = time.perf_counter_ns
    header = struct.Struct(">I")
    try:
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        samples = []
        for i in range(warmup + n):
            start = clock()
            body = json.dumps({"t": "predict", "id": str(i), "input": {"n": 0}}).encode()
            writer.write(header.pack(len(body)) + body)
            (size,) = header.unpack(await reader.readexactly(4))
            json.loads(await reader.readexactly(size))
            if i >= warmup:
                samples.append(clock() - start)
        writer.close()
        return samples
    finally:
        process.kill()
        await process.wait()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_ns: list[int]) -> dict[str, float]:
    us = [s / 1000 for s in samples_ns]
    return {
        "median_us": statistics.median(us),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.fmean(us),
        "n": len(us),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    progress = (lambda line: print(f"  {line}", file=sys.stderr)) if args.verbose else None
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        package = write_model(Path(tmp))
        config = load_config(package)
        schema = predictor_schema(package, config)
        print("building/finding the model environment ...", file=sys.stderr)
        env = EnvironmentBuilder().ensure(spec_from_config(config), package, progress)
        payload = {"n": 0}
        runner = Runner(
            RunnerSpec(package_dir=package, python=env.python, ref="predict.py:Predictor")
        )
        model = LocalModel(package)
        model.environment = env
        server = CogletServer(package, schema, env.python)
        samples: dict[str, list[int]] = {
            "direct": [],
            "runner": [],
            "local_model": [],
            "coglet": [],
            "floor": [],
        }
        rounds: list[dict[str, float]] = []
        conflicts = 0
        try:
            await runner.start()
            await model.start()
            server.start()
            per_round = max(1, args.n // args.rounds)
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds} ...", file=sys.stderr)
                direct = bench_direct(package, env.python, args.warmup, per_round)
                runner_s = await bench_runner(runner, args.warmup, per_round, payload)
                local_s = await bench_local_model(model, args.warmup, per_round, payload)
                coglet_s, c = bench_coglet(server, args.warmup, per_round, payload)
                floor_s = await bench_floor(env.python, args.warmup, per_round)
                conflicts += c
                measured = {
                    "direct": direct,
                    "runner": runner_s,
                    "local_model": local_s,
                    "coglet": coglet_s,
                    "floor": floor_s,
                }
                for name, values in measured.items():
                    samples[name].extend(values)
                rounds.append({k: statistics.median(v) / 1000 for k, v in measured.items()})
        finally:
            await runner.stop()
            await model.stop()
            server.stop()
    stats = {name: summary(s) for name, s in samples.items()}
    overhead = stats["runner"]["median_us"] - stats["direct"]["median_us"]
    ratio = stats["runner"]["median_us"] / stats["coglet"]["median_us"]
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "n": args.n,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "stats": stats,
        "per_round_medians_us": rounds,
        "coglet_409s": conflicts,
        "runner_overhead_us": overhead,
        "runner_to_coglet": ratio,
        "targets": {
            "runner_overhead_us": RUNNER_OVERHEAD_TARGET_US,
            "runner_overhead_met": overhead <= RUNNER_OVERHEAD_TARGET_US,
            "runner_to_coglet": RUNNER_TO_COGLET_TARGET,
            "runner_to_coglet_met": ratio <= RUNNER_TO_COGLET_TARGET,
        },
    }


def report(result: dict[str, Any]) -> str:
    s = result["stats"]
    m = result["machine"]

    def row(label: str, name: str) -> str:
        return f"{label:<50} {s[name]['median_us']:>10.1f} {s[name]['p99_us']:>10.1f}"

    t = result["targets"]
    rounds = "; ".join(
        ", ".join(f"{k} {v:.0f}" for k, v in r.items()) for r in result["per_round_medians_us"]
    )
    overhead_verdict = "met" if t["runner_overhead_met"] else "NOT met"
    ratio_verdict = "met" if t["runner_to_coglet_met"] else "NOT met"
    conflicts = result["coglet_409s"]
    lines = [
        (
            f"No-op prediction, sequential, {result['n']} per method after {result['warmup']} "
            f"warm-up ({result['rounds']} alternating rounds); {m['cpus']} CPUs, Python "
            f"{m['python']}, load average {m['load_average'][0]:.2f}"
        ),
        "",
        f"{'method':<50} {'median µs':>10} {'p99 µs':>10}",
        row("(a) direct call (same Python, in-process)", "direct"),
        row("(b) Modelyard Runner (events to Done)", "runner"),
        row("    LocalModel.validate + predict (reference)", "local_model"),
        row("(c) coglet 0.23.1 HTTP (keep-alive httpx)", "coglet"),
        row("floor: bare asyncio <-> bare child, same framing", "floor"),
        "",
        (
            f"coglet spurious 409s (retried at once): {conflicts} "
            f"({100 * conflicts / max(1, s['coglet']['n']):.1f} % of predictions)"
        ),
        f"per-round medians µs: {rounds}",
        "",
        (
            f"Runner overhead over direct call (median): {result['runner_overhead_us']:.1f} µs "
            f"(target ≤ {t['runner_overhead_us']:.0f} µs): {overhead_verdict}"
        ),
        (
            f"Runner / coglet (median): {result['runner_to_coglet']:.3f} (coglet is "
            f"{1 / result['runner_to_coglet']:.1f}x the Runner; target ≤ "
            f"{t['runner_to_coglet']:.2f}): {ratio_verdict}"
        ),
        (
            f"The floor (one process round trip with the Runner's framing, nothing else) is "
            f"{s['floor']['median_us']:.0f} µs here; the Runner adds "
            f"{s['runner']['median_us'] - s['floor']['median_us']:.0f} µs to it."
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="timed predictions per method")
    parser.add_argument(
        "--warmup", type=int, default=100, help="untimed predictions first, per round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds sharing --n")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show environment build output"
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="asyncio",
        help="the parent's event loop (uvloop is what `modelyard serve` runs under uvicorn)",
    )
    args = parser.parse_args(argv)
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    print(f"event loop: {args.loop}")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(args))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
