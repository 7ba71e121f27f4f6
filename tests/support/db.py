"""Reading a registry directly, on SQLite or PostgreSQL alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text


def query(url: str, sql: str, **params: Any) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def dump_registry(url: str) -> list[list[tuple]]:
    """Every row of every registry table, in a stable order: equal dumps mean an unchanged registry."""
    return [
        query(url, "select * from workers order by id"),
        query(url, "select * from registry_version order by id"),
        query(url, "select * from leases order by name"),
        query(url, "select * from alembic_version"),
    ]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")
