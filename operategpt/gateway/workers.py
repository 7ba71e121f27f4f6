"""The registry's operations: register workers (checked as the API and the CLI check them), take them
offline, list and export them. Each change is routed on by this process before it is acknowledged."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Row

from operategpt.errors import BadRequest, NotFound
from operategpt.gateway.balancing import observed_state
from operategpt.gateway.formats import FORMATS, compile_body, compile_call, compile_headers
from operategpt.gateway.formats.base import Call
from operategpt.gateway.registry import Registry, store
from operategpt.gateway.registry.models import as_utc
from operategpt.gateway.table import RoutingTable
from operategpt.http.allowlist import HostAllowlist
from operategpt.http.client import target as upstream_target
from operategpt.http.ownaddress import OwnAddresses
from operategpt.http.redact import mask_headers, redact, redact_url
from operategpt.schemas.seed import OfflineRequest, RegisterRequest


class Workers:
    def __init__(self, registry: Registry, table: RoutingTable, allowlist: HostAllowlist,
                 own: OwnAddresses | None = None):
        self.registry = registry
        self.table = table
        self.allowlist = allowlist
        self.own = own

    def check(self, request: RegisterRequest) -> Call:
        """What registration verifies beyond the request's shape (raises BadRequest); the compiled call."""
        fmt = FORMATS[request.api_format]
        fmt.check(request)
        if request.req_type == "GET" and request.body is not None:
            raise BadRequest("a GET worker takes no body; put placeholders in req_url_template")
        call = compile_call(fmt, request.req_type, request.req_url_template, compile_body(request.body),
                            compile_headers(request.headers), request.response_extract)
        fmt.check_call(call)
        self._check_hosts(request)
        return call

    def _check_hosts(self, request: RegisterRequest) -> None:
        for field in ("req_url_template", "health_url"):
            url = getattr(request, field)
            if url is None:
                continue
            parts = urlsplit(url)
            if "{" in parts.netloc:
                raise BadRequest(f"{field}: the host and port cannot be placeholders (clients would choose the target)")
            # The host checked is the one the HTTP client will connect to; where another parser reads a different
            # host (`http://a\\@b/` is `a` to urllib3, `b` to urllib.parse), the URL is ambiguous: refused.
            try:
                _, host, port = upstream_target(url)
            except ValueError:
                raise BadRequest(f"{field}: not a URL the manager can call") from None
            if _same_host(parts.hostname or "") != _same_host(host):
                raise BadRequest(f"{field}: ambiguous URL: it would connect to host {host}, "
                                 f"but reads as host {parts.hostname}")
            if self.allowlist and not self.allowlist.allows_host(host, port):
                raise BadRequest(f"{field}: host {host} is not in UPSTREAM_ALLOWED_HOSTS")
            if self.own is not None and self.own.reaches(host, port):
                raise BadRequest(f"{field}: {host}:{port} is this manager's own listening address; "
                                 "a worker cannot be the manager itself", param=field)

    def register(self, request: RegisterRequest) -> dict[str, Any]:
        return self.register_many([request])[0]

    def register_many(self, requests: Sequence[RegisterRequest]) -> list[dict[str, Any]]:
        """Check every worker, then register all of them in one transaction, or none."""
        calls = [self.check(request) for request in requests]
        models = {request.model_name for request in requests}
        entries = [(request.model_name, request.req_url_template,
                    request.model_dump(exclude={"model_name", "req_url_template"})) for request in requests]
        done = self.registry.register(entries, models)
        # The calls just compiled are the ones routed on: nothing is compiled twice.
        compiled = {worker.id: call for worker, call in zip(done.workers, calls, strict=True)}
        self.table.apply(done.version, models, done.routes, compiled, generation=done.generation)
        return [worker_view(worker) for worker in done.workers]

    def offline(self, request: OfflineRequest) -> None:
        done = self.registry.remove(request.model_name, request.req_url_template)
        if done is None:
            raise NotFound(
                f"no worker registered with model_name={request.model_name} and url={request.req_url_template}"
            )
        self.table.apply(done.version, {request.model_name}, done.routes, generation=done.generation)

    def list_workers(self, model_name: str | None = None) -> list[dict[str, Any]]:
        """The workers as the API shows them (times as datetimes, in UTC). Views of workers with the same
        template share its decoded copy (decoding it for each of 10,000 workers is a sixth of a listing's
        time): they are for reading."""
        loads = functools.lru_cache(maxsize=None)(json.loads)
        now = time.time()
        with self.registry.db.read() as session:
            rows = store.list_workers(session, model_name, json_as_text=True)
            return [worker_view(worker, loads, now) for worker in rows]

    def export(self) -> list[dict[str, Any]]:
        """Every worker as a registration (admin fields only, headers unmasked), in a stable order."""
        with self.registry.db.read() as session:
            exported = [
                {
                    "model_name": worker.model_name,
                    "req_url_template": worker.req_url_template,
                    **{name: getattr(worker, name) for name in store.ADMIN_FIELDS},
                    "headers": worker.headers or {},
                }
                for worker in store.list_workers(session)
            ]
        return sorted(exported, key=lambda worker: (worker["model_name"], worker["req_url_template"]))


def worker_view(worker: Row, loads: Callable[[str], Any] = json.loads, now: float | None = None) -> dict[str, Any]:
    """A worker (a row of store.WORKER_COLUMNS, JSON as text) as the API shows it: secrets masked, and its
    observed `state` (`balancing.observed_state`: healthy, unhealthy, unknown or cooling_down) beside `status`."""
    # Zipped by position: a Row's attribute lookups would cost more than the rest of a 10,000-worker listing.
    view = dict(zip(store.WORKER_COLUMNS, worker, strict=True))
    body, headers = view["body"], view["headers"]
    view["body"] = None if body is None else loads(body)
    view["headers"] = mask_headers(None if headers is None else loads(headers))
    view["req_url_template"] = redact_url(view["req_url_template"])
    if view["health_url"] is not None:
        view["health_url"] = redact_url(view["health_url"])
    if view["last_error"] is not None:
        view["last_error"] = redact(view["last_error"])
    view["state"] = observed_state(Observed.of(view), time.time() if now is None else now)
    return view


@dataclass(frozen=True, slots=True)
class Observed:
    """A worker view as the routability rule (`gateway.balancing`) reads it."""

    id: int
    weight: int
    priority: int
    status: str
    cooldown_until: float | None

    @classmethod
    def of(cls, view: Mapping[str, Any]) -> Observed:
        until = as_utc(view["cooldown_until"])
        return cls(view["id"], view["weight"], view["priority"], view["status"],
                   None if until is None else until.timestamp())


def _same_host(host: str) -> str:
    """A host name in the form both URL parsers' readings can be compared in (case, brackets, IDNA)."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host
