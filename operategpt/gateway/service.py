"""The gateway's operations: register, offline and list workers, and serve completions with failover.

Validation of request shapes happens in `schemas`; this layer checks meaning, owns the
transactions and makes the routing decision.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Row

from operategpt.errors import BadRequest, NoRoute, NotFound, UpstreamError, UpstreamTimeout
from operategpt.gateway.balancing import InFlight, Strategy, candidates, unroutable_reasons
from operategpt.gateway.health import HealthMonitor
from operategpt.gateway.metrics import REQUEST_ID_HEADER, current_request, record_attempt, record_failover
from operategpt.gateway.registry import store as registry
from operategpt.gateway.registry.db import Database
from operategpt.gateway.table import Route, RoutingTable, compile_call
from operategpt.http.allowlist import HostAllowlist
from operategpt.http.client import UpstreamClient
from operategpt.http.redact import mask_headers
from operategpt.schemas.seed import CompletionRequest, OfflineRequest, RegisterRequest
from operategpt.settings import Settings
from operategpt.templating.templates import MissingValueError

T = TypeVar("T")
WORKER_HEADER = "X-OperateGPT-Worker"


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    worker_id: int


class Gateway:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        routing: RoutingTable,
        strategy: Strategy,
        inflight: InFlight,
        upstream: UpstreamClient,
        health: HealthMonitor,
        allowlist: HostAllowlist,
    ):
        self.settings = settings
        self.db = db
        self.routing = routing
        self.strategy = strategy
        self.inflight = inflight
        self.upstream = upstream
        self.health = health
        self.allowlist = allowlist

    # -- registry -------------------------------------------------------------------------

    def register(self, request: RegisterRequest) -> dict[str, Any]:
        return self.register_many([request])[0]

    def register_many(self, requests: Sequence[RegisterRequest]) -> list[dict[str, Any]]:
        """Check every worker, then register all of them in one transaction, or none."""
        for request in requests:
            self.check(request)
        models = {request.model_name for request in requests}
        with self.db.write() as session:
            workers = [
                registry.upsert_worker(session, request.model_name, request.req_url_template,
                                       request.model_dump(exclude={"model_name", "req_url_template"}))
                for request in requests
            ]
            version = registry.bump_version(session)
            # Read back in the same transaction, for this process to route on them before the reply.
            routes = registry.route_rows(session, models).all()
        self.routing.apply(version, models, routes)
        return [worker_view(worker) for worker in workers]

    def check(self, request: RegisterRequest) -> None:
        """What registration verifies beyond the request's shape; raises BadRequest."""
        _check_worker(request)
        self._check_hosts(request)

    def _check_hosts(self, request: RegisterRequest) -> None:
        for field in ("req_url_template", "health_url"):
            url = getattr(request, field)
            if url is None:
                continue
            parts = urlsplit(url)
            if "{" in parts.netloc:
                raise BadRequest(f"{field}: the host and port cannot be placeholders (clients would choose the target)")
            if self.allowlist and not self.allowlist.allows_host(parts.hostname or "", parts.port or 0):
                raise BadRequest(f"{field}: host {parts.hostname} is not in UPSTREAM_ALLOWED_HOSTS")

    def offline(self, request: OfflineRequest) -> None:
        with self.db.write() as session:
            removed = registry.delete_worker(session, request.model_name, request.req_url_template)
        if not removed:
            raise NotFound(
                f"no worker registered with model_name={request.model_name} and url={request.req_url_template}"
            )
        self.routing.refresh({request.model_name})

    def list_workers(self, model_name: str | None = None) -> list[dict[str, Any]]:
        """The workers as the API shows them. Views of workers with the same template share its decoded copy
        (decoding it for each of 10,000 workers is a sixth of a listing's time): they are for reading."""
        loads = functools.lru_cache(maxsize=None)(json.loads)
        with self.db.read() as session:
            rows = registry.list_workers(session, model_name, json_as_text=True)
            return [worker_view(worker, loads) for worker in rows]

    # -- completions ----------------------------------------------------------------------

    def complete(self, request: CompletionRequest) -> Completion:
        model = request.model_name or self.settings.llm_name
        temperature = request.temperature
        values: dict[str, Any] = {
            **request.params,
            "USER_PROMPT": request.input,
            "MESSAGES": [{"role": "user", "content": request.input}],
            "MODEL_NAME": model,
            "MODEL_TEMPERATURE": self.settings.default_temperature if temperature is None else temperature,
        }
        text, route = self.dispatch(model, lambda route: self._call(route, values, temperature))
        return Completion(text, route.id)

    def dispatch(self, model: str, call: Callable[[Route], T]) -> tuple[T, Route]:
        """Serve one request for `model`: pick a candidate, run `call` on it, fail over on retryable failures.

        Never tries the same worker twice; a non-retryable failure (a 4xx, a bad reply) is raised at once.
        Every failure raised names the worker in the X-OperateGPT-Worker header.
        """
        routes = self.routing.routes(model)
        if not routes:
            raise NotFound(f"no worker registered for model '{model}'")
        tried: set[int] = set()
        failure: UpstreamError | None = None
        deadline = time.monotonic() + self.settings.request_deadline
        for _ in range(1 + self.settings.max_retries):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pool = candidates(routes, time.time(), exclude=tried)
            if not pool:
                break
            route = self.strategy.pick(pool)
            tried.add(route.id)
            if (route.timeout_s or self.settings.upstream_timeout) > remaining:
                route = replace(route, timeout_s=remaining)
            if failure is not None:
                record_failover(model)
            started = time.perf_counter()
            try:
                with self.inflight.track(route.id):
                    result = call(route)
            except UpstreamError as exc:
                record_attempt(model, route.id, _outcome(exc), time.perf_counter() - started)
                exc.headers[WORKER_HEADER] = str(route.id)
                if not exc.retryable:
                    raise
                self.health.record_failure(route, exc.message)
                failure = exc
                continue
            record_attempt(model, route.id, "ok", time.perf_counter() - started)
            self.health.record_success(route)
            return result, route
        if failure is not None:
            raise failure
        raise _no_route(model, routes, self.health.retry_after())

    def _call(self, route: Route, values: dict[str, Any], temperature: float | None) -> str:
        call = route.call
        if not call.names <= values.keys():
            raise MissingValueError(call.names - values.keys())
        if route.api_format == "openai":
            messages = [{"role": "user", "content": values["USER_PROMPT"]}]
            body: Any = {"model": route.upstream_model, "messages": messages}
            if temperature is not None:
                body["temperature"] = temperature
        else:
            body = None if call.body is None else call.body.render(values)
        headers = {name: template.render(values) for name, template in call.headers}
        info = current_request.get()
        if info is not None:
            headers[REQUEST_ID_HEADER] = info.request_id
        reply = self.upstream.send(route.method, call.url.render(values), body=body, headers=headers,
                                   timeout=route.timeout_s)
        return call.extract(reply.text())


def _check_worker(request: RegisterRequest) -> None:
    """What a valid shape can still get wrong: template syntax and the combination of fields."""
    if request.api_format == "openai":
        given = [name for name in ("body", "response_extract") if getattr(request, name)]
        if given:
            raise BadRequest(f"an openai-format worker takes no {' or '.join(given)}: the client's request is the body")
    else:
        if request.upstream_model is not None:
            raise BadRequest("upstream_model applies only to workers with api_format 'openai'")
    if request.req_type == "GET" and request.body is not None:
        raise BadRequest("a GET worker takes no body; put placeholders in req_url_template")
    call = compile_call(
        request.api_format, request.req_url_template, request.body, request.headers, request.response_extract
    )
    if request.api_format == "template" and "USER_PROMPT" not in call.names:
        raise BadRequest("{USER_PROMPT} must appear in the body, the URL or a header value")


def _outcome(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return "retryable_error" if exc.retryable else "error"


def _no_route(model: str, routes: tuple[Route, ...], default_retry_after: int) -> NoRoute:
    now = time.time()
    reasons = unroutable_reasons(routes, now)
    why = ", ".join(f"{count} {reason}" for reason, count in reasons.items()) or "none left to try"
    cooling = [route.cooldown_until - now for route in routes if route.cooldown_until and route.cooldown_until > now]
    retry_after = max(1, math.ceil(min(cooling))) if cooling else default_retry_after
    plural = "s" if len(routes) != 1 else ""
    return NoRoute(
        f"model '{model}' has {len(routes)} worker{plural} registered but none is routable: {why}",
        headers={"Retry-After": str(retry_after)},
    )


_TIMES = ("last_checked_at", "cooldown_until", "created_at", "updated_at")


def worker_view(worker: Row, loads: Callable[[str], Any] = json.loads) -> dict[str, Any]:
    """A worker (a row of registry.WORKER_COLUMNS, JSON as text) as the API shows it: secrets masked, times in
    ISO 8601."""
    # Zipped by position: a Row's attribute lookups would cost more than the rest of a 10,000-worker listing.
    view = dict(zip(registry.WORKER_COLUMNS, worker, strict=True))
    body, headers = view["body"], view["headers"]
    view["body"] = None if body is None else loads(body)
    view["headers"] = mask_headers(None if headers is None else loads(headers))
    # SQLite hands back naive UTC datetimes: this is as_utc(moment).isoformat() in a third of the time, inline
    # (a listing formats 30,000 of them at 10,000 workers).
    for name in _TIMES:
        moment = view[name]
        if moment is not None:
            view[name] = moment.isoformat() + "+00:00" if moment.tzinfo is None else moment.isoformat()
    return view
