"""Cold starts: a model's boot-to-ready by hand, as a first instance, and from a warm template.

For one catalog model (default: embeddings, whose setup() imports sentence-transformers and
torch), in its Modelyard environment, each round times, side by side:

(a) by hand: a new interpreter of the model's environment imports the predictor's module, makes
    the Predictor and runs setup(); timed from the process's start to the end of setup();
(b) first instance: `LocalModel.start()` (in a sandbox where bubblewrap works, as the engine
    runs it) with no template of the version: environment check, worker, imports, setup();
(c) second instance: while (b) runs, another `LocalModel.start()` of the same version, which
    takes the warm template (runtime/templates.py) that (b) left once it was ready;
(d) after scale to zero: both stopped, a new instance from the template that is kept.

Rounds alternate (a, b, c, d, ...); each round starts with no template. Targets (issue 16):
(b) or (d) ≤ 0.5 × (a) for a new instance of a version used recently, (c) ≤ 0.2 × (b). Printed,
never enforced (exit 0).

    python -m bench.coldstart [--model embeddings] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from modelyard.runtime.local import LocalModel
from modelyard.runtime.templates import Templates

MODELS = Path(__file__).resolve().parent.parent / "models"
WARM_WAIT = 600.0  # seconds a template may take to import, at most

BY_HAND = """
import importlib.util, sys, time
sys.path.insert(0, ".")
file, _, name = sys.argv[1].partition(":")
spec = importlib.util.spec_from_file_location(file.removesuffix(".py"), file)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
predictor = getattr(module, name)()
predictor.setup()
print("READY", flush=True)
"""


def by_hand(model: LocalModel, python: Path) -> float:
    """Seconds from starting the interpreter to the end of setup()."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(model.config.environment)
    started = time.perf_counter()
    child = subprocess.Popen(
        [str(python), "-c", BY_HAND, model.ref],
        cwd=model.package_dir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == "READY":
            took = time.perf_counter() - started
            break
    else:
        raise RuntimeError(f"setup by hand failed (exit {child.wait()})")
    child.wait(timeout=60)
    return took


async def boot(package: Path, templates: Templates) -> tuple[LocalModel, float]:
    model = LocalModel(package, sandbox=None, templates=templates)
    started = time.perf_counter()
    await model.start()
    return model, time.perf_counter() - started


async def until_warm(templates: Templates) -> None:
    deadline = time.monotonic() + WARM_WAIT
    while time.monotonic() < deadline:
        if any(row.state == "warm" for row in templates.stats()):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no warm template after {WARM_WAIT:g} s")


async def one_round(package: Path) -> dict[str, Any]:
    probe = LocalModel(package)
    environment = await probe.ensure_environment()
    hand = await asyncio.to_thread(by_hand, probe, environment.python)
    templates = Templates(count=1)
    try:
        first, first_s = await boot(package, templates)
        await until_warm(templates)
        held = sum(row.memory_bytes for row in templates.stats())  # what a template keeps
        second, second_s = await boot(package, templates)
        phases = {"first": first.boot_phases, "second": second.boot_phases}
        for model in (first, second):
            await model.stop()
            await model.discard_outputs()
        await until_warm(templates)
        after, after_s = await boot(package, templates)
        assert second.runner is not None and after.runner is not None
        assert second.runner.from_template and after.runner.from_template
        await after.stop()
        await after.discard_outputs()
    finally:
        await templates.close()
    return {
        "by_hand": hand,
        "first": first_s,
        "second": second_s,
        "after_scale_to_zero": after_s,
        "phases": phases,
        "template_mib": held / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embeddings")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    package = MODELS / args.model
    if not (package / "cog.yaml").is_file():
        raise SystemExit(f"no catalog model {args.model!r} under {MODELS}")
    rounds = []
    for number in range(args.rounds):
        result = asyncio.run(one_round(package))
        rounds.append(result)
        print(
            f"round {number + 1}: by hand {result['by_hand']:.2f} s, first "
            f"{result['first']:.2f} s, second {result['second']:.2f} s, after scale to zero "
            f"{result['after_scale_to_zero']:.2f} s; the template holds "
            f"{result['template_mib']:.0f} MiB; phases {json.dumps(result['phases'])}"
        )
    med = {
        name: statistics.median(r[name] for r in rounds)
        for name in ("by_hand", "first", "second", "after_scale_to_zero")
    }
    hand, first = med["by_hand"], med["first"]
    second, after = med["second"], med["after_scale_to_zero"]
    print(f"\n{args.model}, medians of {args.rounds} rounds (seconds to ready)")
    print(f"  (a) by hand (import + setup)        {hand:7.2f}")
    print(f"  (b) first instance (cold)           {first:7.2f}   {first / hand:.2f}x (a)")
    print(f"  (c) second instance (template)      {second:7.2f}   {second / first:.2f}x (b)")
    print(f"  (d) after scale to zero (template)  {after:7.2f}   {after / hand:.2f}x (a)")
    for label, ratio, target in (
        ("a new instance of a version used recently, (d)/(a)", after / hand, 0.5),
        ("a second instance of a running model, (c)/(b)", second / first, 0.2),
    ):
        verdict = "met" if ratio <= target else "NOT met"
        print(f"  target: {label} <= {target}: {ratio:.2f} ({verdict})")
    if args.json is not None:
        args.json.write_text(json.dumps({"rounds": rounds, "medians": med}, indent=2))


if __name__ == "__main__":
    main()
