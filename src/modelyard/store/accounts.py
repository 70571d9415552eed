"""Accounts and their API tokens."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .ids import new_token, new_webhook_secret, token_hash
from .sessions import set_password
from .tables import Account, Token, utcnow


@dataclass(frozen=True)
class IssuedToken:
    """A token as created: the only moment its plain text exists."""

    id: int
    name: str
    token: str


#: First path segments of the API and the web pages: an account of that name would be shadowed.
RESERVED_USERNAMES = frozenset({
    "v1", "account", "collections", "deployments", "delivery", "files", "hardware", "models",
    "predictions", "search", "streams", "trainings", "webhooks",
    "p", "signin", "signout", "settings", "static", "explore", "usage", "metrics",
})  # fmt: skip


def is_reserved(username: str) -> bool:
    return username.lower() in RESERVED_USERNAMES


def create_account(
    session: Session, username: str, *, name: str | None = None, is_admin: bool = False
) -> Account:
    """Raises ValueError for a reserved username."""
    if is_reserved(username):
        raise ValueError(f"{username!r} is reserved (it is a path of the API or the web pages)")
    account = Account(
        username=username,
        name=name or username,
        is_admin=is_admin,
        webhook_secret=new_webhook_secret(),
    )
    session.add(account)
    session.flush()
    return account


def account_by_username(session: Session, username: str) -> Account | None:
    return session.scalar(select(Account).where(Account.username == username))


def issue_token(session: Session, account: Account, name: str = "") -> IssuedToken:
    plain = new_token()
    token = Token(account_id=account.id, name=name, token_hash=token_hash(plain), hint=plain[:7])
    session.add(token)
    session.flush()
    return IssuedToken(id=token.id, name=name, token=plain)


def authenticate(session: Session, plain: str) -> Account | None:
    """The account a live token belongs to, or None."""
    row = session.execute(
        select(Account, Token)
        .join(Token, Token.account_id == Account.id)
        .where(Token.token_hash == token_hash(plain), Token.revoked_at.is_(None))
    ).first()
    return None if row is None else row[0]


def list_tokens(session: Session, account: Account) -> list[Token]:
    return list(
        session.scalars(select(Token).where(Token.account_id == account.id).order_by(Token.id))
    )


def revoke_token(session: Session, account: Account, token_id: int) -> bool:
    token = session.get(Token, token_id)
    if token is None or token.account_id != account.id or token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    return True


def account_for_token(session: Session, username: str) -> Account:
    """The account, created if missing; the first account of a new server is its admin."""
    account = account_by_username(session, username)
    if account is not None:
        return account
    first = session.scalar(select(Account.id).limit(1)) is None
    return create_account(session, username, is_admin=first)


def ensure_admin(
    session: Session, username: str = "admin", password: str | None = None
) -> IssuedToken | None:
    """On first start: an admin account (with `password` for the web pages, when given) and a
    token for it; None when accounts already exist."""
    if session.scalar(select(Account.id).limit(1)) is not None:
        return None
    account = create_account(session, username, is_admin=True)
    if password is not None:
        set_password(account, password)
    return issue_token(session, account, name="created on first start")
