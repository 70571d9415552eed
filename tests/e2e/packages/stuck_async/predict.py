# An async predictor that blocks its own event loop, so `asyncio` cancel never reaches it.
import ctypes
import time
import uuid

from cog import BasePredictor, Input

WORKER = uuid.uuid4().hex  # names this worker process (pids repeat in a sandbox)


class Predictor(BasePredictor):
    async def predict(
        self,
        how: str = Input(default="whoami", choices=["whoami", "sleep", "c_sleep", "surrogate_log"]),
    ) -> str:
        if how == "whoami":
            return WORKER
        if how == "surrogate_log":
            print("half a line \ud800", end="")  # sent with the prediction's end
            return "logged"
        print(f"stuck in {how}", flush=True)
        if how == "sleep":
            time.sleep(3600)  # noqa: ASYNC251 - blocking the loop is the point
        ctypes.CDLL(None).sleep(3600)
        return "unreachable"
