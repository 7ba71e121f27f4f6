"""What can go wrong, named: one exception hierarchy for both servers, with no HTTP status in it.

Each class says what happened (the request was bad, the model is unknown, the worker timed out after the
request was sent). Which HTTP status and which reply shape that becomes is decided in one place per server's
web layer (`operategpt.web.errors`). The failures of a call to a worker are the `UpstreamError` family; the
gateway's retry policy and passive health read them, never a status code.
"""

from __future__ import annotations


class GatewayError(Exception):
    """A failure whose message is safe to show to the client.

    `code` and `param` are what OpenAI's error object calls them (a machine-readable reason, the request
    field at fault); `retry_after` is how many seconds a client should wait before trying again.
    """

    code: str | None = None
    param: str | None = None

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param
        self.retry_after = retry_after
        # The worker the failure came from, when there was one (the reply names it).
        self.worker_id: int | None = None


class BadRequest(GatewayError):
    """The request is malformed or asks for something that cannot be done."""


class Unauthorized(GatewayError):
    """No credentials, where some are needed."""


class Forbidden(GatewayError):
    """Credentials given, but not good for this."""


class NotFound(GatewayError):
    """What the request names does not exist."""


class ModelNotFound(NotFound):
    code = "model_not_found"
    param = "model"


class WrongModelType(BadRequest):
    """The model exists but is not of a kind this operation serves."""

    code = "wrong_model_type"
    param = "model"


class Overloaded(GatewayError):
    """Too many requests now (a local model's queue is full, a rate limit): try again later."""


class NoRoute(GatewayError):
    """Workers are registered for the model but none can take traffic now."""

    code = "service_unavailable"


class LoopDetected(GatewayError):
    """The request carries this manager's own mark (its Via): it is the manager's own upstream call come back."""

    code = "loop_detected"


class NotReady(GatewayError):
    """The server cannot serve yet (its database is unreachable or not migrated)."""

    code = "not_ready"


# -- calls to workers -------------------------------------------------------------------------------


class UpstreamError(GatewayError):
    """A call to a worker failed, or its reply could not be used."""

    code = "upstream_error"


class ConnectFailed(UpstreamError):
    """The worker could not be reached: refused, reset, unresolvable, TLS failed, closed before answering."""


class UpstreamTimeout(UpstreamError):
    """The worker did not answer in time. `sent`: the request had been sent in full (the worker may be running
    it), rather than the connection never being made."""

    code = "timeout"

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.sent = sent


class UpstreamStatus(UpstreamError):
    """The worker answered with a status other than 2xx."""

    def __init__(self, message: str, status: int, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.status = status


class BadReply(UpstreamError):
    """The worker answered 2xx, but with something the gateway cannot use (too large, not JSON, no answer
    where the registration says it is)."""


class StreamBroken(UpstreamError):
    """The worker's reply broke off after it had started: mid-body, or a stream before its end."""


class CallRefused(UpstreamError):
    """The gateway refused to make the call (a host outside the allowlist, an invalid URL or header): the
    registration or the request is at fault, not the worker."""
