"""The one exception hierarchy: every failure a client may see is an APIError with a status."""

from __future__ import annotations


class APIError(Exception):
    """A failure with an HTTP status and a message safe to show to the client."""

    status: int = 500
    kind: str = "internal_error"

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(APIError):
    status = 400
    kind = "invalid_request_error"


class Unauthorized(APIError):
    status = 401
    kind = "authentication_error"


class Forbidden(APIError):
    status = 403
    kind = "permission_error"


class NotFound(APIError):
    status = 404
    kind = "not_found_error"


class Conflict(APIError):
    status = 409
    kind = "conflict_error"


class PayloadTooLarge(APIError):
    status = 413
    kind = "invalid_request_error"


class UpstreamError(APIError):
    """The worker failed: could not connect, answered non-2xx, or gave an unusable reply."""

    status = 502
    kind = "upstream_error"

    def __init__(self, message: str, status: int | None = None, *, retryable: bool = False):
        super().__init__(message, status)
        # Whether another worker may succeed where this one failed (failover and passive health).
        self.retryable = retryable


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class NoRoute(APIError):
    """Workers exist for the model but none can take traffic now."""

    status = 503
    kind = "service_unavailable"
