"""`modelyard serve` and `modelyard token`: run the platform, manage API tokens locally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from modelyard.runtime.home import modelyard_home
from modelyard.settings import RateLimits, Settings
from modelyard.store.accounts import (
    account_by_username,
    account_for_token,
    ensure_admin,
    issue_token,
    list_tokens,
    revoke_token,
)
from modelyard.store.database import Database

DataDir = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Database, blobs and packages. Default: $MODELYARD_HOME/data."),
]


def data_dir_or_default(data_dir: Path | None) -> Path:
    return (data_dir or modelyard_home() / "data").expanduser().resolve()


def open_database(data_dir: Path, database_url: str | None = None) -> Database:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    return db


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: DataDir = None,
    public_url: Annotated[
        Optional[str], typer.Option(help="The URL clients reach this server at.")
    ] = None,
    database_url: Annotated[
        Optional[str], typer.Option(help="SQLAlchemy URL. Default: SQLite in the data folder.")
    ] = None,
    ssl_certfile: Annotated[Optional[Path], typer.Option(help="Serve https with this cert.")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option(help="The certificate's key.")] = None,
    max_instances: Annotated[int, typer.Option(help="Instances per version at most.")] = 1,
    idle_timeout: Annotated[float, typer.Option(help="Seconds before an idle instance stops.")] = 300.0,
    admin: Annotated[str, typer.Option(help="The first account's username.")] = "admin",
    upload_limit: Annotated[int, typer.Option(help="Largest Files API upload, bytes.")] = (
        100 * 1024 * 1024
    ),
    file_expiry: Annotated[float, typer.Option(help="Seconds an uploaded file lives.")] = 86400.0,
    output_expiry: Annotated[
        Optional[float], typer.Option(help="Seconds output files live (default: kept).")
    ] = None,
    creates_per_minute: Annotated[
        int, typer.Option(help="Prediction creates per account a minute (0: no limit).")
    ] = 600,
    requests_per_minute: Annotated[
        int, typer.Option(help="Other requests per account a minute (0: no limit).")
    ] = 3000,
    webhook_retry_delays: Annotated[
        str, typer.Option(help="Seconds between tries of a final webhook, comma-separated.")
    ] = "1,2,4,8,16,30",
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between SSE heartbeats.")] = 15.0,
    deny_private_urls: Annotated[
        bool,
        typer.Option(help="Refuse webhooks and file-input URLs to private addresses (shared servers)."),
    ] = False,
) -> None:
    """Run the API, the engine and the web pages on one port."""
    import uvicorn

    from modelyard.api.app import create_app

    folder = data_dir_or_default(data_dir)
    scheme = "https" if ssl_certfile else "http"
    settings = Settings(
        data_dir=folder,
        public_url=public_url or f"{scheme}://{host}:{port}",
        database_url=database_url,
        max_instances=max_instances,
        idle_timeout=idle_timeout,
        upload_limit=upload_limit,
        file_expiry=file_expiry,
        output_expiry=output_expiry,
        rate_limits=RateLimits(creates_per_minute, requests_per_minute),
        webhook_retry_delays=_delays(webhook_retry_delays),
        heartbeat_interval=heartbeat_interval,
        allow_private_urls=not deny_private_urls,
    )
    db = open_database(folder, database_url)
    with db.session() as session:
        issued = ensure_admin(session, admin)
    db.dispose()
    if issued is not None:
        typer.echo(f"Created the account {admin!r} and an API token (shown only now):\n")
        typer.echo(f"    export REPLICATE_API_TOKEN={issued.token}")
        typer.echo(f"    export REPLICATE_BASE_URL={settings.public_url}\n")
        typer.echo("The official clients then work unchanged; `modelyard token` makes more.")
    typer.echo(f"Modelyard is serving at {settings.public_url} (data in {folder})", err=True)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )


token_app = typer.Typer(help="Create, list and revoke API tokens (on this machine's database).")


@token_app.command("create")
def token_create(
    username: Annotated[
        str, typer.Option(help="The account; created if missing (the first one is the admin).")
    ] = "admin",
    name: Annotated[str, typer.Option(help="A label for the token.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Print a new token for an account."""
    db = open_database(data_dir_or_default(data_dir))
    with db.session() as session:
        account = account_for_token(session, username)
        issued = issue_token(session, account, name)
    typer.echo(issued.token)


@token_app.command("list")
def token_list(
    username: Annotated[str, typer.Option(help="The account.")] = "admin",
    data_dir: DataDir = None,
) -> None:
    """The account's tokens: id, first characters, name, created, revoked."""
    db = open_database(data_dir_or_default(data_dir))
    with db.session() as session:
        account = account_by_username(session, username)
        if account is None:
            raise _fail(f"no account named {username!r}")
        for token in list_tokens(session, account):
            revoked = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "active"
            typer.echo(f"{token.id}\t{token.hint}…\t{token.name or '-'}\t"
                       f"{token.created_at:%Y-%m-%d %H:%M}\t{revoked}")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id `modelyard token list` shows.")],
    username: Annotated[str, typer.Option(help="The account.")] = "admin",
    data_dir: DataDir = None,
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    db = open_database(data_dir_or_default(data_dir))
    with db.session() as session:
        account = account_by_username(session, username)
        if account is None or not revoke_token(session, account, token_id):
            raise _fail(f"{username!r} has no active token with id {token_id}")
    typer.echo(f"Revoked token {token_id}.")


def _delays(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of seconds") from None


def _fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(1)
