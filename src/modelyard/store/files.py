"""File records: uploads, prediction outputs and training weights, each pointing at a blob.

Blobs are content-addressed, so one blob may back several records (and version packages or
weights): a blob is deleted only when nothing refers to it any more (`blob_in_use`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .blobs import Blob
from .ids import new_access_key, new_id
from .tables import Account, File, Version, utcnow


@dataclass(frozen=True)
class NewFile:
    account_id: int
    name: str
    content_type: str
    purpose: str = "upload"
    prediction_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    created_at: datetime | None = None  # default: now


def add_file(session: Session, new: NewFile, blob: Blob) -> File:
    row = File(
        id=new_id(),
        account_id=new.account_id,
        purpose=new.purpose,
        prediction_id=new.prediction_id,
        access_key=new_access_key(),
        blob_key=blob.key,
        name=new.name,
        content_type=new.content_type,
        size=blob.size,
        sha256=blob.key,
        md5=blob.md5,
        file_metadata=new.metadata,
        created_at=new.created_at or utcnow(),
        expires_at=new.expires_at,
    )
    session.add(row)
    session.flush()
    return row


def live(file: File | None) -> File | None:
    """The file unless it has expired."""
    if file is None or (file.expires_at is not None and file.expires_at <= utcnow()):
        return None
    return file


def get_file(session: Session, file_id: str) -> File | None:
    return live(session.get(File, file_id))


def file_by_access_key(session: Session, access_key: str) -> File | None:
    return live(session.scalar(select(File).where(File.access_key == access_key)))


def list_files(
    session: Session, account_id: int, *, before: tuple[datetime, str] | None, limit: int
) -> list[File]:
    query = select(File).where(
        File.account_id == account_id,
        File.purpose == "upload",
        (File.expires_at.is_(None)) | (File.expires_at > utcnow()),
    )
    if before is not None:
        at, last_id = before
        query = query.where(
            (File.created_at < at) | ((File.created_at == at) & (File.id < last_id))
        )
    return list(
        session.scalars(query.order_by(File.created_at.desc(), File.id.desc()).limit(limit))
    )


def account_upload(session: Session, file_id: str, account_id: int) -> File | None:
    """An uploaded file of that account that has not expired (outputs are not Files API files)."""
    file = get_file(session, file_id)
    if file is None or file.purpose != "upload" or file.account_id != account_id:
        return None
    return file


def owner_username(session: Session, file: File) -> str:
    account = session.get(Account, file.account_id)
    return account.username if account is not None else ""


def blob_in_use(session: Session, blob_key: str) -> bool:
    """Whether a file record or a version (package or weights) still refers to the blob."""
    for query in (
        select(File.id).where(File.blob_key == blob_key),
        select(Version.pk).where(Version.package_key == blob_key),
        select(Version.pk).where(Version.weights_key == blob_key),
    ):
        if session.scalar(query.limit(1)) is not None:
            return True
    return False


def delete_file(session: Session, file: File) -> bool:
    """Delete the record; True when its blob is now unused (the caller deletes the blob)."""
    session.execute(delete(File).where(File.id == file.id))
    return not blob_in_use(session, file.blob_key)


def expired_files(session: Session, limit: int) -> list[File]:
    """Records past their expiry, oldest expiry first."""
    query = (
        select(File)
        .where(File.expires_at.is_not(None), File.expires_at <= utcnow())
        .order_by(File.expires_at)
        .limit(limit)
    )
    return list(session.scalars(query))
