"""The per-process routing table: compiled workers by model, kept in step with the registry.

Completions read only this table. It checks the registry version every `sync_interval`
seconds and reloads when it moved, from a refresher thread (`start`) or else from the request
that finds it due; meanwhile requests keep routing on the current snapshot, so reloading a
large registry does not hold them up. The check starts ahead of time (twice the last reload's
duration) so that the snapshot in use is never older than `sync_interval`; only a snapshot
past that age (a process idle without a refresher, or a reload slower than foreseen) makes
requests wait for the check.

A model the table does not know is read from the registry at once, so a worker registered
through another process is routable immediately, and a list of every model (`all_routes`)
checks the version first; this process's own changes are read back before they are
acknowledged. A change another process of this host acknowledged moved the host's generation
(`registry.generation`) before it was acknowledged: a lookup that sees the generation newer than
the snapshot's reads its model's rows at once (one indexed query, never a wait for a whole
reload) and wakes the refresher, so no process routes on the state before an acknowledged
change. Changes from other hosts arrive by NOTIFY on PostgreSQL (`registry.changes`), or at
the next check.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import namedtuple
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from operategpt.errors import BadRequest
from operategpt.gateway.formats import FORMATS, HeaderTemplates, compile_body, compile_call, compile_headers
from operategpt.gateway.formats.base import Call, Format
from operategpt.gateway.registry import store as registry
from operategpt.gateway.registry.db import Database
from operategpt.gateway.registry.generation import Generation
from operategpt.gateway.registry.models import as_utc
from operategpt.templating.templates import Template

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """A worker as the hot path sees it."""

    id: int
    model_name: str
    model_type: str
    format: Format
    upstream_model: str
    timeout_s: float | None
    retry_on_timeout: bool
    weight: int
    priority: int
    status: str
    cooldown_until: float | None
    call: Call


@functools.lru_cache(maxsize=1024)
def _stored_body(text: str | None) -> Template | None:
    return compile_body(_json(text))


@functools.lru_cache(maxsize=1024)
def _stored_headers(text: str | None) -> HeaderTemplates:
    return compile_headers(_json(text))


def _epoch(moment: datetime | None) -> float | None:
    moment = as_utc(moment)
    return None if moment is None else moment.timestamp()


_RouteRow = namedtuple("_RouteRow", registry.ROUTE_COLUMNS)  # type: ignore[misc]


_NEVER = float("-inf")  # the check time of a table not loaded yet


@dataclass(frozen=True, slots=True)
class _Snapshot:
    version: int  # the registry version the whole table was read at
    checked_at: float  # when that read began (time.monotonic)
    generation: int  # the host's generation read before that read began
    by_model: Mapping[str, tuple[Route, ...]]


class RoutingTable:
    def __init__(self, db: Database, sync_interval: float, generation: Generation | None = None):
        self._db = db
        self._interval = sync_interval
        self._generation = generation if generation is not None else Generation(None)
        self._snapshot = _Snapshot(version=-1, checked_at=_NEVER, generation=-1, by_model={})
        # One check of the whole registry at a time.
        self._checking = threading.Lock()
        # Held only to publish a snapshot, so reading models on their own never waits for a whole reload.
        self._publishing = threading.Lock()
        # Models read on their own at a later registry version than the snapshot's, by that version: a reload
        # that read an earlier version keeps them rather than its older rows.
        self._newer: dict[str, int] = {}
        # How long before the snapshot expires its check starts (see the module docstring).
        self._lead = 0.0
        # Worker id -> (its row, its route). A reload rebuilds only the routes whose row changed, and compiles
        # only the calls of workers registered again (their updated_at moved). Reusing the objects also keeps
        # a reload from leaving 10,000 new ones behind, which would make the garbage collector sweep the heap.
        self._known: dict[int, tuple[_RouteRow, Route]] = {}
        # Models read on their own since the snapshot because the host's generation moved, by that generation.
        self._read_at_generation: dict[str, int] = {}
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # the refresher checks now

    def start(self) -> None:
        """Check the registry from a daemon thread of this process (call after any fork)."""
        if self._refresher is not None:
            return
        self._stop.clear()
        self._wake.clear()
        self._refresher = threading.Thread(target=self._refresh, name="operategpt-routing", daemon=True)
        self._refresher.start()

    def stop(self) -> None:
        if self._refresher is None:
            return
        self._stop.set()
        self._wake.set()
        # A check stuck on an unreachable database is left to end with the process (a daemon thread).
        self._refresher.join(5)
        self._refresher = None

    def routes(self, model_name: str) -> tuple[Route, ...]:
        """The model's workers (routable or not); empty when the registry has none."""
        snapshot = self._current()
        generation = self._generation.current()
        if generation != snapshot.generation and self._read_at_generation.get(model_name) != generation:
            return self._read_model(model_name, generation)
        found = snapshot.by_model.get(model_name)
        if found is None:
            found = self.refresh({model_name}).get(model_name, ())
        return found

    def _read_model(self, model_name: str, generation: int) -> tuple[Route, ...]:
        """Another process of this host acknowledged a change the snapshot may not hold: this model's rows now
        (`generation` was read before they are), and a check of the whole registry in the background."""
        found = self.refresh({model_name}).get(model_name, ())
        with self._publishing:
            if generation != self._snapshot.generation:
                self._read_at_generation[model_name] = generation
        self._wake.set()
        return found

    def all_routes(self) -> Mapping[str, tuple[Route, ...]]:
        """Every model's workers as the registry has them now (a version check; a reload if it moved): a list
        of models shows every registration already acknowledged, as a request naming the model would find it."""
        return self.sync()

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        age = time.monotonic() - snapshot.checked_at
        expired = age >= self._interval
        # Due and no refresher: this request checks, unless another thread already is. Expired: wait for a check.
        due = age >= self._interval - self._lead and self._refresher is None
        if (expired or due) and self._checking.acquire(blocking=expired):
            try:
                snapshot = self._check(max_age=self._interval - self._lead)
            finally:
                self._checking.release()
        return snapshot

    def sync(self) -> Mapping[str, tuple[Route, ...]]:
        """Check the registry version now and reload if it moved."""
        with self._checking:
            return self._check(max_age=0.0).by_model

    def catch_up(self) -> None:
        """sync(), unless the table was never used (see `_refresh`)."""
        if self._snapshot.checked_at != _NEVER:
            self.sync()

    def refresh(self, models: Collection[str]) -> Mapping[str, tuple[Route, ...]]:
        """Read these models' workers now: a request names a model the table lacks, or this process changed them."""
        with self._db.read() as session:
            version = registry.current_version(session)
            rows = registry.route_rows(session, models).all()
        return self.apply(version, models, rows)

    def apply(self, version: int, models: Collection[str], rows: Sequence[Row], calls: Mapping[int, Call] | None = None,
              generation: int | None = None) -> Mapping[str, tuple[Route, ...]]:
        """Route on `models` as `rows` (registry.route_rows) show them, read at registry `version` or in the
        transaction that committed it. `calls`: workers' calls already compiled (by their registration), by id.
        `generation`: the host's generation that change counted, for a change this process made."""
        loaded = self._build(rows, everything=False, calls=calls)
        with self._publishing:
            current = self._snapshot
            if generation is not None and version == current.version + 1 and generation == current.generation + 1:
                # Nothing else was committed or counted since the snapshot was read: with these models it is the
                # registry at `version`, and no reload is due for this change.
                by_model = _replaced(current.by_model, models, loaded)
                self._snapshot = _Snapshot(version, current.checked_at, generation, by_model)
                return self._snapshot.by_model
            # Models already read at this version or a later one are left as they are.
            newer = [name for name in models if version > max(current.version, self._newer.get(name, -1))]
            self._newer.update(dict.fromkeys(newer, version))
            if any(name in loaded or name in current.by_model for name in newer):
                by_model = _replaced(current.by_model, newer, loaded)
                # The snapshot's version stays: the next check reloads everything else that moved.
                self._snapshot = _Snapshot(current.version, current.checked_at, current.generation, by_model)
            return self._snapshot.by_model

    def _refresh(self) -> None:
        while True:
            self._wake.wait(self._until_due())
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._snapshot.checked_at == _NEVER:
                # Loading is left to the first use: a process that never routes needs no table, and a table
                # loaded before its first use could only be staler than the one that use would read.
                continue
            try:
                with self._checking:
                    self._check(max_age=self._interval - self._lead)
            except Exception:
                # Requests keep the current table until it expires, then check (and fail) themselves.
                log.warning("routing table check failed; retrying in %.1f s", self._interval, exc_info=True)
                self._stop.wait(self._interval)

    def _until_due(self) -> float:
        checked_at = self._snapshot.checked_at
        if checked_at == _NEVER:
            return self._interval
        return max(0.0, checked_at + self._interval - self._lead - time.monotonic())

    def _check(self, max_age: float) -> _Snapshot:
        """With `_checking` held: unless checked in the last `max_age` seconds, check the version and reload."""
        started = time.monotonic()
        # Read before the registry is: a change counted meanwhile is checked again, never missed.
        generation = self._generation.current()
        if started - self._snapshot.checked_at < max_age and generation == self._snapshot.generation:
            return self._snapshot
        with self._db.read() as session:
            version = registry.current_version(session)
            loaded = None
            if version != self._snapshot.version:
                loaded = self._build(registry.route_rows(session), everything=True)
                self._lead = min(2 * (time.monotonic() - started), self._interval / 2)
        with self._publishing:
            current = self._snapshot
            by_model = current.by_model
            if loaded is not None:
                by_model = loaded
                for name, newer in self._newer.items():
                    if newer > version:
                        if name in current.by_model:
                            by_model[name] = current.by_model[name]
                        else:
                            by_model.pop(name, None)
            self._newer = {name: newer for name, newer in self._newer.items() if newer > version}
            self._read_at_generation = {name: seen for name, seen in self._read_at_generation.items()
                                        if seen > generation}
            self._snapshot = _Snapshot(version, started, generation, by_model)
            return self._snapshot

    def _build(self, rows: Iterable[Row], everything: bool,
               calls: Mapping[int, Call] | None = None) -> dict[str, tuple[Route, ...]]:
        """Routes by model from `rows`; `everything` says they are the whole registry (forget other workers)."""
        by_model: dict[str, list[Route]] = {}
        seen: dict[int, tuple[_RouteRow, Route]] = {}
        for row in rows:
            values = _RouteRow._make(row)  # a Row's attributes cost ten times a named tuple's
            known = self._known.get(values.id)
            if known is None or known[0] != values:
                route = self._new_route(values, known, calls.get(values.id) if calls else None)
                if route is None:
                    continue
                known = (values, route)
            seen[values.id] = known
            by_model.setdefault(values.model_name, []).append(known[1])
        if everything:
            self._known = seen
        else:
            self._known.update(seen)
        return {name: tuple(routes) for name, routes in by_model.items()}

    @staticmethod
    def _new_route(row: _RouteRow, known: tuple[_RouteRow, Route] | None, call: Call | None) -> Route | None:
        if call is not None:
            return _route(row, call)
        if known is not None and known[0].updated_at == row.updated_at:
            return _route(row, known[1].call)
        call = _compile_stored(row)
        return None if call is None else _route(row, call)


def _replaced(by_model: Mapping[str, tuple[Route, ...]], models: Iterable[str],
              loaded: Mapping[str, tuple[Route, ...]]) -> dict[str, tuple[Route, ...]]:
    """A copy of `by_model` with each of `models` as `loaded` has it (dropped when it has none)."""
    replaced = dict(by_model)
    for name in models:
        if name in loaded:
            replaced[name] = loaded[name]
        else:
            replaced.pop(name, None)
    return replaced


def _compile_stored(row: _RouteRow) -> Call | None:
    try:
        fmt = FORMATS[row.api_format]
        body, headers = _stored_body(row.body), _stored_headers(row.headers)
        return compile_call(fmt, row.req_type, row.req_url_template, body, headers, row.response_extract)
    except (BadRequest, ValueError, KeyError):
        # Only rows written past the API (by hand in sqlite3) can be malformed; they are left out
        # of routing rather than taking the whole table down.
        return None


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _route(row: _RouteRow, call: Call) -> Route:
    return Route(
        id=row.id,
        model_name=row.model_name,
        model_type=row.model_type,
        format=FORMATS[row.api_format],
        upstream_model=row.upstream_model or row.model_name,
        timeout_s=row.timeout_s,
        retry_on_timeout=row.retry_on_timeout,
        weight=row.weight,
        priority=row.priority,
        status=row.status,
        cooldown_until=_epoch(row.cooldown_until),
        call=call,
    )
