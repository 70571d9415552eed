"""The starter catalog through the platform, beside a direct in-process call of the same code.

For each model under ``models/`` (its ``example/input.json`` as the input), in one run:

- direct: the model's own ``Predictor`` imported and called in a fresh interpreter of the model's
  environment, in the package folder, with cog.yaml's ``environment`` set: the cold start (import
  + ``setup()`` + the first prediction), then ``--n`` warm predictions;
- platform: ``modelyard serve`` with the catalog registered; the cold start is the first
  prediction of a fresh server (worker boot, ``setup()``, fetching the input files, storing the
  output files), then ``--n`` warm ones, each ``POST /v1/models/modelyard/{name}/predictions``
  with ``Prefer: wait`` timed at the client, inputs as the default example's file URLs.

Streaming models (``text-generation``) are also timed per token: the rate of output chunks from
the first to the last, read from the SSE stream through the platform and from the iterator in
process. Targets (issue 4): warm overhead at most 5 % (or 2 ms, whichever is larger) per
prediction, and streamed tokens per second at least 95 % of the in-process rate. The environments
must exist or are built first (not timed). Exit status 0 either way.

    python -m bench.catalog [--models ocr,embeddings] [--n 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.modelyard_serve import ModelyardServer
from modelyard.engine.examples import read_input
from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
OWNER = "modelyard"
OVERHEAD_SHARE, OVERHEAD_FLOOR_MS, STREAM_SHARE = 0.05, 2.0, 0.95

#: Run by the model environment's interpreter, in the package folder: the direct call.
DIRECT_SCRIPT = textwrap.dedent("""\
    import importlib.util, inspect, json, sys, time
    spec = json.loads(sys.argv[1])
    clock = time.perf_counter
    start = clock()
    from cog import Path
    module_file, _, class_name = spec["ref"].partition(":")
    loader = importlib.util.spec_from_file_location("predict", module_file)
    module = importlib.util.module_from_spec(loader)
    sys.modules["predict"] = module
    loader.loader.exec_module(module)
    predictor = getattr(module, class_name)()
    predictor.setup()
    inputs = dict(spec["inputs"])
    for name, is_list in spec["files"].items():
        if name in inputs:
            inputs[name] = [Path(p) for p in inputs[name]] if is_list else Path(inputs[name])

    def once():
        began = clock()
        result = predictor.predict(**inputs)
        stamps = []
        if inspect.isgenerator(result):
            for _ in result:
                stamps.append(clock())
        return clock() - began, stamps

    once()
    cold = clock() - start
    warm, rates = [], []
    for _ in range(spec["n"]):
        seconds, stamps = once()
        warm.append(seconds)
        if len(stamps) > 1:
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    json.dump({"cold": cold, "warm": warm, "rates": rates}, sys.stdout)
""")


@dataclass
class Timing:
    cold_s: float = 0.0
    warm_s: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)


@dataclass
class Row:
    model: str
    direct: Timing
    platform: Timing

    @property
    def overhead_ms(self) -> float:
        return (
            statistics.median(self.platform.warm_s) - statistics.median(self.direct.warm_s)
        ) * 1e3

    @property
    def allowed_ms(self) -> float:
        return max(OVERHEAD_FLOOR_MS, OVERHEAD_SHARE * statistics.median(self.direct.warm_s) * 1e3)


def packages(names: list[str] | None) -> list[Path]:
    found = sorted(p for p in MODELS.iterdir() if (p / "example" / "input.json").is_file())
    if names:
        unknown = set(names) - {p.name for p in found}
        if unknown:
            raise SystemExit(f"no catalog model with an example named {', '.join(sorted(unknown))}")
        found = [p for p in found if p.name in names]
    return found


def full_inputs(model: LocalModel) -> dict[str, Any]:
    """The example input with every default filled in, as Cog passes them to `predict`."""
    return model.validate(read_input(model.package_dir, model.file_fields) or {})


def bench_direct(model: LocalModel, python: Path, n: int) -> Timing:
    spec = {"ref": model.ref, "inputs": full_inputs(model), "files": model.file_fields, "n": n}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(model.config.environment)
    with tempfile.TemporaryDirectory() as scratch:  # outputs land in TMPDIR, as in the worker
        env["TMPDIR"] = scratch
        done = subprocess.run(
            [str(python), "-c", DIRECT_SCRIPT, json.dumps(spec)],
            cwd=model.package_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"direct call of {model.package_dir.name} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Timing(result["cold"], result["warm"], result["rates"])


class Platform:
    """One `modelyard serve` with the catalog registered; predictions timed at the client."""

    def __init__(self, server: ModelyardServer) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, headers=server.auth, timeout=600.0)

    def example_input(self, name: str) -> dict[str, Any]:
        """The default example's input (its files are this server's own URLs)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = self.client.get(f"/v1/models/{OWNER}/{name}")
            if response.is_success and response.json().get("default_example"):
                return response.json()["default_example"]["input"]
            time.sleep(0.2)
        raise RuntimeError(f"{OWNER}/{name} was not registered with its example")

    def predict(self, name: str, inputs: dict[str, Any]) -> float:
        """Seconds from sending the request to holding the finished prediction."""
        began = time.perf_counter()
        response = self.client.post(
            f"/v1/models/{OWNER}/{name}/predictions",
            json={"input": inputs},
            headers={"Prefer": "wait=60"},
        )
        body = response.json()
        while body.get("status") not in ("succeeded", "failed", "canceled"):
            time.sleep(0.05)  # only a cold start outlasts Prefer: wait
            body = self.client.get(f"/v1/predictions/{body['id']}").json()
        if body["status"] != "succeeded":
            raise RuntimeError(f"{name}: {body.get('status')}: {body.get('error')}")
        return time.perf_counter() - began

    def stream_rate(self, name: str, inputs: dict[str, Any]) -> float:
        """Output chunks per second over the SSE stream, from the first chunk to the last."""
        created = self.client.post(
            f"/v1/models/{OWNER}/{name}/predictions", json={"input": inputs, "stream": True}
        ).json()
        stamps = []
        with httpx.Client(timeout=600.0) as anonymous:
            stream_url = created["urls"]["stream"]
            with anonymous.stream("GET", stream_url, headers={"Accept": "text/event-stream"}) as r:
                for line in r.iter_lines():
                    if line == "event: output":
                        stamps.append(time.perf_counter())
                    elif line == "event: done":
                        break
        if len(stamps) < 2:
            raise RuntimeError(f"{name}: the stream carried {len(stamps)} output chunk(s)")
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def bench(self, name: str, n: int, streams: bool) -> Timing:
        inputs = self.example_input(name)
        timing = Timing(cold_s=self.predict(name, inputs))
        timing.warm_s = [self.predict(name, inputs) for _ in range(n)]
        if streams:
            timing.tokens_per_s = [self.stream_rate(name, inputs) for _ in range(n)]
        return timing


def streams(model: LocalModel) -> bool:
    output = model.schema["components"]["schemas"]["Output"]
    return output.get("type") == "array" and "x-cog-array-type" in output


def print_table(rows: list[Row]) -> None:
    print(f"\n{'model':<19}{'cold direct':>12}{'cold ours':>11}{'warm direct':>13}{'warm ours':>11}"
          f"{'overhead':>11}{'allowed':>9}  met")  # fmt: skip
    for row in rows:
        direct, ours = statistics.median(row.direct.warm_s), statistics.median(row.platform.warm_s)
        met = "yes" if row.overhead_ms <= row.allowed_ms else "NO"
        print(f"{row.model:<19}{row.direct.cold_s:>11.2f}s{row.platform.cold_s:>10.2f}s"
              f"{direct * 1e3:>11.1f}ms{ours * 1e3:>9.1f}ms{row.overhead_ms:>9.1f}ms"
              f"{row.allowed_ms:>7.1f}ms  {met}")  # fmt: skip
    for row in rows:
        if row.direct.tokens_per_s and row.platform.tokens_per_s:
            direct = statistics.median(row.direct.tokens_per_s)
            ours = statistics.median(row.platform.tokens_per_s)
            met = "yes" if ours >= STREAM_SHARE * direct else "NO"
            print(
                f"\n{row.model} streaming: {direct:.1f} tokens/s in process, {ours:.1f} through "
                f"the platform ({ours / direct:.1%}; target >= {STREAM_SHARE:.0%}): {met}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated names (default: every model)")
    parser.add_argument("--n", type=int, default=5, help="warm predictions per side")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    chosen = packages(args.models.split(",") if args.models else None)
    models = {p.name: LocalModel(p) for p in chosen}
    for name, model in models.items():  # not timed: the environments must exist first
        print(f"environment of {name}...", file=sys.stderr, flush=True)
        asyncio.run(model.ensure_environment())

    direct = {}
    for name, model in models.items():
        assert model.environment is not None
        print(f"direct: {name}...", file=sys.stderr, flush=True)
        direct[name] = bench_direct(model, model.environment.python, args.n)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        serve_args = ["--catalog", "--catalog-dir", str(MODELS), "--catalog-owner", OWNER,
                      "--requests-per-minute", "0", "--creates-per-minute", "0"]  # fmt: skip
        with ModelyardServer(Path(tmp) / "data", serve_args) as server:
            platform = Platform(server)
            for name, model in models.items():
                print(f"platform: {name}...", file=sys.stderr, flush=True)
                timing = platform.bench(name, args.n, streams(model))
                rows.append(Row(name, direct[name], timing))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
