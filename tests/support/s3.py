"""A real S3 server for tests: moto's server in a subprocess on a free loopback port.

    with moto_server() as s3:
        s3.patch_env(monkeypatch)            # this process; s3.environ() for a subprocess
        url = s3.create_bucket(prefix="blobs")  # "s3://test-1a2b3c4d5e6f/blobs"

`s3.env` holds the ordinary AWS variables (endpoint, region, dummy credentials), so anything that
opens a store with `open_blob_store` (this process, a subprocess, a Ray worker given that env)
reaches the same server. moto keeps everything in memory and checks no signatures; a bucket name
per test (`unique_bucket`) keeps tests that share one server apart.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

STARTUP_TIMEOUT = 30.0  # seconds; moto imports a lot on its first start


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint and the environment that points boto3 at it."""

    endpoint: str
    env: dict[str, str]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (os.environ by default) without its AWS variables, plus this server's: for a
        subprocess, so no profile or endpoint of the developer's leaks in."""
        base = os.environ if base is None else base
        return {k: v for k, v in base.items() if not k.startswith("AWS_")} | self.env

    def patch_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's boto3 at the server for one test (undone after it)."""
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            monkeypatch.delenv(name)
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)

    def create_bucket(self, name: str | None = None, prefix: str = "") -> str:
        """Make a bucket (a fresh name when None); its storage URL, with `prefix` if given."""
        name = name or unique_bucket()
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}/{prefix}" if prefix else f"s3://{name}"


def unique_bucket(stem: str = "test") -> str:
    return f"{stem}-{secrets.token_hex(6)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """Start `python -m moto.server` and wait until it answers; killed on exit. A port taken
    between choosing it and binding it makes the server exit: then another port is tried."""
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            if _wait_until_up(process, endpoint):
                yield S3Server(endpoint, _environment(endpoint))
                return
        finally:
            process.kill()
            process.wait()
    raise RuntimeError("moto's S3 server did not start (5 tries)")


def _wait_until_up(process: subprocess.Popen[bytes], endpoint: str) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            httpx.get(endpoint + "/moto-api/", timeout=1.0)
            return True
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"moto's S3 server at {endpoint} did not answer in {STARTUP_TIMEOUT}s")


def _environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # a developer's own profile or an EC2 instance role must not leak into the tests
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
