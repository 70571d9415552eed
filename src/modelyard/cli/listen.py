"""The listening socket of `modelyard serve`, bound before anything else happens."""

from __future__ import annotations

import errno
import socket


class ListenError(Exception):
    """The port cannot be listened on; `str()` is one line saying what to do."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, bound as uvicorn binds one (IPv6 when the host has a `:`,
    SO_REUSEADDR so that a port a stopped server left in TIME_WAIT is free); uvicorn then
    listens on it. Raises `ListenError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                # "address already in use" as the OS says it: tests/e2e/live.py retries on it
                f"port {port} on {host}: address already in use (another modelyard serve?): "
                "pick another with --port"
            ) from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
