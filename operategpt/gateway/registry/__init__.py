"""The durable worker registry: models, data access (`store`), the database and its migrations.

`Registry` is the one writer of what routing reads: every change that alters how requests are routed
(a registration, an offline, a cooldown, a health status) goes through it, in one transaction that moves
the registry version — the signal every process's routing table watches — exactly when it should.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from operategpt.gateway.registry import store
from operategpt.gateway.registry.db import Database
from operategpt.gateway.registry.generation import Generation, generation_path


@dataclass(frozen=True, slots=True)
class Registered:
    version: int  # the registry version the change committed
    generation: int  # the host's generation it counted (registry.generation)
    workers: list[Row]  # the stored rows (store.WORKER_COLUMNS, JSON as text), in the order given
    routes: list[Row]  # the models' route rows read back in the same transaction (store.ROUTE_COLUMNS)


class Registry:
    def __init__(self, db: Database, generation: Generation | None = None):
        self.db = db
        self.generation = generation if generation is not None else Generation(generation_path(db.url))

    @contextmanager
    def _change(self) -> Iterator[tuple[Session, list[int]]]:
        """A write transaction that moves the version once at its end, if the block says routing changed (by
        appending to the list it is given); the new version, then the generation, are appended there too. A
        change is counted in the host's generation after it commits and before the caller can acknowledge
        it, and on PostgreSQL announced to every instance as it commits (NOTIFY)."""
        with self.db.write() as session:
            changed: list[int] = []
            yield session, changed
            if changed:
                version = store.bump_version(session)
                changed.append(version)
                if session.bind.dialect.name == "postgresql":
                    store.announce_change(session, version)
        if changed:
            changed.append(self.generation.bump())

    def register(self, entries: Sequence[tuple[str, str, dict[str, Any]]], models: Collection[str]) -> Registered:
        """Insert or update every (model_name, req_url_template, admin fields) in one transaction."""
        with self._change() as (session, changed):
            workers = [store.upsert_worker(session, model, url, fields) for model, url, fields in entries]
            changed.append(1)
            # Read back in the same transaction, so this process routes on them before the reply.
            routes = store.route_rows(session, models).all()
        return Registered(changed[-2], changed[-1], workers, routes)

    def remove(self, model_name: str, req_url_template: str) -> Registered | None:
        """Delete the worker; None if there is none. The model's remaining route rows are read back."""
        with self._change() as (session, changed):
            if store.delete_worker(session, model_name, req_url_template):
                changed.append(1)
                routes = store.route_rows(session, {model_name}).all()
        return Registered(changed[-2], changed[-1], [], routes) if changed else None

    def count_failure(self, worker_id: int, error: str, now: datetime, threshold: int,
                      cooldown_until: datetime) -> bool:
        """Count one failed request of the worker; start its cooldown at `threshold` in a row. Returns whether
        it started."""
        with self._change() as (session, changed):
            failures = store.add_passive_failure(session, worker_id, error, now)
            if failures is not None and failures >= threshold:
                store.start_cooldown(session, worker_id, cooldown_until)
                changed.append(1)
        return bool(changed)

    def reset_failures(self, worker_id: int) -> None:
        with self.db.write() as session:
            store.reset_passive_failures(session, worker_id)

    def save_probes(self, updates: Sequence[dict[str, Any]], statuses_changed: bool) -> None:
        """One health round's observations; a status that changed moves the version."""
        with self._change() as (session, changed):
            store.save_probe_results(session, updates)
            if statuses_changed:
                changed.append(1)
