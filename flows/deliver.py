"""The delivery flow: app tests -> model -> image -> smoke test -> push -> rollout, or a clear failure.

`deliver` is the contract of DESIGN.md ("The flow's contract"); `deliver_commit` is what a git push
starts: the pushed commit with the model that serves in the environment now (or the newest).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment as runtime_deployment
from pydantic import BaseModel, Field

from flows import environments as envs
from flows.app_config import AppConfig
from flows.app_tests import build_test_image, test_app
from flows.cleanup import clean_up
from flows.apps import AppRegistration, all_apps, find_app, push_target, read_config, route
from flows.environments import ServingVersion
from flows.errors import ConfigurationError
from flows.image import build_image
from flows.locks import environment_lock, registry_shared
from flows.model_store.base import ModelRef, check_model_file
from flows.model_store.tasks import fetch_model, resolve_model
from flows.ownership import work_folder
from flows.registry import PushedImage, check_address, find_existing, load_credentials, push_image
from flows.release import PinnedRelease, Release
from flows.retry import backoff_delays, retry_condition
from flows.rollout import RolloutResult, roll_out
from flows.settings import Environment, Settings
from flows.smoke_test import smoke_test
from flows.source import SourceTree, check_out, check_ref, is_ancestor

# Deployments started by events: they never replace a newer model version that already serves.
EVENT_DEPLOYMENTS = frozenset({"deliver-model", "deliver-commit"})


class Delivery(BaseModel):
    """How a delivery of a release ended: delivered (with the digest now serving) or skipped (and why)."""

    release: Release
    environment: str
    outcome: str  # "delivered" | "skipped"
    reason: str
    ref: str  # the image that serves now, by digest ('' when nothing does)
    built: bool
    address: str
    layers_pushed: int = 0
    layers_existing: int = 0
    bytes_pushed: int = 0
    image_bytes: int = 0
    stage_seconds: dict[str, float] = Field(default_factory=dict)


class StageClock:
    """Seconds spent in each stage of one delivery, for the summary and the benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - started, 2)


def skip_reason(serving: ServingVersion | None, release: Release, by_event: bool,
                is_ancestor: Callable[[str, str], bool] = lambda older, newer: False) -> str | None:
    """Why this release must not roll out, or None: the same inputs already serve, or (for an
    event) a newer version of the same model or a newer commit serves; `is_ancestor(older, newer)`
    answers from the app's history. A redeploy from the UI or CLI may go back on purpose."""
    if serving is None:
        return None
    now, model = serving.release, release.model
    if now.git_sha == release.git_sha and now.model.sha256 == model.sha256 and serving.complete:
        return f"{model} at {release.short_sha} already serves in {serving.environment}"
    if by_event and now.model.name == model.name and now.model.version > model.version:
        return (f"{now.model} (newer than v{model.version}) already serves in {serving.environment}; "
                f"run the `deliver` deployment with model_version={model.version} to pin it")
    if by_event and now.git_sha and is_ancestor(release.git_sha, now.git_sha):
        return (f"commit {release.short_sha} is older than {now.short_sha}, which serves in {serving.environment} (an "
                f"event never moves an environment back); run the `deliver` deployment with git_ref={release.git_sha} "
                "to redeploy it on purpose")
    return None


@task(name="read-serving")  # its Kubernetes reads retry themselves (environments._api_call)
def read_serving(app: AppRegistration, environment: Environment, settings: Settings) -> ServingVersion | None:
    """What serves of an app in an environment now, from its Deployment's annotations."""
    api_client = envs.kubernetes_client(settings)
    try:
        return envs.serving_version(api_client, environment, app.name)
    finally:
        api_client.close()


@task(name="find-image", retries=3, retry_delay_seconds=backoff_delays(4, first=1.0), retry_condition_fn=retry_condition)
def find_image(release: Release, settings: Settings) -> PushedImage | None:
    """The image already in the registry for this release (git SHA, model sha256), so it is never built twice."""
    release.image_tag(settings.registry_host)  # refuses a model name that makes no tag, before asking
    return find_existing(release.repository(settings.registry_host), release.version, release,
                         load_credentials(settings.registry_credentials_block))


def build_tested_image(release: Release, source: SourceTree, config: AppConfig, model: ModelRef, settings: Settings,
                       workdir: Path, clock: StageClock) -> tuple[PushedImage, int]:
    """Fetches and verifies the model, builds, smoke-tests and pushes: nothing untested is pushed."""
    with clock.stage("fetch"):
        fetched = fetch_model(model, workdir / "model", settings)
        # The types this commit's loader accepts, checked before anything is built from the model.
        check_model_file(fetched.path, config.model.types, f"app {config.name} at {source.short_sha}")
    with clock.stage("build"):
        built = build_image(release, source, fetched, config, settings)
    with clock.stage("smoke_test"):
        smoke_test(built, fetched, config)
    with clock.stage("push"):
        return push_image(built, settings), built.size_bytes


def delivery_record(release: Release, env: Environment, outcome: str, reason: str, ref: str, pushed: PushedImage | None,
                    image_bytes: int, clock: StageClock, address: str) -> Delivery:
    """The Delivery a run returns; `pushed` is the image this run pushed (None when it pushed nothing)."""
    return Delivery(release=release, environment=env.name, outcome=outcome, reason=reason, ref=ref,
                    built=pushed is not None, address=address,
                    layers_pushed=len(pushed.layers_pushed) if pushed else 0,
                    layers_existing=len(pushed.layers_existing) if pushed else 0,
                    bytes_pushed=pushed.bytes_pushed if pushed else 0, image_bytes=image_bytes,
                    stage_seconds=clock.seconds)


def skipped(release: Release, env: Environment, reason: str, serving: ServingVersion | None, clock: StageClock) -> Delivery:
    """Records and returns a delivery that rolled nothing out, and why."""
    get_run_logger().info("nothing to roll out: %s", reason)
    create_markdown_artifact(key=f"delivery-{release.app}-{env.name}".lower().replace("_", "-"),
                             markdown=f"**Skipped**: {reason}")
    return delivery_record(release, env, "skipped", reason, serving.release.ref if serving else "", None, 0, clock,
                           envs.address(env))


def ship(app: AppRegistration, release: Release, source: SourceTree, config: AppConfig, model: ModelRef,
         env: Environment, settings: Settings, workdir: Path, clock: StageClock, by_event: bool) -> Delivery:
    """Reuses or builds the release's tested image, then rolls it out holding the environment's lock.

    From finding the image to the end of its rollout the run holds a slot of the app's registry,
    so the garbage collection cannot delete the image before it serves.
    """
    with registry_shared(app.name):
        with clock.stage("find_image"):
            existing = find_image(release, settings)
        if existing:
            get_run_logger().info("image for %s already in the registry: %s; nothing is built", release.version, existing.ref)
            pushed, image_bytes = None, 0
        else:
            pushed, image_bytes = build_tested_image(release, source, config, model, settings, workdir, clock)
        turn = roll_out_in_turn(app, release.pinned((existing or pushed).ref), env, settings, by_event,
                                partial(is_ancestor, source))
    clock.seconds["wait_for_environment"] = turn.waited_seconds
    if turn.result is None:
        return skipped(release, env, turn.reason, turn.serving, clock)
    clock.seconds["roll_out"] = turn.rollout_seconds
    return delivery_record(release, env, "delivered", "", turn.result.ref, pushed, image_bytes, clock, turn.result.address)


@dataclass(frozen=True)
class Turn:
    """A release's turn at its environment: rolled out (`result`), or `reason` why not."""

    serving: ServingVersion | None  # what served once the turn came
    reason: str
    result: RolloutResult | None
    waited_seconds: float
    rollout_seconds: float
    held: tuple[datetime, datetime]  # when the environment's lock was taken and given back


def roll_out_in_turn(app: AppRegistration, release: PinnedRelease, env: Environment, settings: Settings, by_event: bool,
                     ancestry: Callable[[str, str], bool]) -> Turn:
    """Takes the environment's lock, then rolls `release` out unless what serves by then supersedes it.

    Runs waiting for the lock get it in no set order, so what serves is read only once it is held:
    an event that arrives second with an older model finds the newer one serving and stops there.
    """
    waiting_since = time.monotonic()
    with environment_lock(app.name, env.name, settings.lock_lease_seconds):
        taken, waited = datetime.now(timezone.utc), round(time.monotonic() - waiting_since, 2)
        serving = read_serving(app, env, settings)
        result, started = None, time.monotonic()
        if not (reason := skip_reason(serving, release, by_event, ancestry) or ""):
            result = roll_out(release, env)
        rollout_seconds = round(time.monotonic() - started, 2)
        given_back = datetime.now(timezone.utc)
    return Turn(serving, reason, result, waited, rollout_seconds, (taken, given_back))


def run_delivery(app: AppRegistration, model_name: str, model_version: int | None, git_ref: str, environment: str,
                 settings: Settings, *, by_event: bool) -> Delivery:
    """The delivery's steps, shared by `deliver` and `deliver_commit`.

    What the parameters name (environment, git ref, model and version) and the registry's address
    are checked first, so a mistake is refused before anything is cloned, tested or built.
    """
    env = app.environment(environment)
    check_ref(git_ref)
    check_address(settings.registry_host)
    clock = StageClock()
    with clock.stage("resolve"):
        model = resolve_model(model_name, model_version, settings)
    with clock.stage("check_out"):
        source = check_out(app.repository, git_ref)
    workdir = work_folder("deliver")
    try:
        config = read_config(source, app)
        if refused := env.refusals(config.serve):
            raise ConfigurationError(f"aiship.toml of {app.name} at {source.short_sha} asks for {', '.join(refused)} in "
                                     f"{env.name}; lower [serve] in the app's aiship.toml, or have the operator raise "
                                     "the environment's max_* in the app's registration")
        with clock.stage("app_tests"):
            test_app(build_test_image(source, config, settings), config)
        serving = read_serving(app, env, settings)
        release = Release(app=app.name, git_sha=source.sha, model=model, serve=config.serve)
        if reason := skip_reason(serving, release, by_event, partial(is_ancestor, source)):
            return skipped(release, env, reason, serving, clock)
        return ship(app, release, source, config, model, env, settings, workdir, clock, by_event)
    finally:
        shutil.rmtree(source.path, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            clean_up(app.name, settings.registry_host, settings.keep_images, sweep=True)
        except Exception as exc:  # the delivery's own outcome (or error) is what the run must report
            get_run_logger().warning("clean-up after the delivery of %s failed: %s: %s", app.name, type(exc).__name__, exc)


@flow(name="deliver")
def deliver(model_name: str, model_version: int | None = None, git_ref: str | None = None,
            environment: str = "staging", app: str | None = None) -> Delivery:
    """Delivers the app at a git ref with a model version to an environment, or fails clearly.

    Tests the app at `git_ref`, resolves and verifies the model, builds the image (unless the
    registry already holds it for the same git SHA and model sha256), smoke-tests it, pushes it by
    digest and rolls it out pinned to that digest; a failed rollout is rolled back by itself.

    Args:
        model_name: the published model's name.
        model_version: a version to pin; empty means the newest published one.
        git_ref: branch, tag or commit SHA of the app's repository; empty means the app's registered branch.
        environment: where to roll out (`staging` or `production`).
        app: the app to deliver; empty means the app that claims the model.

    Returns:
        The outcome, the digest that serves and where it answers.
    """
    settings = Settings()
    apps = all_apps(settings)
    registration = find_app(apps, app) if app else route(apps, model_name, "models")
    by_event = (runtime_deployment.name or "") in EVENT_DEPLOYMENTS
    return run_delivery(registration, model_name, model_version, git_ref or registration.branch, environment, settings,
                        by_event=by_event)


@flow(name="deliver-commit")
def deliver_commit(sha: str, environment: str = "staging", repo: str | None = None, ref: str | None = None,
                   pusher: str | None = None, app: str | None = None) -> Delivery:
    """Delivers a pushed commit with the model that serves in the environment now (or the newest).

    Args:
        sha: the pushed commit.
        environment: where to roll out.
        repo: the repository the push came from (owner/repo): it names the app, unless `app` does.
        ref: the pushed ref (for the record).
        pusher: who pushed (for the record).
        app: the app to deliver; empty means the app whose `sources` claim `repo`.

    Returns:
        The outcome, the digest that serves and where it answers.
    """
    settings = Settings()
    apps = all_apps(settings)
    if app:
        registration = find_app(apps, app)
    else:  # as the receiver routes it: the app whose sources claim the repository, on that app's branch only
        registration = push_target(apps, repo or "", ref) if ref else route(apps, repo or "", "sources")
    serving = read_serving(registration, registration.environment(environment), settings)
    name = serving.release.model.name if serving and serving.release.model.name else registration.default_model
    if not name:
        raise ConfigurationError(f"nothing serves of {registration.name} in {environment} and its registration names no "
                                 "default_model; deliver a model first (`aiship deliver MODEL --app "
                                 f"{registration.name}`) or add default_model to its registration")
    version = (serving.release.model.version or None) if serving and serving.release.model.name == name else None
    get_run_logger().info("push of %s to %s of %s by %s: delivering %s with model %s v%s", sha[:12], ref or "?",
                          repo or "?", pusher or "?", registration.name, name, version or "newest")
    return run_delivery(registration, name, version, sha, environment, settings, by_event=True)
