"""`modelyard serve`: the API, the engine and the web pages on one port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.exc import IntegrityError

from modelyard.runtime.home import modelyard_home
from modelyard.settings import RateLimits, Settings
from modelyard.store.accounts import ensure_admin, is_reserved
from modelyard.store.database import Database, DatabaseInUse, hold_sqlite

from .datadir import remember_served
from .listen import ListenError, bind

if TYPE_CHECKING:
    import uvicorn


#: Seconds an idle keep-alive connection stays open (see `serve`).
KEEP_ALIVE_S = 75


class BackendChoice(StrEnum):
    local = "local"
    ray = "ray"


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Database, blobs and packages. Default: $MODELYARD_HOME/data."),
]


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="SQLAlchemy URL, e.g. postgresql+psycopg://… Default: SQLite in the data folder."
    ),
]
# The SQLite lock of this process (`hold_sqlite`): open until the process ends.
_held: list[object] = []


def data_dir_or_default(data_dir: Path | None) -> Path:
    return (data_dir or modelyard_home() / "data").expanduser().resolve()


def open_database(data_dir: Path, database_url: str | None = None) -> Database:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    if database_url is None:  # SQLite in the folder; another database needs no folder here
        data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    return db


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: DataDir = None,
    public_url: Annotated[
        str | None, typer.Option(help="The URL clients reach this server at.")
    ] = None,
    database_url: DatabaseUrl = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="Serve https with this cert.")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="The certificate's key.")] = None,
    max_instances: Annotated[int, typer.Option(help="Instances per version at most.")] = 1,
    idle_timeout: Annotated[
        float, typer.Option(help="Seconds before an idle instance stops.")
    ] = 300.0,
    admin: Annotated[str, typer.Option(help="The first account's username.")] = "admin",
    upload_limit: Annotated[int, typer.Option(help="Largest Files API upload, bytes.")] = (
        100 * 1024 * 1024
    ),
    package_limit: Annotated[
        int, typer.Option(help="Largest pushed package archive, bytes (docs/push.md).", min=1)
    ] = Settings.package_limit,
    package_max_entries: Annotated[
        int, typer.Option(help="Most files and folders a pushed package may hold.", min=1)
    ] = Settings.package_max_entries,
    package_max_expanded: Annotated[
        int, typer.Option(help="Most bytes of files a pushed package may unpack to.", min=1)
    ] = Settings.package_max_expanded,
    file_expiry: Annotated[float, typer.Option(help="Seconds an uploaded file lives.")] = 86400.0,
    output_expiry: Annotated[
        float | None, typer.Option(help="Seconds output files live (default: kept).")
    ] = None,
    data_retention: Annotated[
        float | None,
        typer.Option(
            help="Seconds after it finishes that an API prediction's input, output, logs and "
            "output files are removed (default: kept; Replicate: 3600).",
            min=0,
        ),
    ] = None,
    web_data_retention: Annotated[
        float | None,
        typer.Option(help="The same for predictions made on the web pages (default: kept).", min=0),
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
    heartbeat_interval: Annotated[
        float, typer.Option(help="Seconds between SSE heartbeats.")
    ] = 15.0,
    catalog: Annotated[
        bool, typer.Option(help="Register the starter models (models/) on start.")
    ] = True,
    catalog_owner: Annotated[str, typer.Option(help="The account that owns them.")] = "modelyard",
    catalog_dir: Annotated[
        Path | None, typer.Option(help="Where the starter models are (default: models/).")
    ] = None,
    storage_url: Annotated[
        str | None,
        typer.Option(help="Blobs: a folder or s3://bucket/prefix (default: the data folder)."),
    ] = None,
    backend: Annotated[
        BackendChoice, typer.Option(help="Where model instances run: local processes or Ray.")
    ] = BackendChoice.local,
    ray_address: Annotated[
        str | None, typer.Option(help="The Ray cluster to join (with --backend ray).")
    ] = None,
    hardware_file: Annotated[
        Path | None, typer.Option(help="A YAML file overriding the hardware table's SKUs.")
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="This machine's GPUs for local instances: auto (nvidia-smi), none, indexes "
            "or UUIDs ('0,1'), or declared ones ('0:t4,1:t4'); docs/hardware.md."
        ),
    ] = None,
    placement_timeout: Annotated[
        float, typer.Option(help="Seconds an instance waits for a machine offering its SKU.")
    ] = 600.0,
    lease_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds a replica's lease on its predictions lasts unrenewed "
            "(replicas on PostgreSQL: docs/replicas.md)."
        ),
    ] = 15.0,
    healthcheck_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between each instance's healthcheck() (0: never); docs/platform.md.",
            envvar="MODELYARD_HEALTHCHECK_INTERVAL",
            min=0,
        ),
    ] = Settings.healthcheck_interval,
    healthcheck_replace_after: Annotated[
        int,
        typer.Option(
            help="Failed healthchecks in a row that replace an instance (0: never).",
            envvar="MODELYARD_HEALTHCHECK_REPLACE_AFTER",
            min=0,
        ),
    ] = Settings.healthcheck_replace_after,
    deny_private_urls: Annotated[
        bool,
        typer.Option(
            help="Refuse webhooks and file-input URLs to private addresses (shared servers)."
        ),
    ] = False,
    sandbox: Annotated[
        bool,
        typer.Option(
            help="Run every model worker in a bubblewrap sandbox (docs/security.md); "
            "--no-sandbox only for trusted models on machines without user namespaces."
        ),
    ] = True,
    sandbox_share: Annotated[
        list[Path] | None,
        typer.Option(
            help="A folder every sandboxed worker may read, at the same path (a shared cache "
            "of weights, say); repeatable. It widens the sandbox: docs/security.md.",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ] = None,
) -> None:
    """Run the API, the engine and the web pages on one port."""
    import uvicorn

    from modelyard.engine.catalog import default_catalog_dir
    from modelyard.logs import logging_config
    from modelyard.platform import build_app

    for username in (admin, catalog_owner):
        if is_reserved(username):
            typer.echo(f"Error: the username {username!r} is reserved (a path of the API or "
                       "the web pages)", err=True)  # fmt: skip
            raise typer.Exit(1)
    # The port first: a server that cannot listen must not create an account, print a token
    # and a password, then fail. The socket bound here is the one uvicorn serves on.
    try:
        listener = bind(host, port)
    except ListenError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    folder = data_dir_or_default(data_dir)
    scheme = "https" if ssl_certfile else "http"
    settings = Settings(
        data_dir=folder,
        public_url=public_url or f"{scheme}://{host}:{port}",
        database_url=database_url,
        max_instances=max_instances,
        idle_timeout=idle_timeout,
        upload_limit=upload_limit,
        package_limit=package_limit,
        package_max_entries=package_max_entries,
        package_max_expanded=package_max_expanded,
        file_expiry=file_expiry,
        output_expiry=output_expiry,
        data_retention=data_retention,
        web_data_retention=web_data_retention,
        rate_limits=RateLimits(creates_per_minute, requests_per_minute),
        webhook_retry_delays=_delays(webhook_retry_delays),
        heartbeat_interval=heartbeat_interval,
        allow_private_urls=not deny_private_urls,
        catalog_dir=(catalog_dir or default_catalog_dir()) if catalog else None,
        catalog_owner=catalog_owner,
        storage_url=storage_url,
        backend=backend.value,
        ray_address=ray_address,
        hardware_file=hardware_file,
        gpus=gpus,
        placement_timeout=placement_timeout,
        lease_ttl=lease_ttl,
        healthcheck_interval=healthcheck_interval,
        healthcheck_replace_after=healthcheck_replace_after,
    )
    _preflight(settings)
    if settings.backend == "local":
        _sandbox_preflight(sandbox, sandbox_share or [])
    _hold_database(settings)
    db = open_database(folder, database_url)
    if database_url is None:  # `modelyard token`/`password` then manage this folder's database
        remember_served(folder)
    password = secrets.token_urlsafe(12)
    try:
        with db.session() as session:
            issued = ensure_admin(session, admin, password)
    except IntegrityError:  # a replica starting beside this one made the admin first
        issued = None
    db.dispose()
    if issued is not None:
        typer.echo(f"Created the account {admin!r} and an API token (shown only now):\n")
        typer.echo(f"    export REPLICATE_API_TOKEN={issued.token}")
        typer.echo(f"    export REPLICATE_BASE_URL={settings.public_url}\n")
        typer.echo("The official clients then work unchanged; `modelyard token` makes more.")
        typer.echo(f"Sign in to the web pages at {settings.public_url}/signin as {admin!r} with "
                   f"the password {password} (`modelyard password` changes it).")  # fmt: skip
    typer.echo(f"Modelyard is serving at {settings.public_url} (data in {folder})", err=True)
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        log_level="warning",
        log_config=logging_config(),  # repeated warnings and errors rate-limited (logs.py)
        loop="uvloop",
        http="httptools",
        # Longer than any client keeps an idle connection (httpx, and so both Replicate
        # clients, 5 s; browsers and proxies up to 60 s): at uvicorn's own 5 s the server could
        # close a connection just as a client sent its next request on it, which the client
        # sees as a connection closed without a reply.
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=5,
    )
    _serve(config, app.state.platform.stopping, listener)


def _serve(
    config: uvicorn.Config, stopping: asyncio.Event, listener: socket.socket | None = None
) -> None:
    """uvicorn's server, setting `stopping` (`Platform.stopping`) as soon as a stop begins, while
    connections are still open: waits held by `Prefer: wait` then answer instead of being cut."""
    import uvicorn

    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def stop(sig: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # no loop yet: nothing waits
            asyncio.get_running_loop().call_soon_threadsafe(stopping.set)
        handle_exit(sig, frame)

    server.handle_exit = stop  # type: ignore[method-assign]  # uvicorn installs it as the handler
    server.run(sockets=[listener] if listener is not None else None)


def _hold_database(settings: Settings) -> None:
    """On SQLite, lock the database for this process's life: a second server on the same data
    folder refuses to start, in one line, instead of running everything twice."""
    try:
        held = hold_sqlite(settings.db_url)
    except DatabaseInUse as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    if held is not None:
        _held.append(held)


def _preflight(settings: Settings) -> None:
    """Read what the settings point at before anything is written or printed: a wrong storage
    URL or unreachable bucket, a malformed hardware file or a bad `--gpus` is one line and exit
    status 1, not a traceback after the token."""
    from modelyard.billing.hardware import HardwareFileError, load_hardware
    from modelyard.engine.gpus import GpuConfigError, parse_gpus_setting
    from modelyard.store.blobs import BadStorageURL, StorageUnreachable, open_blob_store

    try:
        load_hardware(settings.hardware_file)
        if settings.backend == "local":
            parse_gpus_setting(settings.gpus)
        else:
            _check_ray(settings.ray_address)
        open_blob_store(settings.storage_url, settings.blob_dir)  # last: a folder is made
    except (
        BadStorageURL,
        StorageUnreachable,
        HardwareFileError,
        GpuConfigError,
        _RayUnusable,
    ) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None


def _sandbox_preflight(wanted: bool, shared: list[Path]) -> None:
    """With the sandbox: refuse to start, in one line, where bubblewrap cannot run. Without:
    say so loudly, and tell the workers (runtime/sandbox.py reads the variables)."""
    from modelyard.runtime import sandbox

    if not wanted:
        os.environ[sandbox.SANDBOX_ENV] = "off"
        typer.echo(sandbox.loud_warning(), err=True)
        return
    os.environ.pop(sandbox.SANDBOX_ENV, None)
    os.environ[sandbox.SHARED_ENV] = os.pathsep.join(map(str, shared))
    reason = sandbox.unavailable_reason()
    if reason is not None:
        typer.echo(
            f"Error: cannot sandbox model workers: {reason}; install bubblewrap "
            "(apt-get install bubblewrap) or pass --no-sandbox",
            err=True,
        )
        raise typer.Exit(1)


class _RayUnusable(Exception):
    """`--backend ray` cannot work: Ray is not installed, or its head does not answer."""


def _check_ray(address: str | None) -> None:
    """Ray is installed and the head's port answers (joining the cluster itself happens when
    the app is built; this only turns the usual mistakes into one line)."""
    import importlib.util
    import socket

    if importlib.util.find_spec("ray") is None:
        raise _RayUnusable("the Ray backend needs Ray: pip install 'modelyard[ray]'")
    if not address or address == "auto":
        return  # a node of the cluster on this machine: Ray finds it
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise _RayUnusable(f"--ray-address {address!r} is not host:port (the Ray head's GCS)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise _RayUnusable(f"cannot reach the Ray head at {address}: {exc}") from None


def _delays(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of seconds") from None
