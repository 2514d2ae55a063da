"""The environment lock's answer to a lost lease, with Prefect's concurrency slot replaced."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from prefect._internal.concurrency.cancellation import CancelledError

from flows import locks
from flows.errors import PlatformError


@pytest.fixture
def slot(monkeypatch):
    """A slot that is always free; `slot["release"]` is raised when it is given back."""
    held = {"lease_duration": None, "release": None}

    @contextmanager
    def concurrency(name, occupy, timeout_seconds, lease_duration, strict):
        held["lease_duration"] = lease_duration
        try:
            yield
        finally:
            if held["release"] is not None:
                raise held["release"]

    monkeypatch.setattr(locks, "ensure_lock", lambda app, env: locks.lock_name(app, env))
    monkeypatch.setattr(locks, "concurrency", concurrency)
    return held


def test_an_interruption_by_a_lost_lease_becomes_one_error_naming_the_lock(slot):
    with pytest.raises(PlatformError, match="lock of app in staging .*aiship-env-app-staging.* was lost") as caught:
        with locks.environment_lock("app", "staging", lease_seconds=7):
            raise CancelledError()
    assert isinstance(caught.value.__cause__, CancelledError) and slot["lease_duration"] == 7


def test_a_lost_lease_is_named_even_when_giving_the_slot_back_fails_too(slot):
    slot["release"] = ConnectionRefusedError("127.0.0.1:4200")
    with pytest.raises(PlatformError, match="was lost while held"):
        with locks.environment_lock("app", "staging"):
            raise CancelledError()


def test_other_errors_leave_the_lock_unchanged(slot):
    with pytest.raises(ValueError, match="not a lease"):
        with locks.environment_lock("app", "staging"):
            raise ValueError("not a lease")


def test_a_cancellation_while_waiting_for_the_slot_is_not_a_lost_lease(monkeypatch):
    @contextmanager
    def concurrency(name, occupy, timeout_seconds, lease_duration, strict):
        raise CancelledError()  # as a run cancelled during its wait for the slot
        yield

    monkeypatch.setattr(locks, "ensure_lock", lambda app, env: locks.lock_name(app, env))
    monkeypatch.setattr(locks, "concurrency", concurrency)
    with pytest.raises(CancelledError):
        with locks.environment_lock("app", "staging"):
            pass
