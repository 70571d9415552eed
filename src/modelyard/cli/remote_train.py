"""`modelyard train DIR -i ... -d owner/name`: train on a server into a destination model.

The package is pushed to the destination model (its trainer becomes a version there), `@file`
inputs are uploaded through the Files API, and a training of that version is started with the
destination; its logs are followed on stderr until it ends, and the new version is printed on
stdout. Ctrl-C cancels the training. Failures are one line (`PushError`), as for `push`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelyard.cogspec.inputs import file_fields

from .inputs import parse_input_options
from .predict import stderr
from .push import (
    TIMEOUT,
    PushError,
    PushOptions,
    api_base_url,
    api_token,
    check_package,
    parse_model,
    problem_detail,
    run_push,
)

TERMINAL = ("succeeded", "failed", "canceled")
POLL_SECONDS = 1.0


@dataclass
class RemoteTrainOptions:
    package_dir: Path
    inputs: list[str]
    destination: str
    api: str | None = None
    token: str | None = None


def run_remote_train(options: RemoteTrainOptions) -> int:
    """Push, upload, train and follow; returns the exit code (0 when the training succeeded)."""
    owner, name = parse_model(options.destination)
    schema = check_package(options.package_dir)
    if "TrainingInput" not in schema.get("components", {}).get("schemas", {}):
        raise PushError(f"{options.package_dir}/cog.yaml has no 'train:' entry")
    values = parse_input_options(options.inputs, schema, "TrainingInput")
    # Which values named local files (`@path`): everything else is a URL and goes as it is.
    local = {o.partition("=")[2][1:] for o in options.inputs if o.partition("=")[2].startswith("@")}
    local = {str(Path(p).expanduser().resolve()) for p in local}
    pushed = run_push(PushOptions(options.package_dir, options.destination, options.api,
                                  options.token))  # fmt: skip
    api, token = api_base_url(options.api), api_token(options.token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=api, headers=headers, timeout=TIMEOUT) as client:
        for field, is_list in file_fields(schema, "TrainingInput").items():
            if field in values:
                paths = values[field] if is_list else [values[field]]
                urls = [_upload(client, Path(p)) if p in local else p for p in paths]
                values[field] = urls if is_list else urls[0]
        version = pushed.version["id"]
        created = client.post(
            f"/v1/models/{owner}/{name}/versions/{version}/trainings",
            json={"destination": options.destination, "input": values},
        )
        if created.status_code != 201:
            raise PushError(f"the training was refused: {problem_detail(created)}")
        training = created.json()
        stderr(f"Training {training['id']} of {pushed.reference} into {options.destination}")
        try:
            training = _follow(client, training)
        except KeyboardInterrupt:
            client.post(f"/v1/trainings/{training['id']}/cancel")
            stderr("Canceled the training.")
            return 130
    if training["status"] != "succeeded":
        print(f"Error: the training {training['status']}: {training.get('error') or ''}".strip(),
              file=sys.stderr)  # fmt: skip
        return 1
    output = training.get("output") or {}
    print(f"Trained {output.get('version')}")
    print(f"Weights: {output.get('weights')}")
    return 0


def _upload(client: httpx.Client, path: Path) -> str:
    """A local file, uploaded through the Files API; its URL for the training's input."""
    with path.open("rb") as handle:
        response = client.post("/v1/files", files={"content": (path.name, handle)})
    if response.status_code != 201:
        raise PushError(f"uploading {path} failed: {problem_detail(response)}")
    stderr(f"Uploaded {path.name}")
    return str(response.json()["urls"]["get"])


def _follow(client: httpx.Client, training: dict[str, Any]) -> dict[str, Any]:
    """Poll until the training ends, printing each new piece of its logs as it appears."""
    shown = 0
    while True:
        logs = training.get("logs") or ""
        if len(logs) > shown:
            sys.stderr.write(logs[shown:])
            sys.stderr.flush()
            shown = len(logs)
        if training["status"] in TERMINAL:
            return training
        time.sleep(POLL_SECONDS)
        response = client.get(f"/v1/trainings/{training['id']}")
        if response.status_code != 200:
            raise PushError(f"following the training failed: {problem_detail(response)}")
        training = response.json()
