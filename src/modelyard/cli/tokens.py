"""`modelyard token create|list|revoke` (API tokens) and `modelyard password` (for the web
pages), managed in the server's database: SQLite in this machine's data folder, or the one
`--database-url` names (a PostgreSQL that API replicas share), directly, without a server.
Without `--data-dir`, the folder the last `modelyard serve` served (see `datadir.py`)."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from modelyard.store.accounts import (
    account_by_username,
    account_for_token,
    issue_token,
    list_tokens,
    revoke_token,
)
from modelyard.store.sessions import end_all_sessions, set_password

from .datadir import ManagedDataDir, managed_data_dir
from .serve import DatabaseUrl, open_database

token_app = typer.Typer(help="Create, list and revoke API tokens (in the server's database).")


@token_app.command("create")
def token_create(
    username: Annotated[
        str, typer.Option(help="The account; created if missing (the first one is the admin).")
    ] = "admin",
    name: Annotated[str, typer.Option(help="A label for the token.")] = "",
    data_dir: ManagedDataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a new token for an account."""
    db = open_database(managed_data_dir(data_dir, database_url), database_url)
    try:
        with db.session() as session:
            account = account_for_token(session, username)
            issued = issue_token(session, account, name)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(issued.token)


@token_app.command("list")
def token_list(
    username: Annotated[str, typer.Option(help="The account.")] = "admin",
    data_dir: ManagedDataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The account's tokens: id, first characters, name, created, revoked."""
    db = open_database(managed_data_dir(data_dir, database_url), database_url)
    with db.session() as session:
        account = account_by_username(session, username)
        if account is None:
            raise _fail(f"no account named {username!r}")
        for token in list_tokens(session, account):
            revoked = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "active"
            typer.echo(
                f"{token.id}\t{token.hint}…\t{token.name or '-'}\t"
                f"{token.created_at:%Y-%m-%d %H:%M}\t{revoked}"
            )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id `modelyard token list` shows.")],
    username: Annotated[str, typer.Option(help="The account.")] = "admin",
    data_dir: ManagedDataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    db = open_database(managed_data_dir(data_dir, database_url), database_url)
    with db.session() as session:
        account = account_by_username(session, username)
        if account is None or not revoke_token(session, account, token_id):
            raise _fail(f"{username!r} has no active token with id {token_id}")
    typer.echo(f"Revoked token {token_id}.")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(1)


MIN_PASSWORD = 8


def password(
    username: Annotated[str, typer.Argument(help="The account (created if missing).")] = "admin",
    new_password: Annotated[
        str | None,
        typer.Option("--password", help="The new password (default: a random one, printed)."),
    ] = None,
    data_dir: ManagedDataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set the password an account signs in to the web pages with."""
    chosen = new_password if new_password is not None else secrets.token_urlsafe(12)
    if len(chosen) < MIN_PASSWORD:
        raise _fail(f"a password needs at least {MIN_PASSWORD} characters")
    db = open_database(managed_data_dir(data_dir, database_url), database_url)
    try:
        with db.session() as session:
            account = account_for_token(session, username)
            set_password(account, chosen)
            end_all_sessions(session, account)  # signed-in browsers must sign in again
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if new_password is None:
        typer.echo(chosen)
    else:
        typer.echo(f"Set the password of {username!r}.")
