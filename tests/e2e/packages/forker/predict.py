# Leaves processes behind: `daemon` double-forks a sleeper into a session of its own and returns;
# `hang` does that too, then blocks in time.sleep(3600). Each sleeper carries `marker` in its
# command line, so a test can look for it in /proc.
import os
import subprocess
import sys
import time

from cog import BasePredictor, Input


def _double_fork(marker: str) -> None:
    if os.fork() == 0:  # the child: a new session, then a grandchild that outlives it
        os.setsid()
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(3600)", marker],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        os._exit(0)
    os.wait()


class Predictor(BasePredictor):
    def predict(
        self,
        mode: str = Input(choices=["daemon", "hang"]),
        marker: str = Input(description="Put in the sleeper's command line"),
    ) -> str:
        _double_fork(marker)
        if mode == "hang":
            print("hanging", flush=True)
            time.sleep(3600)
        return "forked"
