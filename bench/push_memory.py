"""Memory of a big push and time to refuse a tar bomb, against a real `modelyard serve`.

    python -m bench.push_memory [--mib 512] [--bomb-gib 1.5]

1. A package holding one incompressible file of `--mib` MiB is pushed with `modelyard push`;
   printed: the server's peak RSS before and after the push (VmHWM from /proc, so nothing is
   missed between samples) and the `modelyard push` process's own peak RSS.
2. A tar bomb (a valid cog.yaml plus `--bomb-gib` GiB of zeros, a few MB compressed) and an
   archive of 100,000 empty files are posted; printed: the answer, the seconds it took, and
   whether anything stayed in blobs/ or packages/.

Peak RSS is what the issue measured (a 512 MiB push peaked at 949 MB); the numbers go to
docs/security.md. Nothing is asserted: this is a measurement.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from bench.modelyard_serve import ModelyardServer, _modelyard

PREDICT = (
    "from cog import BasePredictor\n\n\nclass Predictor(BasePredictor):\n"
    "    def predict(self) -> str:\n        return 'hi'\n"
)
MiB = 1 << 20


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def big_package(folder: Path, mib: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "cog.yaml").write_text("predict: predict.py:Predictor\n")
    (folder / "predict.py").write_text(PREDICT)
    with open(folder / "weights.bin", "wb") as out:
        out.writelines(os.urandom(MiB) for _ in range(mib))
    return folder


def push_with_cli(server: ModelyardServer, package: Path, model: str) -> tuple[int, float, str]:
    """(exit status, peak RSS of `modelyard push` in MB, its stderr's last line)."""
    env = {**server.env, "MODELYARD_API_TOKEN": server.token}
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [_modelyard(), "push", str(package), model, "--api", server.url],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        last = (err.read().decode(errors="replace").strip().splitlines() or [""])[-1]
    return process.returncode, usage.ru_maxrss / 1024, last


def _add_package(tar: tarfile.TarFile) -> None:
    """cog.yaml and predict.py of a model that pushes cleanly."""
    for name, text in (
        ("cog.yaml", b"predict: predict.py:Predictor\n"),
        ("predict.py", PREDICT.encode()),
    ):
        info = tarfile.TarInfo(name)
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))


def tar_bomb(gib: float) -> bytes:
    """cog.yaml, predict.py and one file of `gib` GiB of zeros, gzip'd (a few MB)."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        _add_package(tar)
        info = tarfile.TarInfo("zeros.bin")
        info.size = int(gib * (1 << 30))
        tar.addfile(info, _Zeros(info.size))
    return buffer.getvalue()


def many_entries(count: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add_package(tar)
        for i in range(count):
            tar.addfile(tarfile.TarInfo(f"f/{i}"), io.BytesIO(b""))
    return buffer.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def leftovers(data_dir: Path) -> str:
    blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    packages = list((data_dir / "packages").glob("*")) if (data_dir / "packages").exists() else []
    size = sum(p.stat().st_size for p in (data_dir / "packages").rglob("*") if p.is_file())
    return f"{len(blobs)} blob(s), {len(packages)} package folder(s) ({size / 1e6:.0f} MB)"


def post(server: ModelyardServer, model: str, body: bytes) -> tuple[int, float, str]:
    started = time.monotonic()
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=600) as client:
        answer = client.post(f"/v1/models/{model}/versions", content=body)
    return answer.status_code, time.monotonic() - started, answer.text[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--bomb-gib", type=float, default=1.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="push-memory-") as tmp:
        root = Path(tmp)
        package = big_package(root / "big", args.mib)
        with ModelyardServer(root / "data", ["--no-catalog"]) as server:
            before = peak_rss_mb(server.process.pid)  # type: ignore[union-attr]
            status, client_peak, last = push_with_cli(server, package, "admin/big")
            after = peak_rss_mb(server.process.pid)  # type: ignore[union-attr]
            print(f"push of {args.mib} MiB: exit {status} ({last})")
            print(f"  server peak RSS: {before:.0f} MB before, {after:.0f} MB after the push")
            print(f"  `modelyard push` peak RSS: {client_peak:.0f} MB")
        with ModelyardServer(root / "bombs", ["--no-catalog"]) as server:
            bomb = tar_bomb(args.bomb_gib)
            status, seconds, text = post(server, "admin/bomb", bomb)
            print(
                f"tar bomb ({len(bomb) / 1e6:.1f} MB compressed, {args.bomb_gib} GiB expanded): "
                f"HTTP {status} in {seconds:.2f} s; left: {leftovers(root / 'bombs')}\n  {text}"
            )
            entries = many_entries(100_000)
            status, seconds, text = post(server, "admin/many", entries)
            print(
                f"100,000 entries ({len(entries) / 1e6:.1f} MB): HTTP {status} in {seconds:.2f} s;"
                f" left: {leftovers(root / 'bombs')}\n  {text}"
            )
            peak = peak_rss_mb(server.process.pid)  # type: ignore[union-attr]
            print(f"  server peak RSS after both: {peak:.0f} MB")


if __name__ == "__main__":
    main()
