"""Data access for the worker registry. Functions take a Session and never commit: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from operategpt.manager.models import RegistryVersion, Worker, utcnow

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
