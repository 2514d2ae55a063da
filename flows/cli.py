"""The `aiship` command: the local platform, the model store, and what serves where."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.errors import AishipError, MalformedManifestError
from flows.settings import Settings, use_local_prefect

from flows.cli_app import (apps_app, approve_command, config_app, history_command, init_command, promote_command, rollback_command,
                             run_flows_quietly)

app = typer.Typer(help="aiship: continuous delivery of AI applications.", no_args_is_help=True)
local_app = typer.Typer(help="The local platform: Docker, registry, stores, Prefect, Kubernetes.", no_args_is_help=True)
app.add_typer(local_app, name="local")
app.add_typer(config_app, name="config")
app.add_typer(apps_app, name="app")
for _name, _command in (("init", init_command), ("promote", promote_command), ("approve", approve_command),
                        ("rollback", rollback_command), ("history", history_command)):
    app.command(_name)(_command)


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
        rows = local_platform.up(parts or [], settings, on_ready=report_ready)
    except AishipError as exc:
        fail(exc)
    shown = set(local_platform.check_parts(parts or []))
    print_status([row for row in rows if row.part in shown], settings)


def report_ready(part: str, seconds: float) -> None:
    """One line per part as it becomes ready (stderr, so stdout stays the status table)."""
    typer.echo(f"{part:<12} ready in {seconds:6.1f} s", err=True)


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
    from flows.environments import aligned

    table = [("PART", "STATE", "ADDRESS", "PID", "VERSION")] + [(r.part, r.state, r.address, r.pid, r.version) for r in rows]
    for line in aligned(table):
        typer.echo(line)
    typer.echo(f"kubeconfig: {settings.state_dir / 'kubernetes' / 'kubeconfig'}")
    typer.echo("NodePorts:  127.0.0.1:16100-16199")


# --- aiship model ... (the model store's commands) ---

from pathlib import Path  # noqa: E402  (typer reads the annotations below at import)

model_app = typer.Typer(help="The model store: publish, list and show model versions.", no_args_is_help=True)
app.add_typer(model_app, name="model")
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="local, azure or s3 (default: AISHIP_MODEL_STORE, else local).")
]


@model_app.command("publish")
def model_publish(
    path: Annotated[Path, typer.Argument(help="Folder holding model.skops and model.json (from app/train.py).")],
    name: Annotated[str, typer.Option("--name", help="Model name: lowercase letters, digits, '-'.")],
    store: StoreOpt = None,
    event: Annotated[bool, typer.Option("--event/--no-event", help="Emit aiship.model.registered (which starts deliver-model).")] = True,
    app_config: Annotated[Path | None, typer.Option("--app-config", exists=True, dir_okay=False, help="The serving app's aiship.toml, whose [model] types the model must keep to (default: the app that claims the model, at its registered branch).")] = None,
) -> None:
    """Publish PATH as the next version of NAME, then emit aiship.model.registered."""
    from flows import events
    from flows.app_config import parse_app_config
    from flows.apps import all_apps, config_at, route
    from flows.model_store import get_store

    settings = Settings()
    available, where = events.prefect_api_status()
    try:
        if app_config:
            config = parse_app_config(app_config.read_text(), str(app_config))
        else:  # the app that will serve the model, whose loader the model must suit
            # Registered apps live on the Prefect server; without it only the first app is known.
            apps = all_apps(settings) if available else [settings.default_app()]
            if not available:
                typer.echo(f"registered apps not read ({where}): checking against {apps[0].name}, the first app")
            config = config_at(route(apps, name, "models"))
        ref = get_store(settings, store).publish(path, name, allowed_types=config.model.types, app=f"app {config.name}")
    except AishipError as exc:
        fail(exc)
    typer.echo(f"published {ref.name}:{ref.version} sha256:{ref.sha256} ({ref.size} bytes) at {ref.uri}")
    if not event:
        typer.echo(f"event {events.MODEL_REGISTERED} not emitted (--no-event)")
        return
    if not available:
        typer.echo(f"event {events.MODEL_REGISTERED} not emitted: {where}")
        return
    sent = events.emit_model_registered(ref)
    if sent is None:
        typer.echo(f"event {events.MODEL_REGISTERED} not emitted: Prefect's events client is disabled here")
    else:
        typer.echo(f"event {events.MODEL_REGISTERED} emitted to {where} (resource {sent.resource.id}, id {sent.id})")


@model_app.command("list")
def model_list(name: Annotated[str, typer.Argument(help="Model name.")], store: StoreOpt = None) -> None:
    """List the published versions of NAME, oldest first."""
    from flows.model_store import get_store

    refs, broken = [], []
    try:
        model_store = get_store(Settings(), store)
        for version in model_store.versions(name):
            try:
                refs.append(model_store.resolve(name, version))
            except MalformedManifestError as exc:  # listed as broken; the other versions still show
                broken.append((version, exc))
    except AishipError as exc:
        fail(exc)
    for version, exc in broken:
        typer.echo(f"{version}	broken: {exc}", err=True)
    if not refs and not broken:
        typer.echo(f"model {name!r} has no published version; publish one with `aiship model publish DIR --name {name}`")
        return
    for ref in refs:
        m = ref.manifest
        typer.echo(f"{ref.version}\tsha256:{ref.sha256}\t{ref.size}\t{m.published_at.isoformat()}\t{m.publisher}")
    if broken:
        raise typer.Exit(1)


@model_app.command("show")
def model_show(
    spec: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="Model name, optionally :VERSION (default newest).")],
    store: StoreOpt = None,
) -> None:
    """Print the manifest of NAME's newest version, or of NAME:VERSION, as JSON."""
    from flows.model_store import get_store

    name, _, version_text = spec.partition(":")
    if version_text and not version_text.isdigit():
        fail(AishipError(f"version in {spec!r} must be a positive integer, e.g. {name}:3"))
    try:
        ref = get_store(Settings(), store).resolve(name, int(version_text) if version_text else None)
    except AishipError as exc:
        fail(exc)
    typer.echo(ref.manifest.to_json().rstrip())
    typer.echo(f"# uri: {ref.uri}", err=True)


# --- aiship deploy / deliver ---


@app.command("deploy")
def deploy_command() -> None:
    """Register the Prefect deployments of prefect.yaml (`prefect deploy --all`) on the configured server."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from flows.settings import REPO_ROOT

    prefect = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "AISHIP_ROOT": str(REPO_ROOT)}
    proc = subprocess.run([str(prefect), "--no-prompt", "deploy", "--all"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        fail(AishipError("prefect deploy --all failed: " + " / ".join(tail)))
    names = [line.split("'")[1] for line in proc.stdout.splitlines() if "successfully created" in line and "'" in line]
    typer.echo(f"registered {len(names)} deployments: {', '.join(names)}")
    from flows.automations import ensure_automations

    try:
        automations = ensure_automations(Settings())
    except Exception as exc:  # the deployments are registered; say what is missing and how to retry
        fail(AishipError(f"the deployments are registered, but the automations are not: {exc}; run `aiship deploy` again"))
    typer.echo(f"automations: {', '.join(automations)}")


@app.command("deliver")
def deliver_command(
    model_name: Annotated[str, typer.Argument(help="The published model's name.")],
    model_version: Annotated[int | None, typer.Option("--version", help="Pin a version (default: the newest).")] = None,
    git_ref: Annotated[str | None, typer.Option("--git-ref", help="Branch, tag or SHA of the app (default: its registered branch).")] = None,
    environment: Annotated[str, typer.Option("--env", help="Environment to roll out to.")] = "staging",
    app_name: Annotated[str | None, typer.Option("--app", help="The app to deliver (default: the app that claims the model).")] = None,
) -> None:
    """Run the `deliver` flow here (recorded on the Prefect server) and print where the app answers."""
    import os

    from flows.deliver import deliver

    run_flows_quietly()
    try:
        state = deliver(model_name, model_version, git_ref, environment, app_name, return_state=True)
        result = state.result()
    except AishipError as exc:
        fail(exc)
    run_id = state.state_details.flow_run_id
    release = result.release
    typer.echo(f"{result.outcome}: {release.app} with {release.model} at {release.short_sha} "
               f"in {result.environment}{' (' + result.reason + ')' if result.reason else ''}")
    typer.echo(f"image:       {result.ref or '-'}")
    typer.echo(f"answers at:  {result.address}")
    ui = os.environ.get("PREFECT_API_URL", Settings().prefect_api_url).rstrip("/").removesuffix("/api")
    typer.echo(f"flow run:    {ui}/runs/flow-run/{run_id}")


# --- aiship status ---


@app.command("status")
def status(
    environment: Annotated[str | None, typer.Argument(help="Only this environment (default: all of them).")] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app (default: every app aiship delivers).")] = None,
    kubeconfig: Annotated[str | None, typer.Option(help="A kubeconfig file instead of the KubernetesAccess block.")] = None,
) -> None:
    """Print what serves of each app in each environment (from its Deployment's annotations) and where it answers."""
    from flows import environments
    from flows.apps import all_apps, find_app

    settings = Settings()
    try:
        apps = all_apps(settings)
        apps = [find_app(apps, app_name)] if app_name else apps
        api_client = environments.kubernetes_client(settings, kubeconfig)
        tables = {a.name: environments.serving(a, api_client, [environment] if environment else None)
                  for a in apps if not environment or environment in a.environments}
    except AishipError as exc:
        fail(exc)
    if environment and not tables:
        fail(AishipError(f"no app has an environment {environment!r}"))
    for line in environments.status_lines(tables):
        typer.echo(line)


# --- aiship sweep ---


@app.command("sweep")
def sweep_command(
    final_for: Annotated[float, typer.Option("--final-for", min=0, help="Seconds a run must have been over before its leftovers go.")] = 600,
) -> None:
    """Remove what runs that are over left on this machine (smoke and sandbox containers, work folders); run at worker start."""
    from functools import partial

    from flows.cleanup import finished_runs, sweep_leftovers
    from flows.image import docker_client

    try:
        client = docker_client()
    except AishipError as exc:
        fail(exc)
    try:
        cleaned = sweep_leftovers(client, finished=partial(finished_runs, final_for=final_for))
    finally:
        client.close()
    typer.echo(f"swept {len(cleaned.containers)} containers and {len(cleaned.folders)} work folders")
    for failure in cleaned.failed:
        typer.echo(f"could not remove {failure}", err=True)


def main() -> None:
    """Entry point of the `aiship` console script."""
    # Without an API URL Prefect would start a throwaway server for each command: use the local one.
    use_local_prefect()
    app()


if __name__ == "__main__":
    main()
