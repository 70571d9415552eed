"""Which data folder `modelyard token` and `modelyard password` manage when no `--data-dir` is
given: the one the last `modelyard serve` on this machine served (it writes it down in
`$MODELYARD_HOME/last-data-dir`), else `$MODELYARD_HOME/data`.

The README starts the server with `--data-dir ./data`; without this, a token made afterwards
went into another folder's database and answered 401.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from modelyard.runtime.home import modelyard_home

RECORD = "last-data-dir"

ManagedDataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The server's data folder. Default: the one the last `modelyard serve` served, "
        "else $MODELYARD_HOME/data.",
        show_default=False,
    ),
]


def default_data_dir() -> Path:
    return (modelyard_home() / "data").expanduser().resolve()


def remember_served(folder: Path) -> None:
    """Write down the folder a server is serving (best effort: a read-only home only loses
    the convenience)."""
    with contextlib.suppress(OSError):
        home = modelyard_home()
        home.mkdir(parents=True, exist_ok=True)
        (home / RECORD).write_text(f"{folder}\n")


def last_served() -> Path | None:
    """The folder the last `modelyard serve` served, if it still holds a database."""
    try:
        text = (modelyard_home() / RECORD).read_text().strip()
    except OSError:
        return None
    folder = Path(text) if text else None
    return folder if folder is not None and folder.is_dir() else None


def managed_data_dir(data_dir: Path | None, database_url: str | None) -> Path:
    """`--data-dir`; else (without `--database-url`) the last served folder, said on stderr
    when it is not the default; else the default."""
    if data_dir is not None:
        return data_dir.expanduser().resolve()
    default = default_data_dir()
    served = last_served() if database_url is None else None
    if served is None or served == default:
        return default
    typer.echo(
        f"Using {served}, the data folder of the last `modelyard serve` "
        "(--data-dir chooses another)",
        err=True,
    )
    return served
