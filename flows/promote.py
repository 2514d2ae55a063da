"""Moving a digest that already served, without building: `promote` (staging -> production, after
an approval in the UI) and `rollback` (an environment back to a digest that served before)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows import environments as envs
from flows.apps import AppRegistration, app_named
from flows.approvals import Approval, fingerprint, refusal
from flows.deliver import read_serving
from flows.environments import ServingVersion
from flows.errors import ConfigurationError, RolloutError
from flows.locks import environment_lock
from flows.release import PinnedRelease
from flows.rollout import RolloutResult, roll_out
from flows.settings import Settings


@dataclass(frozen=True)
class Promotion:
    """How a promotion ended: the digest now serving in the target, or why nothing changed."""

    app: str
    source: str
    target: str
    ref: str
    approved: bool
    reviewer: str
    comment: str


def approval_markdown(release: PinnedRelease, source: str, target: str, answer: Approval | None,
                      key: str | None = None) -> str:
    """The promotion's record: what, from where to where, and who decided what (with the key that
    signed the answer, when the app's approvers sign)."""
    lines = [f"**Promotion {source} → {target}**", "", f"- image: `{release.ref}`",
             f"- git SHA: `{release.git_sha}`", f"- model: {release.model} (`{release.model.sha256[:12]}`)"]
    if answer is None:
        lines.append("- decision: waiting for approval")
    else:
        verdict = "approved" if answer.approve else "rejected"
        signed = f" (signature verified: {fingerprint(key)})" if key else ""
        lines += [f"- decision: **{verdict}** by {answer.reviewer}{signed}", f"- comment: {answer.comment or '—'}"]
    return "\n".join(lines)


@flow(name="promote")
def promote(source_environment: str = "staging", target_environment: str = "production",
            approval_timeout_seconds: int = 86400, app: str | None = None) -> Promotion:
    """Puts the digest serving in staging into production after a reviewer approves it in the UI.

    The run pauses and waits for typed input (approve or reject, reviewer, comment); the decision
    is recorded in the run's artifact. Nothing is rebuilt: the same digest is rolled out.

    Args:
        source_environment: where the tested digest serves now.
        target_environment: where it goes after approval.
        approval_timeout_seconds: how long the run waits for a decision before it fails.
        app: the app to promote; empty means the only app aiship delivers.

    Returns:
        The decision and the digest now serving in the target (unchanged when rejected).
    """
    settings = Settings()
    registration = app_named(settings, app)
    source, target = registration.environment(source_environment), registration.environment(target_environment)
    if source.name == target.name:
        raise ConfigurationError(f"promote moves a digest between two environments; {source.name!r} is named as both "
                                 "(to roll an environment back, run `rollback`)")
    if approval_timeout_seconds < 1:
        raise ConfigurationError(f"approval_timeout_seconds is {approval_timeout_seconds}; give at least 1 second "
                                 "(a day, 86400, by default)")
    release = promotable(read_serving(registration, source, settings), registration.name, source.name)
    key = f"promotion-{registration.name}"
    create_markdown_artifact(key=key, markdown=approval_markdown(release, source.name, target.name, None))
    if registration.promotion_needs_approval:
        answer = wait_for_approval(registration, approval_timeout_seconds,
                                   f"Promote {registration.name} `{release.ref}` ({release.model}, "
                                   f"git {release.short_sha}) from {source.name} to {target.name}?")
    else:
        answer = Approval(approve=True, reviewer="(no approval needed: the app's registration)")
    create_markdown_artifact(key=key, markdown=approval_markdown(release, source.name, target.name, answer,
                                                                 registration.approver_keys.get(answer.reviewer.strip())))
    if answer.approve:
        with environment_lock(registration.name, target.name, settings.lock_lease_seconds):
            roll_out(release, target)
    else:
        get_run_logger().info("promotion of %s rejected by %s: %s", release.digest, answer.reviewer, answer.comment)
    return Promotion(registration.name, source.name, target.name, release.ref, answer.approve, answer.reviewer,
                     answer.comment)


def wait_for_approval(registration: AppRegistration, timeout_seconds: int, question: str) -> Approval:
    """Pauses until an answer that may decide arrives; one that may not is logged and waited past.

    Prefect's server authenticates one API credential, not people: the registration's approvers
    narrow whose name an answer may carry, and its approver keys make the answer prove it
    (flows/approvals.py, docs/reliability.md).
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        answer = pause_flow_run(wait_for_input=Approval.with_initial_data(description=question, approve=False, reviewer=""),
                                timeout=max(1, round(deadline - time.monotonic())))
        why = refusal(answer, flow_run.id, registration.approvers, registration.approver_keys)
        if why is None:
            return answer
        get_run_logger().warning("answer to the promotion of %s ignored: %s; it waits for another", registration.name, why)


def promotable(serving: ServingVersion | None, app: str, source: str) -> PinnedRelease:
    """The release to promote: what serves in `source`, once its rollout has settled there."""
    if serving is None:
        raise ConfigurationError(f"nothing of {app} serves in {source} to promote; deliver there first")
    if not serving.complete:
        raise RolloutError("RolloutUnfinished", f"the rollout of {serving.digest} to {source} has not completed "
                           "(it is running, or the run that applied it died); nothing was promoted: wait for it, or "
                           f"deliver the same version to {source} again to finish it")
    return serving.release


def pick_release(previous: list[ServingVersion], digest: str | None, environment: str) -> ServingVersion:
    """The release to go back to: the one with `digest`, or the newest that served before."""
    if not previous:
        raise ConfigurationError(f"no earlier release served in {environment}; nothing to roll back to")
    if not digest:
        return previous[0]
    wanted = digest if digest.startswith("sha256:") else f"sha256:{digest}"
    for release in previous:
        if release.digest == wanted:
            return release
    known = ", ".join(r.digest[:19] for r in previous)
    raise ConfigurationError(f"digest {digest} never served in {environment}; digests that served before: {known}")


@flow(name="rollback")
def rollback(environment: str = "staging", digest: str | None = None, app: str | None = None) -> RolloutResult:
    """Rolls an environment back to a digest that served before, without building anything.

    Args:
        environment: the environment to roll back.
        digest: the digest to go back to (`sha256:…`); empty means the one that served before.
        app: the app to roll back; empty means the only app aiship delivers.

    Returns:
        The rollout's result: what serves now and what served before.
    """
    settings = Settings()
    registration = app_named(settings, app)
    env = registration.environment(environment)
    api_client = envs.kubernetes_client(settings)
    try:
        previous = envs.previous_releases(api_client, env, registration.name)
    finally:
        api_client.close()
    target = pick_release(previous, digest, env.name)
    get_run_logger().info("rolling %s of %s back to %s (%s)", env.name, registration.name, target.digest,
                          target.release.model)
    with environment_lock(registration.name, env.name, settings.lock_lease_seconds):
        return roll_out(target.release, env)
