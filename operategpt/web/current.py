"""The gateway the current request is served by (built once per app by `operategpt.gateway.build_gateway`)."""

from __future__ import annotations

from flask import current_app

from operategpt.gateway import Gateway


def gateway() -> Gateway:
    return current_app.extensions["operategpt"]
