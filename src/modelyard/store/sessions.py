"""Web sessions (a signed-in browser) and account passwords.

The cookie carries a random token; only its SHA-256 is stored, as for API tokens. Passwords are
hashed with scrypt from the standard library (`scrypt$n$r$p$salt$hash`, base64 parts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .ids import token_hash
from .tables import Account, WebSession, utcnow

SESSION_COOKIE = "modelyard_session"
SESSION_LIFETIME = timedelta(days=30)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def start_session(session: Session, account: Account) -> str:
    """A new web session for the account; returns the token for the cookie."""
    plain = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        WebSession(
            account_id=account.id,
            token_hash=token_hash(plain),
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    session.flush()
    return plain


def session_account(session: Session, plain: str) -> Account | None:
    """The account of a live (not expired, not ended) session, or None."""
    row = session.execute(
        select(Account, WebSession)
        .join(WebSession, WebSession.account_id == Account.id)
        .where(WebSession.token_hash == token_hash(plain), WebSession.revoked_at.is_(None))
    ).first()
    if row is None or row[1].expires_at <= utcnow():
        return None
    return row[0]


def end_session(session: Session, plain: str) -> None:
    web = session.scalar(select(WebSession).where(WebSession.token_hash == token_hash(plain)))
    if web is not None and web.revoked_at is None:
        web.revoked_at = utcnow()


def end_all_sessions(session: Session, account: Account) -> None:
    """Sign the account out everywhere (after its password changes)."""
    now = utcnow()
    for web in session.scalars(
        select(WebSession).where(
            WebSession.account_id == account.id, WebSession.revoked_at.is_(None)
        )
    ):
        web.revoked_at = now


def set_password(account: Account, password: str) -> None:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    parts = [str(_SCRYPT[k]) for k in ("n", "r", "p")]
    encoded = [base64.b64encode(x).decode() for x in (salt, digest)]
    account.password_hash = "$".join(["scrypt", *parts, *encoded])


def check_password(account: Account, password: str) -> bool:
    """Whether `password` is the account's (False when it has none)."""
    stored = account.password_hash or ""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(actual, expected)
