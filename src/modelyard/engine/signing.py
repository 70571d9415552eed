"""The server secret and the signatures of download URLs made from it.

`signature` = standard base64 of HMAC-SHA256 over `"{owner} {id} {expiry}"` (the string
Replicate's spec names), keyed by a key derived from the server secret in `data_dir/secret.key`
(32 random bytes, hex, made on first use; replicas must share it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "secret.key"


def signing_key(data_dir: Path) -> bytes:
    """The key of download signatures, derived from the server secret (made on first use)."""
    secret = _server_secret(data_dir / SECRET_FILE)
    return hmac.new(secret, b"modelyard files.download", "sha256").digest()


def download_signature(key: bytes, file_id: str, owner: str, expiry: int) -> str:
    """Standard base64 of HMAC-SHA256 over `"{owner} {id} {expiry}"`, as Replicate's spec says."""
    message = f"{owner} {file_id} {expiry}".encode()
    return base64.b64encode(hmac.new(key, message, "sha256").digest()).decode()


def _server_secret(path: Path) -> bytes:
    """The server secret, made once: written to a temporary file and linked into place, so
    processes starting together agree on one secret and never read a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(32) + "\n")
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_bytes().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty; delete it to make a new server secret")
    return hashlib.sha256(secret).digest()
