# Tries what a hostile tenant would: read, list or write a path, fetch a URL, show its variables.
# Answers "ok: ..." or "refused: <error>", so a test sees what the sandbox let through.
import json
import os
import urllib.request

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        action: str = Input(choices=["read", "list", "write", "fetch", "env", "whoami"]),
        target: str = Input(description="A path, or a URL to fetch", default=""),
    ) -> str:
        try:
            if action == "read":
                with open(target, "rb") as handle:
                    return "ok: " + handle.read(200).decode("utf-8", "replace")
            if action == "list":
                return "ok: " + json.dumps(sorted(os.listdir(target)))
            if action == "write":
                with open(target, "w") as handle:
                    handle.write("written by a model")
                return "ok: wrote " + target
            if action == "fetch":
                with urllib.request.urlopen(target, timeout=10) as response:
                    return "ok: " + response.read(200).decode("utf-8", "replace")
            if action == "env":
                return "ok: " + json.dumps(dict(os.environ))
            return "ok: " + json.dumps({"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()})
        except OSError as exc:
            return f"refused: {type(exc).__name__}: {exc}"
