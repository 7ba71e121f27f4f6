"""The seed API: register, list and offline workers, and completions by model name."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from operategpt.schemas.replies import CompletionReply, Failure, Ok, WorkerReply, WorkersReply
from operategpt.schemas.seed import CompletionRequest, OfflineRequest, RegisterRequest
from operategpt.web.auth import requires
from operategpt.web.current import gateway
from operategpt.web.docs import Operation, accepts, documented
from operategpt.web.errors import WORKER_HEADER
from operategpt.web.jsonreply import ok

bp = Blueprint("seed", __name__)

# Every route can answer these: auth failures, a body over MAX_CONTENT_LENGTH, a wrong method.
_COMMON = {401: Failure, 403: Failure, 405: Failure, 413: Failure}


@bp.post("/api/server/register")
@documented(Operation("Register a worker, or update it in place", {200: WorkerReply, 400: Failure, **_COMMON},
                      auth="admin"))
@requires("admin")
@accepts(RegisterRequest)
def register(payload: RegisterRequest) -> ResponseReturnValue:
    worker = gateway().workers.register(payload)
    return ok(f"register LLM {payload.model_name} succeed!", data=worker)


@bp.get("/api/server/workers")
@documented(Operation("List workers with their admin and observed state", {200: WorkersReply, **_COMMON},
                      auth="admin", params=(("model_name", "only this model's workers"),)))
@requires("admin")
def workers() -> ResponseReturnValue:
    model_name = request.args.get("model_name")
    found = gateway().workers.list_workers(model_name)
    return ok(f"{len(found)} worker{'s' if len(found) != 1 else ''}", data=found)


@bp.post("/api/server/offline")
@documented(Operation("Remove a worker", {200: Ok, 400: Failure, 404: Failure, **_COMMON}, auth="admin"))
@requires("admin")
@accepts(OfflineRequest)
def offline(payload: OfflineRequest) -> ResponseReturnValue:
    gateway().workers.offline(payload)
    return ok(f"remove llm worker(model_name={payload.model_name}, url={payload.req_url_template}) succeed!")


@bp.post("/api/v1/chat/completions")
@documented(Operation(
    "Ask a model; the answer is extracted from the worker's reply",
    {200: CompletionReply, 400: Failure, 404: Failure, 502: Failure, 503: Failure, 504: Failure, **_COMMON},
    auth="client",
))
@requires("client")
@accepts(CompletionRequest)
def completions(payload: CompletionRequest) -> ResponseReturnValue:
    completion = gateway().operations.complete(payload)
    return ok("execute succeed", headers={WORKER_HEADER: str(completion.worker_id)}, result=completion.text)
