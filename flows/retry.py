"""What counts as transient, and how to retry it: one answer for tasks and for plain code.

Timeouts, connection errors, HTTP 5xx and 429 are transient: the same call may succeed later.
Everything else (404, 403, an integrity failure, a failed smoke test) is an answer, not an
accident, and is never retried.

One retry layer per call: a call that can be repeated on its own (a Kubernetes read or patch,
a model store request) retries in `call_with_retries`, about 30 s in all, and its task has no
Prefect retries; a task whose work is one long operation (a build, a push, a clone) retries as
a whole with `retry_condition` as Prefect's `retry_condition_fn`.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger("aiship.retry")

TRANSIENT_STATUS = frozenset({429}) | frozenset(range(500, 600))

# Exception class names (from the SDKs we call) that mean "the network or the server hiccupped".
# Matched by name so this module imports none of botocore, azure-core, httpx, requests, urllib3.
_TRANSIENT_NAMES = frozenset(
    {
        # botocore
        "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
        "ConnectionClosedError", "ConnectionError", "ProxyConnectionError",
        # azure-core
        "ServiceRequestError", "ServiceResponseError", "ServiceRequestTimeoutError",
        "ServiceResponseTimeoutError", "IncompleteReadError",
        # httpx / requests / urllib3
        "TimeoutException", "NetworkError", "RemoteProtocolError", "ConnectTimeout",
        "ReadTimeout", "ChunkedEncodingError", "ProtocolError", "NewConnectionError",
        "MaxRetryError",
    }
)

# S3-style error codes that are transient even when the status is not 5xx/429.
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "ServerBusy"})


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries, or None (botocore, azure-core, httpx, docker, kubernetes)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    for holder in (exc, response):
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int):
                return value
    return None


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return getattr(exc, "error_code", None)


def _is_transient_one(exc: BaseException) -> bool | None:
    """True/False when `exc` alone decides, None when it does not."""
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    if _error_code(exc) in _TRANSIENT_CODES:
        return True
    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_STATUS
    return None


def is_transient(exc: BaseException) -> bool:
    """True when retrying `exc` may help: a timeout, a connection error, HTTP 5xx or 429.

    An aiship error is transient when it says so (`AishipError.transient`, set where it is raised).
    For others, follows `raise ... from` chains (an SDK error wrapping a connection reset).
    """
    from flows.errors import AishipError, chain

    if isinstance(exc, AishipError):
        return exc.transient
    for one in chain(exc, context=False):
        verdict = _is_transient_one(one)
        if verdict is not None:
            return verdict
    return False


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed task run only when its exception is transient."""
    try:
        exc = state.result(raise_on_failure=False)
    except BaseException as raised:  # a state whose result cannot be read: judge what was raised
        exc = raised
    return isinstance(exc, BaseException) and is_transient(exc)


def backoff_delays(attempts: int, first: float = 0.5, factor: float = 2.0, cap: float = 30.0) -> list[float]:
    """Growing delays between `attempts` tries, e.g. [0.5, 1, 2] for 4 attempts; also fits `retry_delay_seconds`."""
    return [min(cap, first * factor**i) for i in range(max(0, attempts - 1))]


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int = 6,
    first_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Calls `fn()`, retrying transient errors with growing delays; non-transient errors raise at once.

    Each retry is logged at WARNING on the `aiship.retry` logger, naming `what` and the error.
    """
    delays = backoff_delays(attempts, first_delay)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = delays[attempt - 1]
            logger.warning(
                "%s failed (attempt %d of %d): %s: %s; retrying in %.1f s",
                what, attempt, attempts, type(exc).__name__, exc, delay,
            )
            sleep(delay)
    raise RuntimeError("unreachable: the loop returns or raises")
