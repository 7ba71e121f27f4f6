"""HTTP layer: blueprints translate requests into gateway calls and results into JSON replies."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from flask.typing import ResponseReturnValue

from operategpt.manager.services import Gateway


def gateway() -> Gateway:
    return current_app.extensions["operategpt"]


def ok(msg: str, status: int = 200, headers: dict[str, str] | None = None, **payload: Any) -> ResponseReturnValue:
    return jsonify(success=True, msg=msg, **payload), status, headers or {}
