"""What a failed attempt means for the request and for the worker, decided from what happened.

Modelled on urllib3's `Retry`: the transport only names the failure (`operategpt.errors`); this policy
decides. A request fails over to another worker when another worker may well succeed and running it twice
costs nothing: the connection could not be made, the worker answered 5xx, 408 or 429, or its reply broke
off before the client saw any of it. A timeout after the request was sent in full is not retried — the
worker may still be running (and billing) it — unless the worker's registration opts in
(`retry_on_timeout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from operategpt.errors import (
    BadReply,
    CallRefused,
    ConnectFailed,
    StreamBroken,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)

_RETRIED_STATUSES = frozenset({408, 429})


class Retryable(Protocol):
    retry_on_timeout: bool


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int  # other workers a request may be tried on

    def fails_over(self, error: UpstreamError, worker: Retryable) -> bool:
        """Whether the request may be tried on another worker after `error` from `worker`."""
        if isinstance(error, UpstreamTimeout):
            return not error.sent or worker.retry_on_timeout
        return worker_failed(error)


def worker_failed(error: UpstreamError) -> bool:
    """Whether `error` counts against the worker (passive health): it did not answer, or answered that it
    is failing or overloaded. A reply the gateway cannot use, or a refused call, is not the worker's health."""
    if isinstance(error, UpstreamStatus):
        return error.status >= 500 or error.status in _RETRIED_STATUSES
    return isinstance(error, (ConnectFailed, UpstreamTimeout, StreamBroken))


def outcome(error: UpstreamError | None) -> str:
    """The outcome label of an attempt (metrics, logs): ok, connect_error, timeout, http_<status>, broken_stream,
    bad_reply, refused."""
    if error is None:
        return "ok"
    if isinstance(error, UpstreamStatus):
        return f"http_{error.status}"
    for kind, label in _OUTCOMES:
        if isinstance(error, kind):
            return label
    return "error"


_OUTCOMES = (
    (ConnectFailed, "connect_error"),
    (UpstreamTimeout, "timeout"),
    (BadReply, "bad_reply"),
    (CallRefused, "refused"),
    (StreamBroken, "broken_stream"),
)
