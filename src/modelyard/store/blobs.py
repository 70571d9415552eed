"""Blob storage on local disk, addressed by SHA-256 so the same bytes are stored once."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    key: str  # the SHA-256 of the content, in hex
    size: int
    md5: str


class BlobStore:
    """`root/ab/abcdef…`: written to a temporary file first, then renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put_bytes(self, data: bytes) -> Blob:
        return self.put_chunks([data])

    def put_stream(self, stream: BinaryIO) -> Blob:
        return self.put_chunks(iter(lambda: stream.read(CHUNK), b""))

    def put_file(self, path: Path) -> Blob:
        with open(path, "rb") as stream:
            return self.put_stream(stream)

    def put_chunks(self, chunks: Iterable[bytes]) -> Blob:
        sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    sha256.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            key = sha256.hexdigest()
            target = self.path(key)
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Blob(key=key, size=size, md5=md5.hexdigest())

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def copy_to(self, key: str, destination: Path) -> None:
        shutil.copyfile(self.path(key), destination)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
