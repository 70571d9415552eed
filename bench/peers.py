"""Modelyard beside its peers, serving the same no-op model, in one run: the issue 16 table.

Four servers of the no-op model (``predict(text="ok") -> text``), each served as its users serve
it, all on this machine over loopback HTTP, all up for the whole run:

- Modelyard: ``modelyard serve`` (one instance, no rate limits), ``POST /v1/predictions`` with
  ``Prefer: wait`` and a token; every prediction is stored before the answer;
- coglet 0.23.1 (``bench/coglet.py``): ``POST /predictions``; keeps nothing;
- BentoML 1.4.40: ``bentoml serve`` of a one-worker service, ``POST /predict``; keeps nothing;
- Ray Serve 2.60.0: one replica on a Ray of its own, ``POST /``; keeps nothing.

BentoML and Ray Serve come from throwaway environments (``bench/peers_envs.py``), made on the
first run under ``$MODELYARD_HOME/bench-envs``. The loads and the success check are
``bench/api_overhead.py``'s: sequential requests on one keep-alive client, and ``c`` clients
each with its own keep-alive client sending back to back; nothing is retried; an error is any
answer that is not the prediction's ``ok``. Rounds alternate the order of the servers so that
drift of the machine hits all alike. Idle RSS is the sum over each server's process tree
(workers, Ray's node processes), read from ``/proc`` after the warm-up, with the proportional
(PSS) sum and the tree's CPU use while idle beside it.

Printed: a table of medians over the rounds (the range where rounds differ), then each peer's
figures as ratios against Modelyard's. The exit status is 0 whatever the figures: benchmarks
never gate CI.

    python -m bench.peers [--peers modelyard,coglet,bentoml,rayserve] [--n 300] [--rounds 3]
                          [--concurrency 8,64] [--requests 640] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.api_overhead import (
    INPUT,
    NOOP,
    SERVE_ARGS,
    Target,
    coglet_target,
    concurrent,
    modelyard_target,
    sequential,
    summary,
    warm_up,
)
from bench.coglet import CogletServer
from bench.modelyard_serve import ModelyardServer, descendants, tree_cpu_s
from bench.peers_envs import ensure_env
from bench.peers_servers import BentoMLServer, PeerProcess, RayServeServer

PEERS = ("modelyard", "coglet", "bentoml", "rayserve")
LABELS = {
    "modelyard": "Modelyard (`POST /v1/predictions`, `Prefer: wait`, persisted)",
    "coglet": "coglet 0.23.1 (Rust, keeps nothing)",
    "bentoml": "BentoML 1.4.40 (in-process, keeps nothing)",
    "rayserve": "Ray Serve 2.60.0 (in-process, keeps nothing)",
}


@dataclass
class TextTarget(Target):
    """A peer that answers the prediction's output as plain text (BentoML, Ray Serve)."""

    def ok(self, response: httpx.Response) -> bool:
        return response.status_code == 200 and response.text == INPUT["text"]


# --- starting the four ----------------------------------------------------------------------


def start_peer(
    name: str, stack: ExitStack, tmp: Path, args: argparse.Namespace, say: Callable[[str], None]
) -> Target:
    """Start `name`, registered on `stack` to be stopped; its target, warmed by one prediction."""
    say(f"starting {name} ...")
    if name == "modelyard":
        server = ModelyardServer(tmp / "data", SERVE_ARGS)
        stack.callback(server.stop)
        server.start()
        target = modelyard_target(server, name)
    elif name == "coglet":
        coglet = CogletServer.for_package(NOOP)
        stack.callback(coglet.stop)
        coglet.start()
        target = coglet_target(coglet)
    else:
        kind: type[PeerProcess] = BentoMLServer if name == "bentoml" else RayServeServer
        peer = kind(ensure_env(name, rebuild=args.rebuild_envs, say=say))
        stack.callback(peer.stop)
        peer.start()
        assert peer.process is not None
        target = TextTarget(name, peer.url, peer.path, INPUT, peer.ping, peer.process.pid)
    warm_up(target)
    return target


# --- idle footprint -------------------------------------------------------------------------


def tree_memory_mb(root: int) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over `root` and its live descendants. RSS counts shared pages
    once per process (Ray's many processes share libraries); PSS splits them."""
    rss = pss = 0
    for pid in [root, *descendants(root)]:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return rss / 1024, pss / 1024


def idle_footprint(targets: list[Target], seconds: float) -> dict[str, dict[str, float]]:
    """Memory of each server at rest, and the CPU share its tree uses doing nothing."""
    before = {t.name: tree_cpu_s(t.pid) for t in targets}
    time.sleep(seconds)
    result = {}
    for t in targets:
        rss, pss = tree_memory_mb(t.pid)
        cpu = (tree_cpu_s(t.pid) - before[t.name]) / seconds
        result[t.name] = {"rss_mb": rss, "pss_mb": pss, "idle_cpu_pct": 100 * cpu}
    return result


# --- the run --------------------------------------------------------------------------------


def rotated(targets: list[Target], r: int) -> list[Target]:
    """Round `r`'s order: each server goes first in turn."""
    k = r % len(targets)
    return targets[k:] + targets[:k]


def measure(
    args: argparse.Namespace, targets: list[Target], say: Callable[[str], None]
) -> dict[str, Any]:
    names = [t.name for t in targets]
    idle = idle_footprint(targets, args.idle)
    seq_rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.rounds):
        say(f"sequential round {r + 1}/{args.rounds} ...")
        for t in rotated(targets, r):
            seq_rounds[t.name].append(summary(sequential(t, args.n, args.warmup), args.n))
    conc_rounds: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for c in args.concurrency:
        per_client = max(1, args.requests // c)
        conc_rounds[c] = {n: [] for n in names}
        for r in range(args.rounds):
            say(f"{c} concurrent clients x {per_client}, round {r + 1}/{args.rounds} ...")
            for t in rotated(targets, r):
                load = asyncio.run(concurrent(t, c, per_client))
                conc_rounds[c][t.name].append(summary(load, c * per_client))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "settings": {
            "n": args.n,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "requests": args.requests,
        },
        "peers": names,
        "idle": idle,
        "sequential": seq_rounds,
        "concurrent": {str(c): v for c, v in conc_rounds.items()},
    }


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="modelyard-peers-") as tmp, ExitStack() as stack:
        targets = [start_peer(name, stack, Path(tmp), args, say) for name in args.peers]
        return measure(args, targets, say)


# --- the report -----------------------------------------------------------------------------


def _med(rounds: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rounds if r[key] == r[key]]  # NaN: no successful request
    return statistics.median(values) if values else float("nan")


def _spread(rounds: list[dict[str, Any]], key: str, fmt: str) -> str:
    values = sorted(r[key] for r in rounds if r[key] == r[key])
    if not values:
        return "–"
    low, high = format(values[0], fmt), format(values[-1], fmt)
    median = format(statistics.median(values), fmt)
    return median if low == high else f"{median} ({low}–{high})"


def _errors(result: dict[str, Any], name: str) -> str:
    parts = []
    loads = [("seq", result["sequential"][name])]
    loads += [(f"c={c}", per[name]) for c, per in result["concurrent"].items()]
    for label, rounds in loads:
        errors = sum(r["errors"] for r in rounds)
        if errors:
            sent = sum(r["requests"] for r in rounds)
            kinds: dict[str, int] = {}
            for r in rounds:
                for kind, count in r["error_kinds"].items():
                    kinds[kind] = kinds.get(kind, 0) + count
            what = ", ".join(sorted(kinds))
            parts.append(f"{what} for {100 * errors / sent:.0f} % at {label}")
    return "; ".join(parts) or "0"


def figures(result: dict[str, Any], name: str) -> dict[str, float]:
    """The medians over the rounds that the ratios compare."""
    out = {"p50_ms": _med(result["sequential"][name], "median_ms")}
    for c, per in result["concurrent"].items():
        out[f"rps_c{c}"] = _med(per[name], "throughput_rps")
    out["rss_mb"] = result["idle"][name]["rss_mb"]
    return out


def report(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    levels = list(result["concurrent"])
    head = ["", "sequential p50 ms"] + [f"{c} concurrent, ok req/s" for c in levels]
    head += ["errors", "idle RSS MB (PSS)", "idle CPU %"]
    lines = [
        (
            f"No-op model over loopback HTTP, {result['date']}; {m['cpus']} CPUs, Python "
            f"{m['python']}, load average {m['load_average'][0]:.2f} at the end; "
            f"{s['rounds']} rounds of {s['n']} sequential, {s['requests']} per concurrency level"
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name in result["peers"]:
        idle = result["idle"][name]
        cells = [
            LABELS.get(name, name),
            _spread(result["sequential"][name], "median_ms", ".2f"),
            *(_spread(result["concurrent"][c][name], "throughput_rps", ".0f") for c in levels),
            _errors(result, name),
            f"{idle['rss_mb']:.0f} ({idle['pss_mb']:.0f})",
            f"{idle['idle_cpu_pct']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if "modelyard" in result["peers"]:
        ours = figures(result, "modelyard")
        lines += ["", "Modelyard / peer (latency below 1 and throughput above 1: Modelyard ahead):"]
        for name in result["peers"]:
            if name == "modelyard":
                continue
            theirs = figures(result, name)
            parts = [f"p50 {ours['p50_ms'] / theirs['p50_ms']:.2f}x"]
            parts += [
                f"req/s at c={c} {ours[f'rps_c{c}'] / theirs[f'rps_c{c}']:.2f}x"
                if theirs[f"rps_c{c}"]
                else f"req/s at c={c} –"
                for c in levels
            ]
            if theirs["rss_mb"]:  # 0: its /proc could not be read
                parts.append(f"idle RSS {ours['rss_mb'] / theirs['rss_mb']:.2f}x")
            lines.append(f"- {name}: " + ", ".join(parts))
    return "\n".join(lines)


def _list(kind: Callable[[str], Any], allowed: tuple[str, ...] = ()) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [kind(part.strip()) for part in text.split(",") if part.strip()]
        bad = [i for i in items if allowed and i not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(allowed) or 'numbers'}"
            )
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--peers", type=_list(str, PEERS), default=list(PEERS), help="which servers, in order"
    )
    parser.add_argument("--n", type=int, default=300, help="sequential requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each load")
    parser.add_argument("--warmup", type=int, default=30, help="untimed requests per round")
    parser.add_argument(
        "--concurrency", type=_list(int), default=[8, 64], help="concurrent clients, per level"
    )
    parser.add_argument(
        "--requests", type=int, default=640, help="requests per concurrency level and round"
    )
    parser.add_argument("--idle", type=float, default=3.0, help="seconds at rest, for idle figures")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--rebuild-envs", action="store_true", help="make BentoML's and Ray's environments anew"
    )
    args = parser.parse_args(argv)
    for option in ("n", "rounds", "requests"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency levels must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(args, say)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
