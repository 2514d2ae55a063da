"""flows.retry: what is transient (timeouts, connection errors, 5xx, 429) and how plain code retries it."""

from __future__ import annotations

import logging

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from flows.errors import ImagePushError, ModelIntegrityError, ModelNotFoundError
from flows.retry import backoff_delays, call_with_retries, is_transient, retry_condition


def s3_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def azure_error(status: int) -> HttpResponseError:
    err = HttpResponseError(message=f"status {status}")
    err.status_code = status
    return err


def httpx_status(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/x")
    return httpx.HTTPStatusError("x", request=request, response=httpx.Response(status, request=request))


def wrapped(cause: BaseException, transient: bool = False) -> ImagePushError:
    """An aiship error raised from `cause`: transient only when it says so, whatever its cause."""
    try:
        raise ImagePushError("push failed", transient=transient) from cause
    except ImagePushError as exc:
        return exc


TRANSIENT = [
    TimeoutError("t"), ConnectionResetError("reset"), ConnectionRefusedError("refused"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:9000"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:9000"),
    s3_error(500, "InternalError"), s3_error(503, "SlowDown"), s3_error(429, "TooManyRequests"),
    azure_error(500), azure_error(503), azure_error(429), ServiceRequestError("connection refused"),
    httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx_status(502), httpx_status(429),
    wrapped(httpx_status(503), transient=True),
]
NOT_TRANSIENT = [
    ValueError("bad"), KeyError("k"), s3_error(404, "NoSuchKey"), s3_error(403, "AccessDenied"),
    s3_error(412, "PreconditionFailed"), azure_error(404), azure_error(403), azure_error(409),
    ResourceNotFoundError("missing"), httpx_status(400), httpx_status(404), httpx_status(403),
    ModelIntegrityError("sha256 mismatch"), ModelNotFoundError("no such model"), wrapped(httpx_status(401)),
    wrapped(httpx_status(503)),  # an aiship error that does not say it is transient is an answer
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: f"{type(e).__name__}")
def test_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", NOT_TRANSIENT, ids=lambda e: f"{type(e).__name__}")
def test_not_transient(exc):
    assert not is_transient(exc)


def test_backoff_grows_and_is_capped():
    assert backoff_delays(4) == [0.5, 1.0, 2.0]
    assert backoff_delays(10, first=1, cap=5)[-1] == 5
    assert backoff_delays(1) == []


def test_call_with_retries_retries_transient_with_growing_delays_and_logs(caplog):
    outcomes = [TimeoutError("t1"), s3_error(503, "SlowDown"), "ok"]
    slept = []

    def fn():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with caplog.at_level(logging.WARNING, logger="aiship.retry"):
        assert call_with_retries(fn, what="read x", sleep=slept.append) == "ok"
    assert slept == [1.0, 2.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "read x failed (attempt 1 of 6): TimeoutError" in messages[0]


def test_call_with_retries_fails_fast_on_404():
    calls, slept = [], []

    def fn():
        calls.append(1)
        raise s3_error(404, "NoSuchKey")

    with pytest.raises(ClientError):
        call_with_retries(fn, what="read x", sleep=slept.append)
    assert (len(calls), slept) == (1, [])


def test_call_with_retries_gives_up_after_attempts():
    calls = []

    def fn():
        calls.append(1)
        raise TimeoutError("always")

    with pytest.raises(TimeoutError):
        call_with_retries(fn, what="read x", attempts=3, sleep=lambda _: None)
    assert len(calls) == 3


def test_retry_condition_reads_the_failed_state():
    from prefect.states import Failed

    assert retry_condition(None, None, Failed(data=TimeoutError("t")))
    assert not retry_condition(None, None, Failed(data=ModelIntegrityError("sha256 mismatch")))


def test_one_retry_layer_per_call():
    """Tasks whose calls retry themselves have no Prefect retries; the others retry, transient errors only."""
    from flows import app_tests, deliver, image, registry, rollout, source, watch
    from flows.model_store import tasks

    calls_retry_themselves = [rollout.roll_out, deliver.read_serving, watch.list_published, tasks.resolve_model, tasks.fetch_model]
    retried_whole = [image.build_image, app_tests.build_test_image, registry.push_image, deliver.find_image, source.check_out]
    assert [t.name for t in calls_retry_themselves if t.retries] == []
    assert [t.name for t in retried_whole if not (t.retries and t.retry_condition_fn is retry_condition)] == []
