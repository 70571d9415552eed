"""The `modelyard` command: every subcommand turns known errors into one line on stderr."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from modelyard import __version__
from modelyard.cogspec.config import load_config
from modelyard.cogspec.errors import CogSpecError
from modelyard.cogspec.inputs import InputValidationError
from modelyard.cogspec.schema import predictor_schema
from modelyard.engine.examples import ExampleError
from modelyard.runtime.downloads import InputFileError
from modelyard.runtime.environment import EnvironmentBuildError
from modelyard.runtime.package import PackageError
from modelyard.runtime.runner import SetupFailed

from .inputs import InputOptionError
from .predict import Interrupted, PredictOptions, run_predict, stderr, warn_ignored_keys
from .push import PushError, PushOptions, run_push
from .record import record_example
from .remote_train import RemoteTrainOptions, run_remote_train
from .serve import serve as serve_command
from .tokens import password, token_app

app = typer.Typer(
    name="modelyard",
    help="Run Cog models without Docker.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"modelyard {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Run Cog models without Docker."""


def fail(message: str) -> None:
    """Print `Error: message` and exit 1 (no traceback: these are the user's errors, not ours)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


PackageDir = Annotated[
    Path, typer.Argument(help="The Cog package: a folder with cog.yaml.", show_default=False)
]


InputOptions = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="An input as name=value; @path for a file."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
OutputDir = Annotated[
    Path, typer.Option("--output-dir", "-o", help="Where output files are written.")
]


@app.command()
def predict(
    package_dir: PackageDir = Path("."),
    input: InputOptions = None,
    as_json: AsJson = False,
    output_dir: OutputDir = Path("."),
    setup_timeout: Annotated[
        float | None, typer.Option(help="Seconds setup() may take.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds the prediction may take.")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Weights passed to setup(weights=...).")
    ] = None,
) -> None:
    """Run one prediction, streaming its output, and print the result."""
    _run(
        PredictOptions(
            package_dir,
            input or [],
            as_json,
            output_dir,
            setup_timeout=setup_timeout,
            timeout=timeout,
            weights=weights,
        )
    )


ApiOption = Annotated[
    str | None,
    typer.Option(
        help="The API base URL (default: $MODELYARD_API_URL, $REPLICATE_BASE_URL or "
        "http://127.0.0.1:8000).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        help="The API token (default: $MODELYARD_API_TOKEN or $REPLICATE_API_TOKEN).",
        show_default=False,
    ),
]


@app.command()
def train(
    package_dir: PackageDir = Path("."),
    input: InputOptions = None,
    as_json: AsJson = False,
    output_dir: OutputDir = Path("."),
    destination: Annotated[
        str | None,
        typer.Option(
            "--destination",
            "-d",
            help="Train on the server into this model (owner/name): the package is pushed "
            "there, and the training's new version printed.",
            show_default=False,
        ),
    ] = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Run the package's train: locally and write the weights, or on a server with -d."""
    if destination is None:
        _run(PredictOptions(package_dir, input or [], as_json, output_dir, mode="train"))
        return
    try:
        code = run_remote_train(
            RemoteTrainOptions(package_dir, input or [], destination, api=api, token=token)
        )
    except (CogSpecError, PackageError, PushError, InputOptionError) as exc:
        fail(str(exc))
    except httpx.HTTPError as exc:
        fail(f"could not reach the server: {exc}")
    except KeyboardInterrupt:  # before the training started: nothing to cancel
        typer.echo("Error: interrupted", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _run(options: PredictOptions) -> None:
    if not options.package_dir.is_dir():
        fail(f"{options.package_dir} is not a folder")
    try:
        code = run_predict(options)
    except (
        CogSpecError,
        InputOptionError,
        InputFileError,
        EnvironmentBuildError,
        ValueError,
    ) as exc:
        fail(str(exc))
    except InputValidationError as exc:
        fail(f"invalid input: {exc}")
    except SetupFailed as exc:
        fail(f"setup failed: {exc}")
    except (Interrupted, KeyboardInterrupt):
        typer.echo("Error: interrupted", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def schema(package_dir: PackageDir = Path(".")) -> None:
    """Print the package's OpenAPI schema (read from source; nothing is installed)."""
    try:
        config = load_config(package_dir.resolve())
        warn_ignored_keys(config)
        document = predictor_schema(package_dir.resolve(), config)
    except CogSpecError as exc:
        fail(str(exc))
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command()
def push(
    package_dir: Annotated[
        Path, typer.Argument(help="The Cog package: a folder with cog.yaml.", show_default=False)
    ],
    model: Annotated[str, typer.Argument(help="The model to push to: owner/name.")],
    api: ApiOption = None,
    token: TokenOption = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check the server's TLS certificate.")
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="As an admin, push into another account's model (its users then run this "
            "version).",
        ),
    ] = False,
) -> None:
    """Check and pack the package, then upload it as a version of owner/name."""
    try:
        run_push(PushOptions(package_dir, model, api=api, token=token, verify=verify, force=force))
    except (CogSpecError, PackageError, PushError) as exc:
        fail(str(exc))


@app.command("record-example")
def record_example_command(
    package_dirs: Annotated[
        list[Path],
        typer.Argument(help="Catalog packages, each with example/input.json.", show_default=False),
    ],
) -> None:
    """Run each package's example input and save its output and a cover image next to it."""
    for package_dir in package_dirs:
        if not (package_dir / "cog.yaml").is_file():
            fail(f"{package_dir} is not a Cog package (no cog.yaml)")
        try:
            recorded = asyncio.run(record_example(package_dir.resolve(), say=stderr))
        except (CogSpecError, EnvironmentBuildError, ExampleError, ValueError) as exc:
            fail(str(exc))
        except InputValidationError as exc:
            fail(f"{package_dir}: example/input.json: invalid input: {exc}")
        except SetupFailed as exc:
            fail(f"setup failed: {exc}")
        seconds = f"{recorded.predict_time:.2f} s" if recorded.predict_time is not None else "?"
        typer.echo(f"{package_dir.name}: {recorded.output_json} and {recorded.cover} ({seconds})")


app.command()(serve_command)
app.add_typer(token_app, name="token")
app.command()(password)


if __name__ == "__main__":
    app()
