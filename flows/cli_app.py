"""`aiship init` and `aiship config check`: an app repository's configuration, written and checked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from flows.app_config import CONFIG_FILE, AppConfig
from flows.errors import AishipError
from flows.settings import Settings

config_app = typer.Typer(help="aiship's configuration of an app: check it.", no_args_is_help=True)
apps_app = typer.Typer(help="The apps aiship delivers: register, list, forget.", no_args_is_help=True)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


class _NoTracebackForAishipErrors(logging.Filter):
    """An aiship error is a sentence that says what to do, printed once by the command; the console
    gets Prefect's log line about it without the traceback. The run's logs on the server keep it:
    Prefect's API handler, on the flow and task run loggers, has formatted the record already when
    it propagates to the root logger's console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AishipError):
            record.exc_info, record.exc_text = None, None
        return True


def run_flows_quietly() -> None:
    """Call before running a flow in this process (after Prefect set its logging up on import)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(isinstance(f, _NoTracebackForAishipErrors) for f in handler.filters):
            handler.addFilter(_NoTracebackForAishipErrors())


@apps_app.command("register")
def app_register(path: Annotated[Path, typer.Argument(help="The app's registration (TOML; see docs/operator.md).")]) -> None:
    """Check an app's registration (repository, models, environments) and keep it where every worker reads it."""
    from flows.apps import read_registration_file, register

    try:
        registration = register(read_registration_file(path), Settings())
    except AishipError as exc:
        _fail(exc)
    envs = ", ".join(f"{e.name} ({e.namespace}, NodePort {e.node_port})" for e in registration.environments.values())
    typer.echo(f"registered {registration.name}: {registration.repository}; models {', '.join(registration.models)}; {envs}")


@apps_app.command("list")
def app_list() -> None:
    """Print every app aiship delivers, with its repository, models and environments."""
    from flows.apps import all_apps
    from flows.environments import aligned

    try:
        apps = all_apps(Settings())
    except AishipError as exc:
        _fail(exc)
    rows = [("APP", "REPOSITORY", "MODELS", "ENVIRONMENTS")] + [
        (a.name, a.repository, ",".join(a.models), ",".join(f"{e.name}:{e.node_port}" for e in a.environments.values()))
        for a in apps]
    for line in aligned(rows):
        typer.echo(line)


@apps_app.command("remove")
def app_remove(name: Annotated[str, typer.Argument(help="The registered app to forget.")]) -> None:
    """Forget a registered app (what it runs in the cluster stays until removed there)."""
    from flows.apps import unregister

    typer.echo(f"forgot {name}" if unregister(name) else f"{name} was not registered (see `aiship app list`)")


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
    health_path: Annotated[str, typer.Option(help="Liveness path: 200 while the process is sound.")] = "/healthz",
    ready_path: Annotated[str, typer.Option(help="Readiness path: 200 once the model is loaded.")] = "/readyz",
    version_path: Annotated[str, typer.Option(help="JSON naming the git SHA and the model.")] = "/version",
    predict_path: Annotated[str, typer.Option(help="POST {\"instances\": [...]} -> {\"predictions\": [...]}.")] = "/predict",
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
            requirements=requirements, test_requirements=test_requirements, model_types=types,
            health_path=health_path, ready_path=ready_path, version_path=version_path, predict_path=predict_path)
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
    app_name: Annotated[str | None, typer.Option("--app", help="The app to check (default: the only app aiship delivers).")] = None,
    app_config: Annotated[Path | None, typer.Option("--app-config", exists=True, dir_okay=False, help="An aiship.toml to check instead of the app's at its branch.")] = None,
) -> None:
    """Validate the app's aiship.toml and its registration, then try every block and endpoint they name."""
    from flows.app_config import parse_app_config, require_name
    from flows.apps import app_named, config_at

    try:
        settings = Settings()
        registration = app_named(settings, app_name)
        config = (require_name(parse_app_config(app_config.read_text(), str(app_config)), registration.name, str(app_config))
                  if app_config else config_at(registration))
    except AishipError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    rows = [("aiship.toml", "ok", f"app {config.name}, port {config.serve.port}, {len(config.model.types)} model types"),
            ("registration", "ok", f"{registration.repository}; " + ", ".join(
                f"{e.name} -> {e.namespace}:{e.node_port}" for e in registration.environments.values())),
            _row("Prefect API", lambda: _prefect(settings)),
            _row("registry", lambda: _registry(settings, config)),
            _row("cluster", lambda: _cluster(settings)),
            _row("model store", lambda: _store(settings)),
            _row("webhook secret", lambda: _webhook_secret(settings))]
    from flows.environments import aligned

    for line in aligned(rows):
        typer.echo(line)
    if any(status != "ok" for _, status, _ in rows):
        raise typer.Exit(1)


# --- what the UI does, from the shell: promote (through the same approval), rollback, history ---

EnvOpt = Annotated[str, typer.Option("--env", help="The environment.")]


def promote_command(
    app_name: Annotated[str, typer.Argument(help="The app to promote.")],
    source: Annotated[str, typer.Option("--from", help="Where the tested digest serves.")] = "staging",
    target: Annotated[str, typer.Option("--to", help="Where it goes after approval.")] = "production",
) -> None:
    """Start the `promote` deployment for APP; it waits for approval (the UI, or `aiship approve RUN`)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from flows.apps import app_named

    try:
        app_named(Settings(), app_name)
        run = run_deployment("promote/promote", parameters={"app": app_name, "source_environment": source,
                                                          "target_environment": target}, timeout=0)
    except AishipError as exc:
        _fail(exc)
    except ObjectNotFound:
        _fail(AishipError("the Prefect deployment promote/promote is not registered; run `aiship deploy` first"))
    typer.echo(f"promotion of {app_name} {source} -> {target}: flow run {run.id}")
    typer.echo(f"approve it in the UI, or: aiship approve {run.id} --reviewer NAME [--reject] [--comment TEXT]")


def _approver_passphrase() -> Callable[[], str] | None:
    """Where a protected approver key's passphrase comes from: the environment, else the terminal;
    never a command-line argument, which other users' `ps` would show."""
    import getpass
    import os

    if "AISHIP_APPROVER_PASSPHRASE" in os.environ:
        return lambda: os.environ["AISHIP_APPROVER_PASSPHRASE"]
    return (lambda: getpass.getpass("approver key passphrase: ")) if sys.stdin.isatty() else None


def approve_command(
    run_id: Annotated[str, typer.Argument(help="The paused promote run.")],
    reviewer: Annotated[str, typer.Option(help="Who decides (recorded in the run's artifact).")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve.")] = False,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    key: Annotated[Path | None, typer.Option(help="The reviewer's ed25519 private key, to sign the answer (needed when the app's registration lists approver_keys; a passphrase is read from AISHIP_APPROVER_PASSPHRASE or asked).")] = None,
    print_signature: Annotated[bool, typer.Option("--print-signature", help="Print the signature to paste into the UI's form instead of answering.")] = False,
    wait: Annotated[int, typer.Option(help="Seconds to wait for the run to reach its pause first.")] = 120,
) -> None:
    """Answer a promotion waiting for approval, as the UI's form does."""
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from prefect.exceptions import ObjectNotFound

    from flows.apps import app_named
    from flows.approvals import Approval, private_key, refusal, sign

    try:
        flow_run_id = UUID(run_id)
    except ValueError:
        _fail(AishipError(f"{run_id!r} is not a flow run id; `aiship promote APP` prints the id of the run to approve"))
    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        try:
            while not (state := client.read_flow_run(flow_run_id).state) or not state.is_paused():
                if (state and state.is_final()) or time.monotonic() > deadline:
                    _fail(AishipError(f"flow run {run_id} is {state.name if state else 'unknown'}, not waiting for "
                                      "approval; start a new promotion with `aiship promote APP`"))
                time.sleep(1)
        except ObjectNotFound:
            _fail(AishipError(f"no flow run {run_id} on this Prefect server; check PREFECT_API_URL and the id"))
        # The run would log the answer and keep waiting; saying so here is kinder.
        app = client.read_flow_run(flow_run_id).parameters.get("app")
        try:
            registration = app_named(Settings(), app)
            signature = sign(private_key(key, _approver_passphrase()), flow_run_id, not reject, reviewer, comment) if key else ""
        except AishipError as exc:
            _fail(exc)
        answer = Approval(approve=not reject, reviewer=reviewer, comment=comment, signature=signature)
        why = refusal(answer, flow_run_id, registration.approvers, registration.approver_keys)
        if why:
            fix = ("give --key with the reviewer's private key" if registration.approver_keys else
                   "answer as one of them, or add the reviewer to the app's registration (approvers) and register it again")
            _fail(AishipError(f"{why}; {fix}"))
        if print_signature:
            typer.echo(signature)
            return
        result = client.resume_flow_run(flow_run_id, run_input=answer.model_dump())
    if result.status.value != "ACCEPT":
        _fail(AishipError(f"the server did not take the answer: {result.details}"))
    typer.echo(f"{'rejected' if reject else 'approved'} by {reviewer}{' (signed)' if signature else ''}: flow run {run_id} resumes")


def rollback_command(
    app_name: Annotated[str, typer.Argument(help="The app to roll back.")],
    environment: EnvOpt = "staging",
    to: Annotated[str | None, typer.Option("--to", help="The digest to go back to (default: the one that served before).")] = None,
) -> None:
    """Roll APP back in an environment to a digest that served there before, without building."""
    from flows.promote import rollback

    run_flows_quietly()
    try:
        result = rollback(environment, to, app_name)
    except AishipError as exc:
        _fail(exc)
    typer.echo(f"{app_name} serves {result.digest} in {result.environment} again (was {result.previous_digest}) at {result.address}")


def history_command(app_name: Annotated[str, typer.Argument(help="The app.")], environment: EnvOpt = "staging") -> None:
    """Print every revision of APP in an environment: digest, git SHA, model version, when, by which run."""
    from flows import environments
    from flows.apps import app_named

    settings = Settings()
    try:
        env = app_named(settings, app_name).environment(environment)
        api_client = environments.kubernetes_client(settings)
        try:
            entries = environments.history(api_client, env, app_name)
        finally:
            api_client.close()
    except AishipError as exc:
        _fail(exc)
    for line in environments.history_lines(entries):
        typer.echo(line)
