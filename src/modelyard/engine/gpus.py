"""This machine's GPUs, and which local instance holds which: the local backend's placement.

An instance of a GPU SKU (`Hardware.gpus` GPUs of model `Hardware.gpu_model`) gets GPUs of its
own for its whole life and sees only them (`CUDA_VISIBLE_DEVICES`); two instances never share a
GPU, because a model that fills its GPU's memory would break the other one. When every GPU of
that model is held, the instance waits, first come first served, at most `placement_timeout`
seconds; a stopped instance (scale-down, a failed boot, shutdown) frees its GPUs at once.

Where the list of GPUs comes from (`Settings.gpus`, `modelyard serve --gpus`):

- not given, or `auto`: `nvidia-smi --query-gpu=index,name,uuid --format=csv,noheader`; no
  `nvidia-smi`, or one that fails (no driver), means no GPUs;
- `none` or empty: no GPUs (GPU SKUs cannot run here);
- a comma-separated list of `ID` or `ID:MODEL` entries. `ID:MODEL` declares a GPU without asking
  `nvidia-smi` (`0:t4,1:t4`; tests declare fake GPUs this way); `ID` is passed to the worker as
  `CUDA_VISIBLE_DEVICES` as it is, so it may also be a `GPU-…` or `MIG-…` UUID. A bare `ID`
  picks that GPU (by index or UUID) of those `nvidia-smi` reports, to use a subset (`0,1`).

`MODEL` is a GPU model slug as the hardware table names them (`t4`, `l40s`, `a100-80gb`,
`h100`); `nvidia-smi` names are turned into those slugs by `gpu_model_slug`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from modelyard.billing.hardware import Hardware
from modelyard.settings import Settings

from .backend import BootFailed, Progress

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,uuid", "--format=csv,noheader"]
NVIDIA_SMI_TIMEOUT = 15.0

#: Words in driver names that say nothing about the model ("Tesla T4" is a `t4`).
_VENDOR_WORDS = frozenset({"nvidia", "tesla", "geforce", "quadro"})
#: Form factors and packaging: an "H100 PCIe" and an "H100 SXM5" are both an `h100`.
_FORM_WORD = re.compile(r"(pcie|sxm\d*|hbm\d*e?|nvl|nvlink|generation|max|q|oem)")
_MEMORY_WORD = re.compile(r"\d+gb")
#: Models the hardware table tells apart by memory (`a100-80gb`); others drop it (`h100`).
_MEMORY_MATTERS = frozenset({"a100", "a800", "v100"})
#: What a `--gpus` entry's ID may be: an index, or a `GPU-…`/`MIG-…` UUID (old MIG ids hold `/`).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


class GpuConfigError(ValueError):
    """`--gpus` (Settings.gpus) cannot be read, or names a GPU this machine does not have."""


class PlacementFailed(BootFailed):
    """The instance got no GPUs: the machine has too few of its model, or none came free in
    `placement_timeout` seconds."""


@dataclass(frozen=True)
class Gpu:
    """One GPU: `id` is how `CUDA_VISIBLE_DEVICES` names it, `model` its slug (`t4`)."""

    id: str
    model: str
    name: str = ""  # as the driver names it ("Tesla T4"), or the declared model
    uuid: str = ""

    @property
    def label(self) -> str:
        return f"GPU {self.id} ({self.name or display(self.model)})"


@dataclass(frozen=True, eq=False)  # eq=False: a lease is compared by identity
class GpuLease:
    """The GPUs one instance holds (none for a CPU SKU), until `GpuInventory.release`."""

    gpus: tuple[Gpu, ...] = ()

    @property
    def visible_devices(self) -> str:
        return ",".join(gpu.id for gpu in self.gpus)

    def environment(self) -> dict[str, str]:
        """What the worker process gets. An empty `CUDA_VISIBLE_DEVICES` (a CPU SKU) hides every
        GPU, so a CPU instance cannot take memory from a GPU instance's GPU. `PCI_BUS_ID` makes
        CUDA number GPUs as `nvidia-smi` does (its default puts the fastest first), so an index
        from `nvidia-smi` means the same GPU to CUDA."""
        env = {"CUDA_VISIBLE_DEVICES": self.visible_devices}
        if self.gpus:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env


@dataclass(eq=False)
class _Waiter:
    model: str | None  # None: any model
    count: int
    future: asyncio.Future[GpuLease] = field(repr=False)


def display(model: str | None) -> str:
    """`t4` → `T4`, as messages name a model; None (any model) → `GPU`."""
    return model.upper() if model else "GPU"


def gpu_model_slug(name: str) -> str:
    """A driver's GPU name as the hardware table's `gpu_model` slug: `Tesla T4` → `t4`,
    `NVIDIA A100-SXM4-80GB` → `a100-80gb`, `NVIDIA H100 80GB HBM3` → `h100`,
    `NVIDIA GeForce RTX 4090` → `rtx-4090`. A slug is its own slug."""
    words = [w for w in re.split(r"[\s_-]+", name.strip().lower()) if w]
    words = [w for w in words if w not in _VENDOR_WORDS and not _FORM_WORD.fullmatch(w)]
    memory = [w for w in words if _MEMORY_WORD.fullmatch(w)]
    words = [w for w in words if not _MEMORY_WORD.fullmatch(w)]
    if words and words[0] in _MEMORY_MATTERS and memory:
        words.append(memory[0])
    return "-".join(words) or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def parse_nvidia_smi(listing: str) -> list[Gpu]:
    """The GPUs in `nvidia-smi --query-gpu=index,name,uuid --format=csv,noheader` output
    (`0, Tesla T4, GPU-4a2b…`). Lines that are not a GPU (errors, blank lines) and GPUs the
    driver cannot name (`[Unknown Error]`, `[GPU requires reset]`) are left out."""
    gpus: list[Gpu] = []
    for line in listing.splitlines():
        index, _, rest = line.strip().partition(",")
        name, _, uuid = rest.rpartition(",")
        index, name, uuid = index.strip(), name.strip(), uuid.strip()
        if not index.isdigit() or not name or name.startswith("["):
            continue
        # The index, not the UUID, goes in CUDA_VISIBLE_DEVICES: every library understands an
        # index (with CUDA_DEVICE_ORDER=PCI_BUS_ID it is nvidia-smi's), not all parse UUIDs.
        gpus.append(Gpu(index, gpu_model_slug(name), name, "" if uuid.startswith("[") else uuid))
    return gpus


def query_machine() -> list[Gpu]:
    """This machine's GPUs from `nvidia-smi`; none when it is missing or fails (no driver, no
    device): a machine whose GPUs cannot be used has none to offer, and still serves CPU models."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return []
    try:
        result = subprocess.run(
            [command, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s): no GPUs for local instances", exc)
        return []
    if result.returncode != 0:
        why = (result.stdout + result.stderr).strip().splitlines()
        log.warning("nvidia-smi exited with status %d (%s): no GPUs for local instances",
                    result.returncode, why[0] if why else "no output")  # fmt: skip
        return []
    return parse_nvidia_smi(result.stdout)


def parse_gpus_setting(
    text: str | None, detect: Callable[[], list[Gpu]] = query_machine
) -> list[Gpu]:
    """The GPUs `Settings.gpus` means (the format is in the module docstring); `detect` asks
    the machine, and is called only when some entry needs it. Raises `GpuConfigError`."""
    value = "auto" if text is None else text.strip()
    if value.lower() == "auto":
        return detect()
    if value.lower() in ("", "none"):
        return []
    detected: list[Gpu] | None = None
    gpus: list[Gpu] = []
    for entry in value.split(","):
        gpu_id, colon, model = (part.strip() for part in entry.partition(":"))
        if not _ID.fullmatch(gpu_id) or (colon and not model):
            raise GpuConfigError(
                f"--gpus: cannot read {entry.strip()!r} (expected ID or ID:MODEL, such as "
                "'0:t4,1:t4', or 'auto' or 'none')"
            )
        if colon:
            gpu = Gpu(gpu_id, gpu_model_slug(model), model)
        else:
            if detected is None:
                detected = detect()
            found = [g for g in detected if gpu_id in (g.id, g.uuid)]
            if not found:
                raise GpuConfigError(
                    f"--gpus: nvidia-smi reports no GPU {gpu_id} (it reports: "
                    f"{describe(detected)}); "
                    "declare it as ID:MODEL to use it anyway"
                )
            gpu = found[0]
        if any(g.id == gpu.id for g in gpus):
            raise GpuConfigError(f"--gpus: GPU {gpu.id} is listed twice")
        gpus.append(gpu)
    return gpus


class GpuInventory:
    """The GPUs local instances may use, and who holds each. Used from the event loop only
    (acquire, release); `can_place` and the counts read the fixed list and are safe anywhere."""

    def __init__(self, gpus: Iterable[Gpu] = (), placement_timeout: float = 600.0) -> None:
        self.gpus: tuple[Gpu, ...] = tuple(gpus)
        self.placement_timeout = placement_timeout
        self._holders: dict[str, GpuLease] = {}  # GPU id -> the lease holding it
        self._waiters: list[_Waiter] = []  # first come first served

    @classmethod
    def from_settings(
        cls, settings: Settings, detect: Callable[[], list[Gpu]] = query_machine
    ) -> GpuInventory:
        gpus = parse_gpus_setting(settings.gpus, detect)
        log.info("GPUs for local instances: %s", describe(gpus))
        return cls(gpus, settings.placement_timeout)

    def count(self, model: str | None) -> int:
        """GPUs of `model` (any model for None) on this machine, held or not."""
        return len(self._of(model))

    def free(self, model: str | None) -> int:
        return sum(1 for gpu in self._of(model) if gpu.id not in self._holders)

    def can_place(self, hardware: Hardware) -> bool:
        """Whether an instance of the SKU could ever run here (CPU SKUs always can)."""
        return hardware.gpus <= 0 or self.count(_model(hardware)) >= hardware.gpus

    async def acquire(self, hardware: Hardware, progress: Progress | None = None) -> GpuLease:
        """GPUs of the SKU's model and count, for one instance, until `release`. When too few
        are free it waits behind earlier requests (saying once to `progress` what it waits for),
        at most `placement_timeout` seconds; raises `PlacementFailed` then, or at once when the
        machine has too few of them at all. A CPU SKU gets an empty lease at once."""
        if hardware.gpus <= 0:
            return GpuLease()
        model, count = _model(hardware), hardware.gpus
        have = self.count(model)
        if have < count:
            raise PlacementFailed(
                f"{hardware.sku} needs {_gpus_phrase(count, model)}; this machine has "
                f"{have} (its GPUs: {describe(self.gpus)}; see `modelyard serve --gpus`)"
            )
        waiter = _Waiter(model, count, asyncio.get_running_loop().create_future())
        if not any(_overlap(waiter, w) for w in self._waiters):  # nobody is ahead of it
            lease = self._take(model, count)
            if lease is not None:
                return lease
        self._waiters.append(waiter)
        if progress is not None:
            progress(self._waiting(waiter))
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.placement_timeout):
                lease = await waiter.future
        except TimeoutError:
            why = self._waiting(waiter)
            self._abandon(waiter)
            raise PlacementFailed(
                f"gave up after {self.placement_timeout:g} s (the placement timeout) {why}"
            ) from None
        except BaseException:  # canceled (the pool closed): leave the queue, free any grant
            self._abandon(waiter)
            raise
        if progress is not None:
            waited = asyncio.get_running_loop().time() - started
            got = ", ".join(gpu.label for gpu in lease.gpus)
            progress(f"got {got} after waiting {waited:.1f} s")
        return lease

    def release(self, lease: GpuLease) -> None:
        """Free a lease's GPUs (again is harmless) and hand them to whoever waits first."""
        freed = False
        for gpu in lease.gpus:
            if self._holders.get(gpu.id) is lease:  # never free GPUs a later lease holds
                del self._holders[gpu.id]
                freed = True
        if freed:
            self._grant()

    def holders(self) -> dict[str, GpuLease]:
        """GPU id -> the lease holding it (a copy, for tests and status pages)."""
        return dict(self._holders)

    # -- inside ----------------------------------------------------------------------------

    def _of(self, model: str | None) -> list[Gpu]:
        return [gpu for gpu in self.gpus if model is None or gpu.model == model]

    def _take(self, model: str | None, count: int) -> GpuLease | None:
        free = [gpu for gpu in self._of(model) if gpu.id not in self._holders][:count]
        if len(free) < count:
            return None
        lease = GpuLease(tuple(free))
        for gpu in free:
            self._holders[gpu.id] = lease
        return lease

    def _grant(self) -> None:
        """Serve waiters in order. One that cannot be served blocks later ones wanting the same
        GPUs (so a request for two is not starved by a stream of requests for one), not others."""
        blocked: list[_Waiter] = []
        for waiter in list(self._waiters):
            if waiter.future.done():  # given up (canceled); _abandon removes it too
                self._waiters.remove(waiter)
                continue
            if any(_overlap(waiter, b) for b in blocked):
                blocked.append(waiter)
                continue
            lease = self._take(waiter.model, waiter.count)
            if lease is None:
                blocked.append(waiter)
                continue
            self._waiters.remove(waiter)
            waiter.future.set_result(lease)

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter gave up (timeout, cancel): out of the queue; GPUs granted to it meanwhile go
        back; those behind it may now be served."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.future.done() and not waiter.future.cancelled():
            self.release(waiter.future.result())
        else:
            waiter.future.cancel()
        self._grant()

    def _waiting(self, waiter: _Waiter) -> str:
        """`waiting for a free T4 GPU: 2 of 2 in use by other instances` (and how many earlier
        requests for the same GPUs wait before it)."""
        model = waiter.model
        held = self.count(model) - self.free(model)
        index = self._waiters.index(waiter) if waiter in self._waiters else 0
        ahead = sum(1 for w in self._waiters[:index] if _overlap(waiter, w))
        text = (
            f"waiting for {_gpus_phrase(waiter.count, model, free=True)}: {held} of "
            f"{self.count(model)} in use by other instances"
        )
        if ahead:
            text += f"; {ahead} instance{'s' if ahead > 1 else ''} waiting before this one"
        return text


def _model(hardware: Hardware) -> str | None:
    return gpu_model_slug(hardware.gpu_model) if hardware.gpu_model else None


def _overlap(a: _Waiter, b: _Waiter) -> bool:
    """Whether two requests may want the same GPUs."""
    return a.model is None or b.model is None or a.model == b.model


def _gpus_phrase(count: int, model: str | None, *, free: bool = False) -> str:
    """`a free T4 GPU`, `2 free L40S GPUs`, `2 H100 GPUs`, `1 T4 GPU`."""
    kind = "" if model is None else display(model) + " "
    if free:
        return f"a free {kind}GPU" if count == 1 else f"{count} free {kind}GPUs"
    return f"{count} {kind}GPU{'s' if count != 1 else ''}"


def describe(gpus: Sequence[Gpu]) -> str:
    """`GPU 0 (Tesla T4), GPU 1 (Tesla T4)`, or `none`."""
    return ", ".join(gpu.label for gpu in gpus) or "none"
