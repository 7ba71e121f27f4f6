"""The per-process routing table: compiled workers by model, kept in step with the registry.

Completions read only this table. It checks the registry version at most every
`sync_interval` seconds and reloads when it moved; a model it does not know forces a check
at once, so a worker registered through another process is routable immediately.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from operategpt.core.errors import BadRequest
from operategpt.core.extract import Extractor, compile_extract
from operategpt.core.templates import Template, TextTemplate, compile_template, compile_text
from operategpt.manager import registry
from operategpt.manager.db import Database
from operategpt.manager.models import Worker, as_utc


@dataclass(frozen=True, slots=True)
class CompiledCall:
    """How to call a worker, parsed once: URL, body and header templates and the extractor."""

    url: TextTemplate
    body: Template | None
    headers: tuple[tuple[str, TextTemplate], ...]
    extract: Extractor
    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class Route:
    """A worker as the hot path sees it."""

    id: int
    model_name: str
    model_type: str
    api_format: str
    upstream_model: str
    method: str
    timeout_s: float | None
    weight: int
    priority: int
    status: str
    cooldown_until: float | None
    call: CompiledCall


# Where an OpenAI-format worker's answer is: its reply shape is known, so it registers no extract path.
OPENAI_CHAT_EXTRACT = "choices[0].message.content"


def compile_call(
    api_format: str, req_url_template: str, body: Any, headers: Mapping[str, str] | None, response_extract: str
) -> CompiledCall:
    """Parse a worker's templates; raises BadRequest (via the template and extract errors) when malformed."""
    if api_format == "openai":
        response_extract = OPENAI_CHAT_EXTRACT
    url = compile_text(req_url_template, url=True)
    body_template = None if body is None else compile_template(body)
    header_templates = tuple((name, compile_text(value, header=True)) for name, value in (headers or {}).items())
    names = url.names.union(*(t.names for _, t in header_templates))
    if body_template is not None:
        names |= body_template.names
    return CompiledCall(url, body_template, header_templates, compile_extract(response_extract), names)


def _epoch(moment: datetime | None) -> float | None:
    moment = as_utc(moment)
    return None if moment is None else moment.timestamp()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    version: int
    checked_at: float
    by_model: Mapping[str, tuple[Route, ...]]


class RoutingTable:
    def __init__(self, db: Database, sync_interval: float):
        self._db = db
        self._interval = sync_interval
        self._lock = threading.Lock()
        self._snapshot = _Snapshot(version=-1, checked_at=float("-inf"), by_model={})
        # Compiled calls survive reloads as long as the worker's admin fields did not change.
        self._compiled: dict[tuple[int, datetime], CompiledCall] = {}

    def routes(self, model_name: str) -> tuple[Route, ...]:
        """The model's workers (routable or not); empty when the registry has none."""
        found = self.all_routes().get(model_name)
        if found is None:
            found = self.sync(force=True).by_model.get(model_name, ())
        return found

    def all_routes(self) -> Mapping[str, tuple[Route, ...]]:
        snapshot = self._snapshot
        if time.monotonic() - snapshot.checked_at >= self._interval:
            snapshot = self.sync()
        return snapshot.by_model

    def invalidate(self) -> None:
        """This process changed the registry: check the version on the next request."""
        with self._lock:
            current = self._snapshot
            self._snapshot = _Snapshot(current.version, float("-inf"), current.by_model)

    def sync(self, force: bool = False) -> _Snapshot:
        """Check the registry version and reload if it moved. One thread at a time; the others wait.

        `force` asks for a check that starts after this call did (a miss must see every
        registration acknowledged before the request arrived).
        """
        asked = time.monotonic()
        with self._lock:
            current = self._snapshot
            if current.checked_at >= asked or (not force and asked - current.checked_at < self._interval):
                return current
            started = time.monotonic()
            with self._db.read() as session:
                version = registry.current_version(session)
                if version == current.version:
                    self._snapshot = _Snapshot(version, started, current.by_model)
                else:
                    self._snapshot = self._load(session, version, started)
            return self._snapshot

    def _load(self, session: Session, version: int, started: float) -> _Snapshot:
        by_model: dict[str, list[Route]] = {}
        compiled: dict[tuple[int, datetime], CompiledCall] = {}
        for worker in registry.list_workers(session):
            key = (worker.id, worker.updated_at)
            call = self._compiled.get(key)
            if call is None:
                call = _compile_stored(worker)
                if call is None:
                    continue
            compiled[key] = call
            by_model.setdefault(worker.model_name, []).append(_route(worker, call))
        self._compiled = compiled
        return _Snapshot(version, started, {name: tuple(routes) for name, routes in by_model.items()})


def _compile_stored(worker: Worker) -> CompiledCall | None:
    try:
        return compile_call(
            worker.api_format, worker.req_url_template, worker.body, worker.headers, worker.response_extract
        )
    except BadRequest:
        # Only rows written past the API (by hand in sqlite3) can be malformed; they are left out
        # of routing rather than taking the whole table down.
        return None


def _route(worker: Worker, call: CompiledCall) -> Route:
    return Route(
        id=worker.id,
        model_name=worker.model_name,
        model_type=worker.model_type,
        api_format=worker.api_format,
        upstream_model=worker.upstream_model or worker.model_name,
        method=worker.req_type,
        timeout_s=worker.timeout_s,
        weight=worker.weight,
        priority=worker.priority,
        status=worker.status,
        cooldown_until=_epoch(worker.cooldown_until),
        call=call,
    )
