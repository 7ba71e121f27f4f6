"""Data access for the worker registry. Functions take a Session and never commit: the caller owns the transaction."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Result,
    Row,
    Text,
    bindparam,
    case,
    cast,
    delete,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from operategpt.gateway.registry.models import Lease, RegistryVersion, Worker, utcnow

# Columns an operator sets through registration; everything else on the row is observed state.
ADMIN_FIELDS = (
    "owner",
    "req_type",
    "body",
    "headers",
    "response_extract",
    "api_format",
    "upstream_model",
    "model_type",
    "health_url",
    "timeout_s",
    "retry_on_timeout",
    "weight",
    "priority",
)

# Every column of a worker, in the order the API lists them.
WORKER_COLUMNS = (
    "id",
    "model_name",
    "req_url_template",
    *ADMIN_FIELDS,
    "status",
    "last_checked_at",
    "last_error",
    "last_error_at",
    "last_error_source",
    "consecutive_failures",
    "passive_failures",
    "last_latency_ms",
    "cooldown_until",
    "created_at",
    "updated_at",
)

# What routing needs of a worker.
ROUTE_COLUMNS = (
    "id",
    "model_name",
    "model_type",
    "api_format",
    "upstream_model",
    "req_type",
    "timeout_s",
    "retry_on_timeout",
    "weight",
    "priority",
    "status",
    "cooldown_until",
    "updated_at",
    "req_url_template",
    "response_extract",
    "body",
    "headers",
)

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
WORKERS = Worker.__table__


def _columns(names: Sequence[str], as_text: Collection[str] = ()) -> tuple[ColumnElement[Any], ...]:
    return tuple(cast(WORKERS.c[name], Text).label(name) if name in as_text else WORKERS.c[name] for name in names)


_WORKER_COLUMNS = _columns(WORKER_COLUMNS)
# The JSON columns as their stored text, to decode only what is needed: workers of one server software share
# their templates.
_WORKER_COLUMNS_JSON_AS_TEXT = _columns(WORKER_COLUMNS, as_text=("body", "headers"))
# Text also hashes, so a routing reload can key its cache by row; and updated_at there only tells whether a
# worker was registered again, so it is compared, never parsed.
_ROUTE_COLUMNS = _columns(ROUTE_COLUMNS, as_text=("body", "headers", "updated_at"))


@functools.cache
def _upsert(dialect: str) -> Executable:
    """The registration upsert, built once per dialect so every call reuses its compiled form."""
    stmt = _INSERTS[dialect](WORKERS).values(
        **{name: bindparam(name) for name in ("model_name", "req_url_template", *ADMIN_FIELDS)},
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
        status="unknown",
        consecutive_failures=0,
        passive_failures=0,
    )
    return stmt.on_conflict_do_update(
        index_elements=["model_name", "req_url_template"],
        set_={**{name: stmt.excluded[name] for name in ADMIN_FIELDS}, "updated_at": stmt.excluded.updated_at},
    ).returning(*_WORKER_COLUMNS_JSON_AS_TEXT)


def upsert_worker(session: Session, model_name: str, req_url_template: str, fields: dict[str, Any]) -> Row:
    """Insert the worker or update it in place; one statement, so concurrent registrations cannot race.

    `fields` holds every ADMIN_FIELDS column. Returns the stored row (WORKER_COLUMNS, JSON as text); the caller
    moves the registry version.
    """
    params = {"model_name": model_name, "req_url_template": req_url_template, "now": utcnow(), **fields}
    return session.execute(_upsert(session.get_bind().dialect.name), params).one()


def delete_worker(session: Session, model_name: str, req_url_template: str) -> bool:
    result = session.execute(
        delete(Worker).where(Worker.model_name == model_name, Worker.req_url_template == req_url_template)
    )
    return bool(result.rowcount)


def list_workers(session: Session, model_name: str | None = None, *, json_as_text: bool = False) -> Result[Any]:
    """Workers as rows of WORKER_COLUMNS, fetched as they are read (read them before the session ends): plain
    rows, not ORM objects, for a listing of 10,000 workers."""
    stmt = select(*(_WORKER_COLUMNS_JSON_AS_TEXT if json_as_text else _WORKER_COLUMNS))
    stmt = stmt.order_by(WORKERS.c.model_name, WORKERS.c.id)
    if model_name is not None:
        stmt = stmt.where(WORKERS.c.model_name == model_name)
    return session.execute(stmt)


# Statements of the hot paths are built once: SQLAlchemy then reuses their compiled form instead of building
# and hashing a new statement on every call.
_ALL_ROUTE_ROWS = select(*_ROUTE_COLUMNS).order_by(WORKERS.c.id)
_MODEL_ROUTE_ROWS = _ALL_ROUTE_ROWS.where(WORKERS.c.model_name.in_(bindparam("models", expanding=True)))


def route_rows(session: Session, models: Collection[str] | None = None) -> Result[Any]:
    """Rows of ROUTE_COLUMNS for every worker, or for these models' workers only; in id order.

    Fetched as they are read, so read them before the session ends. A routing reload holding all 10,000 at
    once would age them past the garbage collector's young generations and bring on full collections.
    """
    if models is None:
        return session.execute(_ALL_ROUTE_ROWS)
    return session.execute(_MODEL_ROUTE_ROWS, {"models": list(models)})


_VERSION = RegistryVersion.__table__
_READ_VERSION = select(_VERSION.c.version).where(_VERSION.c.id == 1)
_BUMP_VERSION = (
    update(_VERSION).where(_VERSION.c.id == 1).values(version=_VERSION.c.version + 1).returning(_VERSION.c.version)
)


def current_version(session: Session) -> int:
    return session.execute(_READ_VERSION).scalar_one()


def bump_version(session: Session) -> int:
    """Move the registry version; returns the new one. Only `Registry` calls it (the version's one owner)."""
    return session.execute(_BUMP_VERSION).scalar_one()


# PostgreSQL delivers a NOTIFY on this channel when (and only if) its transaction commits.
CHANGES_CHANNEL = "operategpt_registry"
_ANNOUNCE = text(f"SELECT pg_notify('{CHANGES_CHANNEL}', :version)")


def announce_change(session: Session, version: int) -> None:
    """Tell every listening instance (registry.changes) that `version` is committed, as it commits."""
    session.execute(_ANNOUNCE, {"version": str(version)})


# -- observed state (written by the health subsystem) ---------------------------------------


def probe_rows(session: Session) -> Sequence[Row]:
    """What an active health round needs of every worker."""
    return session.execute(
        select(
            Worker.id,
            Worker.model_name,
            Worker.req_url_template,
            Worker.health_url,
            Worker.status,
            Worker.consecutive_failures,
            Worker.cooldown_until,
        ).order_by(Worker.id)
    ).all()


def save_probe_results(session: Session, updates: Sequence[dict[str, Any]]) -> None:
    """Write one round's observed state; each dict has `worker_id` and the observed columns it changes, and
    `passed` (True) for a probe that passed: that ends a cooldown and clears an error a probe had seen, not one
    a request saw.

    Workers that share a probe target mostly share what was observed, so the workers given the same values are
    written together: one UPDATE per distinct set of values (per 1,000 workers) instead of one per worker, which
    at 10,000 workers took half of a round's CPU.
    """
    together: dict[tuple[tuple[str, Any], ...], list[int]] = {}
    for values in updates:
        values = dict(values)
        worker_id = values.pop("worker_id")
        together.setdefault(tuple(values.items()), []).append(worker_id)
    connection = session.connection()
    for key, ids in together.items():
        statement = _save_probe_statement(tuple(name for name, _ in key))
        for start in range(0, len(ids), _IDS_PER_STATEMENT):
            connection.execute(statement, {**dict(key), "ids": ids[start:start + _IDS_PER_STATEMENT]})


# Bound parameters per statement stay well under SQLite's and PostgreSQL's limits (32,766 and 65,535).
_IDS_PER_STATEMENT = 1000


@functools.cache
def _save_probe_statement(columns: tuple[str, ...]) -> Executable:
    values: dict[str, Any] = {name: bindparam(name) for name in columns if name != "passed"}
    if "passed" in columns:
        values.update(cooldown_until=None, **_clear_error_seen_by("probe"))
    return update(WORKERS).where(WORKERS.c.id.in_(bindparam("ids", expanding=True))).values(values)


def _clear_error_seen_by(source: str) -> dict[str, Any]:
    """Column values clearing the last error if `source` saw it, else keeping it."""
    seen = WORKERS.c.last_error_source == source
    return {name: case((seen, None), else_=WORKERS.c[name])
            for name in ("last_error", "last_error_at", "last_error_source")}


def add_passive_failure(session: Session, worker_id: int, error: str, now: datetime) -> int | None:
    """Count one failed real request; returns the failures in a row now, or None if the worker is gone."""
    return session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(passive_failures=Worker.passive_failures + 1, last_error=error, last_error_at=now,
                last_error_source="request", last_checked_at=now)
        .returning(Worker.passive_failures)
    ).scalar_one_or_none()


def start_cooldown(session: Session, worker_id: int, until: datetime) -> None:
    session.execute(update(Worker).where(Worker.id == worker_id).values(cooldown_until=until, passive_failures=0))


def reset_passive_failures(session: Session, worker_id: int) -> None:
    """A real request succeeded: the failures in a row start again, and an error requests saw is stale."""
    session.execute(
        update(WORKERS)
        .where(WORKERS.c.id == worker_id,
               or_(WORKERS.c.passive_failures != 0, WORKERS.c.last_error_source == "request"))
        .values(passive_failures=0, **_clear_error_seen_by("request"))
    )


def take_lease(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take the lease if it is free or expired, or renew it if `holder` has it; atomic on SQLite and PostgreSQL."""
    renewed = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if renewed.rowcount:
        return True
    insert = _INSERTS[session.get_bind().dialect.name]
    # RETURNING rather than rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING (psycopg gives -1).
    created = session.execute(
        insert(Lease)
        .values(name=name, holder=holder, expires_at=now + ttl)
        .on_conflict_do_nothing()
        .returning(Lease.name)
    )
    return created.scalar_one_or_none() is not None


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
