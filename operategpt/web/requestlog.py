"""One structured log line per request, and the request id (X-Request-ID accepted, or made, and returned)."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import time

from flask import Flask, Response, g, request

from operategpt.gateway.metrics import IN_FLIGHT, REQUEST_ID_HEADER, RequestInfo, current_request, record_request

access_log = logging.getLogger("operategpt.access")
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _RequestIds:
    """Unique ids without a uuid4 (an os.urandom call) per request: a random prefix per process, then a counter.

    next() on itertools.count is atomic under the GIL, so the threads of a process need no lock; a forked
    child (gunicorn with preload_app) draws a prefix of its own.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_new_request_id = _RequestIds()


def register_request_log(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        info = RequestInfo(given if _VALID_REQUEST_ID.fullmatch(given) else _new_request_id())
        g.operategpt_token = current_request.set(info)
        g.operategpt_info = info
        IN_FLIGHT.inc()

    @app.after_request
    def _finish(response: Response) -> Response:
        info: RequestInfo | None = g.pop("operategpt_info", None)
        if info is None:
            return response
        response.headers[REQUEST_ID_HEADER] = info.request_id
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        ended = functools.partial(_ended, info, request.method, route, response.status_code)
        if response.is_streamed:
            # A stream's request ends when its last byte is sent (or the client leaves): the WSGI server closes
            # the reply then, after the relay has finished its attempt.
            response.call_on_close(ended)
        else:
            ended()
        return response

    @app.teardown_request
    def _end(_exc: BaseException | None) -> None:
        token = g.pop("operategpt_token", None)
        if token is not None:
            current_request.reset(token)
        if g.pop("operategpt_info", None) is not None:
            # No reply was made (after_request did not run): the request ends here.
            IN_FLIGHT.dec()


def _ended(info: RequestInfo, method: str, route: str, status: int) -> None:
    """The request is over: count it and write its one log line."""
    IN_FLIGHT.dec()
    outcome = str(status) if status >= 400 else "broken_stream" if info.broken else "ok"
    record_request(route, info.model, info.worker_id, outcome)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "request",
            extra={"fields": {
                "request_id": info.request_id,
                "method": method,
                "route": route,
                "status": status,
                "model": info.model,
                "worker": info.worker_id,
                "retries": info.retries,
                "upstream_ms": round(info.upstream_ms, 2),
                "total_ms": round((time.perf_counter() - info.started) * 1000, 2),
                **({"outcome": "broken_stream"} if info.broken else {}),
            }},
        )
