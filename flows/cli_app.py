"""`aiship init` and `aiship config check`: an app repository's configuration, written and checked."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from flows.app_config import CONFIG_FILE, AppConfig, read_app_config
from flows.errors import AishipError
from flows.settings import Settings

config_app = typer.Typer(help="aiship's configuration of an app: check it.", no_args_is_help=True)


def _ask(value, question: str, default):
    """A flag's value, else the answer to `question` on a terminal, else the default."""
    if value is not None:
        return value
    return typer.prompt(question, default=default) if sys.stdin.isatty() else default


def init_command(
    repo: Annotated[Path, typer.Argument(help="The app's repository (default: here).")] = Path("."),
    name: Annotated[str | None, typer.Option(help="The app's name (lower-case letters, digits, '-').")] = None,
    wsgi: Annotated[str | None, typer.Option(help="What gunicorn serves, module:callable (e.g. 'app:create_app()').")] = None,
    port: Annotated[int | None, typer.Option(help="The port the app listens on in its container.")] = None,
    code_dir: Annotated[str | None, typer.Option(help="The folder of the app's code, copied into the image.")] = None,
    tests_dir: Annotated[str | None, typer.Option(help="The folder of the app's tests.")] = None,
    requirements: Annotated[str, typer.Option(help="The app's pinned requirements file.")] = "requirements.txt",
    test_requirements: Annotated[str, typer.Option(help="What the tests need on top of them.")] = "requirements-test.txt",
    model: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="A model file (skops) the app loads: its types become [model] types.")] = None,
    model_types: Annotated[str | None, typer.Option(help="Comma-separated types the app's loader accepts (instead of --model).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an aiship.toml or Dockerfile that says something else.")] = False,
) -> None:
    """Write aiship.toml (and a Dockerfile in aiship's layer order, where the app has none), then print what to do next."""
    from flows.init import InitAnswers, init_repository
    from flows.model_store.base import schema_types

    repo = repo.resolve()
    try:
        types = tuple(sorted(schema_types(model))) if model else tuple(t.strip() for t in (model_types or "").split(",") if t.strip())
        if not types:
            raise AishipError("the app's model types are needed: pass --model FILE.skops (a model it loads) or --model-types")
        answers = InitAnswers(
            name=_ask(name, "app name", repo.name.lower().replace("_", "-")),
            wsgi=_ask(wsgi, "WSGI app (module:callable)", "app:app"), port=int(_ask(port, "port", 8080)),
            code_dir=_ask(code_dir, "code folder", "app"), tests_dir=_ask(tests_dir, "tests folder", "tests"),
            requirements=requirements, test_requirements=test_requirements, model_types=types)
        written = init_repository(repo, answers, force)
    except AishipError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for item in written:
        typer.echo(f"{item.action:<10} {item.path}")
    typer.echo("next:")
    typer.echo(f"  git -C {repo} add {CONFIG_FILE} Dockerfile && git -C {repo} commit -m 'Deliver with aiship'")
    typer.echo(f"  aiship model publish MODEL_DIR --name MODEL --app-config {repo / CONFIG_FILE}")
    typer.echo("  aiship deliver MODEL")


def _row(what: str, check: Callable[[], str]) -> tuple[str, str, str]:
    try:
        return what, "ok", check()
    except Exception as exc:  # every failure becomes a row: the table shows all that does not answer
        return what, "FAILED", f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def _prefect(settings: Settings) -> str:
    import os

    import httpx

    url = os.environ.get("PREFECT_API_URL", settings.prefect_api_url)
    httpx.get(f"{url}/health", timeout=5).raise_for_status()
    return url


def _registry(settings: Settings, config: AppConfig) -> str:
    from flows.distribution import RegistryAPI
    from flows.registry import load_credentials

    with RegistryAPI(f"{settings.registry_host}/{config.name}", load_credentials(settings.registry_credentials_block)) as api:
        api.manifest("aiship-config-check")  # None when absent: the registry answered and took the credentials
    return f"{settings.registry_host} with block {settings.registry_credentials_block!r}"


def _cluster(settings: Settings) -> str:
    from kubernetes import client

    from flows.environments import kubernetes_client

    api_client = kubernetes_client(settings)
    try:
        version = client.VersionApi(api_client).get_code()
    finally:
        api_client.close()
    return f"Kubernetes {version.git_version} with block {settings.kubernetes_credentials_block!r}"


def _store(settings: Settings) -> str:
    from flows.model_store import get_store

    names = get_store(settings).names()
    return f"{settings.model_store} store, {len(names)} model(s)"


def _webhook_secret(settings: Settings) -> str:
    from flows.webhooks import load_secret

    load_secret(settings.webhook_secret_block)
    return f"Secret block {settings.webhook_secret_block!r} (value not shown)"


@config_app.command("check")
def config_check(
    app_config: Annotated[Path | None, typer.Option("--app-config", exists=True, dir_okay=False, help="An aiship.toml to check (default: the registered app's, at main of its repository).")] = None,
) -> None:
    """Validate the app's aiship.toml and aiship's settings, then try every block and endpoint they name."""
    from flows.apps import config_at

    try:
        settings = Settings()
        config = read_app_config(app_config.parent, str(app_config)) if app_config else config_at(settings)
    except AishipError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    rows = [("aiship.toml", "ok", f"app {config.name}, port {config.serve.port}, {len(config.model.types)} model types"),
            ("environments", "ok", ", ".join(f"{e.name} -> {e.namespace}:{e.node_port}" for e in settings.environments.values())),
            _row("Prefect API", lambda: _prefect(settings)),
            _row("registry", lambda: _registry(settings, config)),
            _row("cluster", lambda: _cluster(settings)),
            _row("model store", lambda: _store(settings)),
            _row("webhook secret", lambda: _webhook_secret(settings))]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if any(status != "ok" for _, status, _ in rows):
        raise typer.Exit(1)
