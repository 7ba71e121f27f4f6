"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue

from operategpt.errors import NotReady
from operategpt.gateway.metrics import exposition
from operategpt.schemas.replies import Failure, Ok
from operategpt.web.auth import requires
from operategpt.web.current import gateway
from operategpt.web.docs import Operation, documented
from operategpt.web.jsonreply import ok

bp = Blueprint("ops", __name__)


@bp.get("/health")
@documented(Operation("Liveness: the process answers", {200: Ok}, tag="ops"))
def health() -> ResponseReturnValue:
    """The process is up and answering."""
    return ok("alive")


@bp.get("/ready")
@documented(Operation("Readiness: the database answers and its schema is at the migrations' head",
                      {200: Ok, 503: Failure}, tag="ops"))
def ready() -> ResponseReturnValue:
    """The registry database answers and its schema is at the migrations' head."""
    problem = gateway().db.readiness_problem()
    if problem:
        raise NotReady(f"not ready: {problem}")
    return ok("ready")


@bp.get("/metrics")
@documented(Operation("Prometheus metrics, summed over every process",
                      {200: "text/plain", 401: Failure, 403: Failure}, auth="admin", tag="ops"))
@requires("admin")
def metrics() -> ResponseReturnValue:
    return Response(exposition(gateway().table), mimetype="text/plain; version=0.0.4; charset=utf-8")
