"""The registry tables: workers (admin and observed state), the registry version, and leases."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything is stored in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


class Base(DeclarativeBase):
    pass


class Worker(Base):
    """One inference endpoint of a model, identified by (model_name, req_url_template)."""

    __tablename__ = "workers"
    # AUTOINCREMENT: SQLite would otherwise reuse a removed worker's id, and ids name workers in
    # replies, logs and metrics.
    __table_args__ = (
        UniqueConstraint("model_name", "req_url_template", name="uq_workers_model_url"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    req_url_template: Mapped[str] = mapped_column(String(2048))
    owner: Mapped[str] = mapped_column(String(128), default="")
    req_type: Mapped[str] = mapped_column(String(8), default="POST")
    body: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    response_extract: Mapped[str] = mapped_column(String(1024), default="")
    api_format: Mapped[str] = mapped_column(String(16), default="template")
    upstream_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_type: Mapped[str] = mapped_column(String(32), default="chat")
    health_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    retry_on_timeout: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # Admin state: what the operator asked for.
    weight: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Moves only when the operator changes the worker (registration), never on health updates.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # Observed state: what health checks and real traffic saw. Written by the health subsystem only.
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The last failure, kept until a success proves it stale: a passing probe clears a probe's error, a
    # successful request a request's (a probe passing while requests fail must not hide why they fail).
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error_source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "probe" | "request"
    # Failed active probes in a row.
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Failed real requests in a row, counted across every process; reaching the threshold starts a cooldown.
    passive_failures: Mapped[int] = mapped_column(Integer, default=0)
    cooldown_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RegistryVersion(Base):
    """A single row whose counter moves on every registry change, so processes can poll one cheap value."""

    __tablename__ = "registry_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class Lease(Base):
    """A named lease (e.g. the health checker's) held by one process until it expires."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
