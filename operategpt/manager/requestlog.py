"""One structured log line per request, and the request id (X-Request-ID accepted, or made, and returned)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from operategpt.manager.metrics import IN_FLIGHT, REQUEST_ID_HEADER, REQUESTS, RequestInfo, current_request

access_log = logging.getLogger("operategpt.access")
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def register_request_log(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        info = RequestInfo(given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex)
        g.operategpt_token = current_request.set(info)
        g.operategpt_info = info
        IN_FLIGHT.inc()

    @app.after_request
    def _finish(response: Response) -> Response:
        info: RequestInfo | None = g.get("operategpt_info")
        if info is None:
            return response
        response.headers[REQUEST_ID_HEADER] = info.request_id
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        outcome = "ok" if response.status_code < 400 else str(response.status_code)
        REQUESTS.labels(route, info.model or "", str(info.worker_id or ""), outcome).inc()
        access_log.info(
            "request",
            extra={"fields": {
                "request_id": info.request_id,
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "model": info.model,
                "worker": info.worker_id,
                "retries": info.retries,
                "upstream_ms": round(info.upstream_ms, 2),
                "total_ms": round((time.perf_counter() - info.started) * 1000, 2),
            }},
        )
        return response

    @app.teardown_request
    def _end(_exc: BaseException | None) -> None:
        if g.get("operategpt_info") is not None:
            IN_FLIGHT.dec()
            current_request.reset(g.pop("operategpt_token"))
            g.pop("operategpt_info")
