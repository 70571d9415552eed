# Answers, as JSON, what CUDA shows this worker: CUDA_VISIBLE_DEVICES, the device count, and each
# device's name and UUID (as nvidia-smi prints them), after `seconds` or once `gate` exists.
import ctypes
import json
import os
import time

from cog import BasePredictor, Input

CUDA_SUCCESS = 0
CUDA_ERROR_NO_DEVICE = 100


def cuda_devices() -> dict:
    """The devices the CUDA driver lists for this process (all that CUDA_VISIBLE_DEVICES lets
    it see); `count` 0 and the error code when there are none."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return {"count": 0, "error": f"cannot load libcuda.so.1: {exc}"}
    status = cuda.cuInit(0)
    if status != CUDA_SUCCESS:  # CUDA_ERROR_NO_DEVICE (100) when it may see no GPU
        return {"count": 0, "error": f"cuInit returned {status}"}
    count = ctypes.c_int(0)
    status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != CUDA_SUCCESS:
        return {"count": 0, "error": f"cuDeviceGetCount returned {status}"}
    get_uuid = getattr(cuda, "cuDeviceGetUuid_v2", None) or cuda.cuDeviceGetUuid
    devices = []
    for ordinal in range(count.value):
        device = ctypes.c_int(0)
        cuda.cuDeviceGet(ctypes.byref(device), ordinal)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, device)
        raw = (ctypes.c_ubyte * 16)()
        uuid = None
        if get_uuid(raw, device) == CUDA_SUCCESS:
            h = bytes(raw).hex()
            uuid = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        devices.append({"name": name.value.decode(errors="replace"), "uuid": uuid})
    return {"count": count.value, "devices": devices}


class Predictor(BasePredictor):
    def setup(self) -> None:
        print(f"setup: CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}")

    def predict(
        self,
        seconds: float = Input(description="How long to hold without a gate", default=0, ge=0),
        gate: str = Input(description="Hold until this file exists (at most 600 s)", default=""),
    ) -> str:
        seen = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), **cuda_devices()}
        print(json.dumps(seen), flush=True)
        deadline = time.monotonic() + (600 if gate else seconds)
        while time.monotonic() < deadline:
            if gate and os.path.exists(gate):
                break
            time.sleep(0.05)
        return json.dumps(seen)
