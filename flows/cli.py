"""The `aiship` command: the local platform, the model store, and what serves where."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.errors import AishipError
from flows.settings import Settings

app = typer.Typer(help="aiship: continuous delivery of AI applications.", no_args_is_help=True)
local_app = typer.Typer(help="The local platform: Docker, registry, stores, Prefect, Kubernetes.", no_args_is_help=True)
app.add_typer(local_app, name="local")


def fail(exc: Exception) -> None:
    """Prints an aiship error as one line and exits 1."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


PartsArg = Annotated[list[str] | None, typer.Argument(help="Parts to act on (default: all).")]


@local_app.command("up")
def local_up(parts: PartsArg = None) -> None:
    """Install, start and wait for the parts of the local platform."""
    from flows import local_platform

    settings = Settings()
    try:
        local_platform.up(parts or [], settings)
    except AishipError as exc:
        fail(exc)
    print_status(local_platform.status(settings, parts), settings)


@local_app.command("down")
def local_down(parts: PartsArg = None) -> None:
    """Stop the parts of the local platform (only what `up` started)."""
    from flows import local_platform

    settings = Settings()
    try:
        local_platform.down(parts or [], settings)
    except AishipError as exc:
        fail(exc)


@local_app.command("status")
def local_status() -> None:
    """Print part, state, address, pid and version of each part."""
    from flows import local_platform

    settings = Settings()
    try:
        rows = local_platform.status(settings)
    except AishipError as exc:
        fail(exc)
    print_status(rows, settings)


def print_status(rows, settings: Settings) -> None:
    """Prints the status table, then the kubeconfig path and NodePort range."""
    header = ("PART", "STATE", "ADDRESS", "PID", "VERSION")
    table = [header] + [(r.part, r.state, r.address, r.pid, r.version) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    typer.echo(f"kubeconfig: {settings.state_dir / 'kubernetes' / 'kubeconfig'}")
    typer.echo("NodePorts:  127.0.0.1:16100-16199")


# --- aiship model ... (the model store's commands) ---


def main() -> None:
    """Entry point of the `aiship` console script."""
    app()
