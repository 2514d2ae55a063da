"""Prefect global concurrency limits that keep changes apart.

- One change at a time per app and environment (`environment_lock`): two apps never wait on each
  other; two changes of one app to one environment never run together.
- An app's registry repository is shared by its deliveries and exclusive to its garbage
  collection (`registry_shared`, `registry_exclusive`): a delivery that found or pushed an image
  holds a slot until its rollout is over, so the collection never deletes an image between the
  moment a delivery picks it and the moment it serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect._internal.concurrency.cancellation import CancelledError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from flows.errors import PlatformError, chain

LOCK_PREFIX = "aiship-env-"


REGISTRY_PREFIX = "aiship-registry-"
# Deliveries of one app at once, each holding one slot; the garbage collection takes them all.
REGISTRY_SLOTS = 100


def lock_name(app: str, environment: str) -> str:
    """The concurrency limit's name for an app in an environment."""
    return f"{LOCK_PREFIX}{app}-{environment}"


def ensure_lock(app: str, environment: str) -> str:
    """Creates the limit of an app in an environment (1 slot, active) when missing; returns its name."""
    return _ensure_limit(lock_name(app, environment), 1)


def _ensure_limit(name: str, slots: int) -> str:
    """Creates the limit `name` with `slots` (active) when missing, or mends it; returns its name."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
            if not limit.active or limit.limit != slots:
                from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
            except ObjectAlreadyExists:
                pass  # another run made it first: the same limit
    return name


@contextmanager
def registry_shared(app: str, timeout_seconds: float | None = 1800) -> Iterator[None]:
    """Holds one of the app's registry slots: its garbage collection waits until it is given back.

    A lost lease only reopens the collection's window, so it does not stop the holder.
    """
    name = _ensure_limit(f"{REGISTRY_PREFIX}{app}", REGISTRY_SLOTS)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True, raise_on_lease_renewal_failure=False):
        yield


@contextmanager
def registry_exclusive(app: str, timeout_seconds: float) -> Iterator[bool]:
    """Holds all the app's registry slots, yielding True; yields False when a delivery still holds one after `timeout_seconds`."""
    name = _ensure_limit(f"{REGISTRY_PREFIX}{app}", REGISTRY_SLOTS)
    with ExitStack() as stack:
        try:
            stack.enter_context(concurrency(name, occupy=REGISTRY_SLOTS, timeout_seconds=timeout_seconds, strict=True))
            held = True
        except TimeoutError:
            held = False
        yield held


@contextmanager
def environment_lock(app: str, environment: str, lease_seconds: float = 300,
                     timeout_seconds: float | None = 1800) -> Iterator[None]:
    """Holds the single slot of an app in an environment: a second change waits here instead of running alongside.

    The slot is a lease that Prefect renews in the background. When a renewal fails the slot may
    go to another run, so Prefect interrupts the holder (strict=True) with its CancelledError at
    the next instruction; a rollout undoes itself on the way out (`rollout.roll_out_release`) and
    the interruption leaves here as one PlatformError.
    """
    name = ensure_lock(app, environment)
    interrupted = False
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, lease_duration=lease_seconds, strict=True):
            try:
                yield
            except BaseException as exc:
                # Only while held: a cancellation while waiting for the slot is not a lost lease.
                interrupted = any(isinstance(one, CancelledError) for one in chain(exc))
                raise
    except BaseException as exc:
        # Giving the slot back after a lost lease may fail as well (the server that did not renew
        # it), and that error replaces the interruption, which `interrupted` remembers.
        if not interrupted:
            raise
        raise PlatformError(f"the lock of {app} in {environment} (Prefect concurrency limit {name}) was lost while "
                            "held: its lease could not be renewed with the Prefect API; a rollout it covered was undone "
                            "if it could be (the run's log says); check what serves (`aiship status`) and that the "
                            "Prefect server answers, then deliver again") from exc
