"""HTTP layer: blueprints translate requests into gateway calls and results into JSON replies."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app

from operategpt.gateway.service import Gateway


def gateway() -> Gateway:
    return current_app.extensions["operategpt"]


def ok(msg: str, status: int = 200, headers: dict[str, str] | None = None, **payload: Any) -> Response:
    response: Response = current_app.json.response(success=True, msg=msg, **payload)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response
