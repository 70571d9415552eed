"""What the worker sandbox costs (docs/security.md): a no-op prediction's latency and a cold boot
(worker start and `setup()`, environment already built), with and without bubblewrap, on the same
package in the same run. Prints medians and the ratio sandboxed / unsandboxed.

    python bench/sandbox.py [--boots 7] [--predictions 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from modelyard.runtime import sandbox
from modelyard.runtime.local import LocalModel
from modelyard.runtime.sandbox import Limits

PACKAGE = Path(__file__).resolve().parent.parent / "tests" / "e2e" / "packages" / "noop"
LIMITS = Limits(memory=16 << 30, processes=4096, open_files=65536, scratch=16 << 30, output=4 << 30)


async def measure(sandboxed: bool, boots: int, predictions: int) -> tuple[float, float]:
    """Median seconds of a cold boot, and of one no-op prediction."""
    boot_times: list[float] = []
    latencies: list[float] = []
    for boot in range(boots):
        model = LocalModel(PACKAGE, sandbox=sandboxed, limits=LIMITS)
        await model.ensure_environment()
        began = time.perf_counter()
        result = await model.start()
        boot_times.append(time.perf_counter() - began)
        assert result.status == "succeeded", result.error
        if boot == 0:
            for _ in range(predictions):
                began = time.perf_counter()
                async for _event in model.predict({}):
                    pass
                latencies.append(time.perf_counter() - began)
        await model.stop()
    return statistics.median(boot_times), statistics.median(latencies)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boots", type=int, default=7)
    parser.add_argument("--predictions", type=int, default=300)
    args = parser.parse_args()
    reason = sandbox.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"no sandbox here: {reason}")
    await measure(False, 1, 20)  # warm the caches (environment, imports) for both
    plain = await measure(False, args.boots, args.predictions)
    boxed = await measure(True, args.boots, args.predictions)
    print(f"{'':24}{'no sandbox':>12}{'sandbox':>12}{'ratio':>8}")
    for name, a, b in (("cold boot (median)", plain[0], boxed[0]),
                       ("no-op prediction", plain[1], boxed[1])):  # fmt: skip
        print(f"{name:24}{a * 1000:>10.2f}ms{b * 1000:>10.2f}ms{b / a:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
