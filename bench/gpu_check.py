"""GPUs on one machine, checked on a machine with NVIDIA GPUs (run by bench/gpu_check.sh).

    python -m bench.gpu_check                      # the GPUs nvidia-smi reports
    python -m bench.gpu_check --gpus 0:t4,1:t4     # declared GPUs: a dry run on any machine

It serves `modelyard serve --gpus <ids from nvidia-smi>` with a hardware file adding the SKU
`gpu-check` (one GPU of the model this machine has most of) and `--max-instances K+1`, where K
is 2, or 1 on a one-GPU machine. It pushes bench/models/gpu_check (it reports, through the CUDA
driver, the devices its worker sees) as a model on `gpu-check` and as one on `cpu`, then:

1. starts K predictions held on a gate file: each boots an instance of its own; each must see
   exactly one GPU, a different one, the one nvidia-smi lists with that index (same UUID);
2. starts one more: its instance must wait for a GPU (its logs say so) while the K hold;
3. runs the model on `cpu`: its worker must see no GPU at all;
4. opens the gate: the K finish, an idle instance scales down (`--idle-timeout 2`), and the
   waiting one must then run on a GPU the others had.

It prints each check and a one-line verdict; exit status 0 when all passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.modelyard_serve import ModelyardServer
from modelyard.engine.gpus import Gpu, parse_gpus_setting, query_machine

PACKAGE = Path(__file__).parent / "models" / "gpu_check"
SKU = "gpu-check"
BOOT_LIMIT = 900.0  # seconds: the first boot builds the model's environment
STEP_LIMIT = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", help="declared GPUs (ID:MODEL,...) instead of nvidia-smi's")
    parser.add_argument("--workdir", type=Path, help="where the data folder goes (default: tmp)")
    args = parser.parse_args()

    machine = parse_gpus_setting(args.gpus) if args.gpus else query_machine()
    if not machine:
        print("verdict: SKIPPED: nvidia-smi reports no usable GPU on this machine")
        return 2
    model, ids = _most_common_model(machine)
    k = min(2, len(ids))
    print(f"GPUs: {', '.join(g.label for g in machine)}")
    print(f"using {len(ids)} {model} GPU(s) ({', '.join(ids)}): {k} at once, then one waiting")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    hardware_file = workdir / "hardware.yaml"
    hardware_file.write_text(
        "hardware:\n"
        f"  {SKU}:\n"
        f"    name: GPU check (1x {model})\n"
        "    price_per_second: 0\n"
        "    gpus: 1\n"
        f"    gpu_model: {model}\n"
    )
    gpus = args.gpus or ",".join(ids)  # bare ids: serve asks nvidia-smi for their models
    serve_args = [
        "--no-catalog", "--gpus", gpus, "--hardware-file", str(hardware_file),
        "--max-instances", str(k + 1), "--idle-timeout", "2", "--placement-timeout", "600",
        "--requests-per-minute", "0", "--creates-per-minute", "0",
    ]  # fmt: skip
    server = ModelyardServer(workdir / "data", serve_args)
    print(f"modelyard serve {' '.join(serve_args)}  (log: {server.log_path})")
    try:
        server.start()
        return Check(server, machine, workdir, k, declared=bool(args.gpus)).run()
    finally:
        server.stop()


def _most_common_model(gpus: list[Gpu]) -> tuple[str, list[str]]:
    counts = collections.Counter(g.model for g in gpus)
    model = counts.most_common(1)[0][0]
    return model, [g.id for g in gpus if g.model == model]


class Check:
    """The steps of the module docstring, against one started server."""

    def __init__(
        self, server: ModelyardServer, machine: list[Gpu], workdir: Path, k: int, declared: bool
    ) -> None:
        self.server = server
        self.by_id = {g.id: g for g in machine}
        self.workdir = workdir
        self.k = k
        self.declared = declared  # declared GPUs: no CUDA device to compare with
        self.failures: list[str] = []
        self.client = httpx.Client(base_url=server.url, headers=server.auth, timeout=60)

    def expect(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)

    def run(self) -> int:
        with self.client:
            gpu_version = self.push("gpu-check", SKU)
            cpu_version = self.push("gpu-check-cpu", "cpu")
            gate = self.workdir / "gate"
            gate.unlink(missing_ok=True)

            print(f"1. {self.k} predictions at once, each on an instance of its own")
            held = [self.start(gpu_version, gate=str(gate)) for _ in range(self.k)]
            running = [self.wait(p, {"processing"}, BOOT_LIMIT) for p in held]
            if any(p["status"] != "processing" for p in running):
                return self.give_up(running)

            print("2. one more: its instance waits for a GPU")
            queued = self.start(gpu_version, seconds=0)
            waiting = self.wait_for_log(queued, "waiting for ")
            line = next((x for x in (waiting["logs"] or "").splitlines() if "waiting for" in x), "")
            self.expect(bool(line), f"its logs say what it waits for: {line!r}")
            self.expect(waiting["status"] == "starting", f"it is {waiting['status']} meanwhile")

            print("3. the model on cpu")
            cpu = self.wait(self.start(cpu_version, seconds=0), {"succeeded", "failed"}, BOOT_LIMIT)
            self.check_cpu(cpu)

            print("4. the gate opens: the held ones finish, the waiting one runs")
            gate.touch()
            done = [self.wait(p, {"succeeded", "failed", "canceled"}, STEP_LIMIT) for p in held]
            last = self.wait(queued, {"succeeded", "failed", "canceled"}, STEP_LIMIT)
            self.check_gpus(done, last)
        return self.verdict()

    # -- the checks ------------------------------------------------------------------------------

    def check_gpus(self, done: list[dict[str, Any]], last: dict[str, Any]) -> None:
        statuses = [p["status"] for p in [*done, last]]
        self.expect(statuses == ["succeeded"] * len(statuses), f"all succeeded: {statuses}")
        seen = [_seen(p) for p in done]
        visible = [s.get("cuda_visible_devices") for s in seen]
        for prediction, view in zip(done, seen, strict=True):
            print(f"     {prediction['id']}: {json.dumps(view)}")
        self.expect(
            len(set(visible)) == len(visible) and all(v in self.by_id for v in visible),
            f"the {len(done)} at once got different GPUs: CUDA_VISIBLE_DEVICES={visible}",
        )
        for view in seen:
            self.check_device(view)
        view = _seen(last)
        print(f"     {last['id']} (waited): {json.dumps(view)}")
        self.expect(
            view.get("cuda_visible_devices") in visible,
            f"the waiting one ran on a GPU freed by another: {view.get('cuda_visible_devices')}",
        )
        self.check_device(view)
        finished = min((p.get("completed_at") or "~") for p in done)
        self.expect(
            (last.get("started_at") or "") >= finished,
            f"it started ({last.get('started_at')}) after one finished ({finished})",
        )

    def check_device(self, view: dict[str, Any]) -> None:
        """One device, and the one nvidia-smi lists under that index (same UUID)."""
        if self.declared:
            return  # declared GPUs (a dry run): there is no CUDA device to look at
        gpu = self.by_id.get(view.get("cuda_visible_devices") or "")
        devices = view.get("devices") or []
        self.expect(view.get("count") == 1, f"CUDA shows it one device: {view.get('count')}")
        if gpu is not None and devices and gpu.uuid:
            self.expect(
                devices[0].get("uuid") == gpu.uuid,
                f"CUDA's device is nvidia-smi's GPU {gpu.id} ({devices[0].get('uuid')})",
            )

    def check_cpu(self, prediction: dict[str, Any]) -> None:
        view = _seen(prediction)
        print(f"     {prediction['id']}: {json.dumps(view)}")
        self.expect(prediction["status"] == "succeeded", f"it {prediction['status']}")
        self.expect(
            view.get("cuda_visible_devices") == "", "its worker got CUDA_VISIBLE_DEVICES=''"
        )
        self.expect(view.get("count") == 0, f"CUDA shows it no device ({view.get('error')})")

    def verdict(self) -> int:
        if self.failures:
            print(f"verdict: FAILED ({len(self.failures)} checks): " + "; ".join(self.failures))
            return 1
        kind = "declared GPUs, no CUDA check" if self.declared else "CUDA agrees with nvidia-smi"
        print(
            f"verdict: PASSED: {self.k} instance(s) on {self.k} GPU(s) of their own, one more "
            f"waited and ran once a GPU was freed, a CPU instance saw none ({kind})"
        )
        return 0

    def give_up(self, predictions: list[dict[str, Any]]) -> int:
        """The instances did not boot: say why, and what an offline machine needs."""
        for p in predictions:
            print(f"  {p['id']}: {p['status']}: {p.get('error')}\n{_tail(p.get('logs'))}")
        text = " ".join(f"{p.get('error')} {p.get('logs')}" for p in predictions)
        if "Cog SDK" in text or "uv pip install" in text or "No solution found" in text:
            print(
                "The model's environment could not be built: it needs the Cog SDK from a package "
                "index. On a machine without internet, make a wheel folder where pip works "
                "(bench/gpu_check.sh prepare DIR PYTHON_VERSION), carry it there and run "
                "WHEELS=DIR bench/gpu_check.sh."
            )
        print("verdict: FAILED: the instances did not start (see above)")
        return 1

    # -- the API -----------------------------------------------------------------------------------

    def push(self, name: str, hardware: str) -> str:
        """The package as a new model's version. Each model gets a copy that differs by a file:
        a version's id is its content's hash, so the same package would be one version."""
        package = self.workdir / name
        shutil.copytree(PACKAGE, package, dirs_exist_ok=True)
        (package / "MODEL").write_text(f"{name} on {hardware}\n")
        created = self.client.post(
            "/v1/models",
            json={"owner": "admin", "name": name, "visibility": "private", "hardware": hardware},
        )
        if created.status_code != 201:
            raise SystemExit(f"creating admin/{name} on {hardware} failed: {created.text}")
        return self.server.push(package, f"admin/{name}")

    def start(self, version: str, **inputs: Any) -> dict[str, Any]:
        answer = self.client.post("/v1/predictions", json={"version": version, "input": inputs})
        answer.raise_for_status()
        return answer.json()

    def get(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return self.client.get(f"/v1/predictions/{prediction['id']}").json()

    def wait(self, prediction: dict[str, Any], statuses: set[str], limit: float) -> dict[str, Any]:
        """Until its status is one of `statuses` or it ended; as it is then (also at the limit)."""
        deadline = time.monotonic() + limit
        while True:
            current = self.get(prediction)
            ended = current["status"] in ("succeeded", "failed", "canceled")
            if current["status"] in statuses or ended or time.monotonic() > deadline:
                return current
            time.sleep(0.2)

    def wait_for_log(self, prediction: dict[str, Any], text: str) -> dict[str, Any]:
        deadline = time.monotonic() + STEP_LIMIT
        while True:
            current = self.get(prediction)
            if text in (current["logs"] or "") or current["status"] != "starting":
                return current
            if time.monotonic() > deadline:
                return current
            time.sleep(0.2)


def _seen(prediction: dict[str, Any]) -> dict[str, Any]:
    """What the model reported (its JSON output); {} when it did not succeed."""
    try:
        return dict(json.loads(prediction.get("output") or "{}"))
    except (TypeError, ValueError):
        return {}


def _tail(logs: str | None, lines: int = 15) -> str:
    return "\n".join("     | " + line for line in (logs or "").splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
