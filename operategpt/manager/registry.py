"""Data access for the worker registry. Functions take a Session and never commit: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from operategpt.manager.models import Lease, RegistryVersion, Worker, utcnow

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
    "weight",
    "priority",
)

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def upsert_worker(session: Session, model_name: str, req_url_template: str, fields: dict[str, Any]) -> Worker:
    """Insert the worker or update it in place; one statement, so concurrent registrations cannot race."""
    insert = _INSERTS[session.get_bind().dialect.name]
    now = utcnow()
    values = {"model_name": model_name, "req_url_template": req_url_template, **fields}
    stmt = insert(Worker).values(
        **values,
        created_at=now,
        updated_at=now,
        status="unknown",
        consecutive_failures=0,
        passive_failures=0,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["model_name", "req_url_template"],
        set_={**{name: stmt.excluded[name] for name in fields}, "updated_at": now},
    ).returning(Worker.id)
    worker_id = session.execute(stmt).scalar_one()
    bump_version(session)
    return session.execute(
        select(Worker).where(Worker.id == worker_id).execution_options(populate_existing=True)
    ).scalar_one()


def delete_worker(session: Session, model_name: str, req_url_template: str) -> bool:
    result = session.execute(
        delete(Worker).where(Worker.model_name == model_name, Worker.req_url_template == req_url_template)
    )
    if result.rowcount:
        bump_version(session)
    return bool(result.rowcount)


def list_workers(session: Session, model_name: str | None = None) -> Sequence[Worker]:
    stmt = select(Worker).order_by(Worker.model_name, Worker.id)
    if model_name is not None:
        stmt = stmt.where(Worker.model_name == model_name)
    return session.execute(stmt).scalars().all()


def current_version(session: Session) -> int:
    return session.execute(select(RegistryVersion.version).where(RegistryVersion.id == 1)).scalar_one()


def bump_version(session: Session) -> None:
    session.execute(update(RegistryVersion).where(RegistryVersion.id == 1).values(version=RegistryVersion.version + 1))


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
        ).order_by(Worker.id)
    ).all()


def save_probe_results(session: Session, updates: Sequence[dict[str, Any]]) -> None:
    """Write one round's observed state; each dict has `worker_id` and the observed columns it changes."""
    if updates:
        session.connection().execute(
            update(Worker.__table__).where(Worker.__table__.c.id == bindparam("worker_id")), list(updates)
        )


def add_passive_failure(session: Session, worker_id: int, error: str, now: datetime) -> int | None:
    """Count one failed real request; returns the failures in a row now, or None if the worker is gone."""
    return session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(passive_failures=Worker.passive_failures + 1, last_error=error, last_checked_at=now)
        .returning(Worker.passive_failures)
    ).scalar_one_or_none()


def start_cooldown(session: Session, worker_id: int, until: datetime) -> None:
    session.execute(update(Worker).where(Worker.id == worker_id).values(cooldown_until=until, passive_failures=0))
    bump_version(session)


def reset_passive_failures(session: Session, worker_id: int) -> None:
    session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.passive_failures != 0).values(passive_failures=0)
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
