"""Identifiers and secrets: prediction ids shaped like Replicate's, tokens, webhook secrets."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's alphabet, lower case, as Replicate's ids


def new_id() -> str:
    """26 lowercase base32 characters (130 random bits), like `azaq55dbukgxg6kubr4k6g3pby`."""
    number = int.from_bytes(_random_bytes(17)) >> 6
    return _base32(number)


_RANDOM_CHUNK = 4096
_random_pool = bytearray()
_random_lock = threading.Lock()


def _random_bytes(count: int) -> bytes:
    """`os.urandom` bytes, read a few KiB at a time: one getrandom() call per create cost as
    much as an SQL statement on the create path. A forked child starts with none (it must not
    reuse its parent's)."""
    with _random_lock:
        if len(_random_pool) < count:
            _random_pool.extend(os.urandom(_RANDOM_CHUNK))
        taken = bytes(_random_pool[:count])
        del _random_pool[:count]
    return taken


os.register_at_fork(after_in_child=_random_pool.clear)


def content_id(data: bytes) -> str:
    """An id of the same shape derived from content: the same content gives the same id."""
    return _base32(int.from_bytes(hashlib.sha256(data).digest()[:17]) >> 6)


def _base32(number: int) -> str:
    return "".join(_BASE32[(number >> (5 * i)) & 31] for i in range(26))


def new_token() -> str:
    """An API token: `r8_` and 40 URL-safe characters, as Replicate's tokens look."""
    return "r8_" + secrets.token_urlsafe(30)


def token_hash(token: str) -> str:
    """Tokens are stored hashed: a leaked database does not leak working tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_webhook_secret() -> str:
    """`whsec_` + standard base64 (no `_`: the Python client splits the secret on it)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_access_key() -> str:
    """An unguessable path segment for URLs that work without auth (streams, output files)."""
    return secrets.token_urlsafe(24)
