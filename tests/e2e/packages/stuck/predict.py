# Gets stuck where a cancel cannot reach it (`how`), so tests can check that cancel and deadlines
# end it anyway; also returns outputs that cannot travel to the runner.
import ctypes
import time
import uuid

from cog import BasePredictor, Input

WORKER = uuid.uuid4().hex  # names this worker process (pids repeat in a sandbox)

HOWS = ["whoami", "quick", "sleep", "c_sleep", "ignore", "surrogate", "huge", "surrogate_log"]


class Predictor(BasePredictor):
    def predict(self, how: str = Input(default="whoami", choices=HOWS)) -> str:
        if how == "whoami":
            return WORKER
        if how == "quick":  # a fraction of the shutdown grace
            print("working", flush=True)
            time.sleep(1)
            return "quick"
        if how == "surrogate":
            return "\ud800"
        if how == "surrogate_log":
            print("half a line \ud800", end="")  # sent with the prediction's end
            return "logged"
        if how == "huge":
            return "x" * (65 * 1024 * 1024)  # over the 64 MiB frame limit
        # Says so from inside the `try`: a cancel that lands just after the line is swallowed
        # too, so only killing the worker ends it, whenever the cancel comes.
        said = False
        while True:
            try:
                if not said:
                    said = True
                    print(f"stuck in {how}", flush=True)
                if how == "c_sleep":
                    ctypes.CDLL(None).sleep(3600)
                else:  # sleep, and ignore: swallows every cancel
                    time.sleep(3600)
            except BaseException:  # noqa: BLE001
                print("ignoring the cancel", flush=True)
