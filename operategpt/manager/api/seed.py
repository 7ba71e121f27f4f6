"""The seed API: register, list and offline workers, and completions by model name."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from operategpt.manager.api import gateway, ok
from operategpt.manager.auth import requires
from operategpt.manager.schemas import CompletionRequest, OfflineRequest, RegisterRequest, parse
from operategpt.manager.services import WORKER_HEADER

bp = Blueprint("seed", __name__)


@bp.post("/api/server/register")
@requires("admin")
def register() -> ResponseReturnValue:
    payload = parse(RegisterRequest, request.get_data())
    worker = gateway().register(payload)
    return ok(f"register LLM {payload.model_name} succeed!", data=worker)


@bp.get("/api/server/workers")
@requires("admin")
def workers() -> ResponseReturnValue:
    model_name = request.args.get("model_name")
    found = gateway().list_workers(model_name)
    return ok(f"{len(found)} worker{'s' if len(found) != 1 else ''}", data=found)


@bp.post("/api/server/offline")
@requires("admin")
def offline() -> ResponseReturnValue:
    payload = parse(OfflineRequest, request.get_data())
    gateway().offline(payload)
    return ok(f"remove llm worker(model_name={payload.model_name}, url={payload.req_url_template}) succeed!")


@bp.post("/api/v1/chat/completions")
@requires("client")
def completions() -> ResponseReturnValue:
    payload = parse(CompletionRequest, request.get_data())
    completion = gateway().complete(payload)
    return ok("execute succeed", headers={WORKER_HEADER: str(completion.worker_id)}, result=completion.text)
