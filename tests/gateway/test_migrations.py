"""The migrations have one head and build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from operategpt.gateway.registry.db import alembic_config, upgrade
from operategpt.gateway.registry.models import Base
from tests.support.db import is_sqlite, query


def test_single_head(database_url):
    heads = ScriptDirectory.from_config(alembic_config(database_url)).get_heads()
    assert len(heads) == 1


def test_migrated_schema_matches_models(database_url):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_seeds_the_version_row(database_url):
    upgrade(database_url)
    assert query(database_url, "select id, version from registry_version") == [(1, 0)]
    if is_sqlite(database_url):
        assert query(database_url, "pragma journal_mode") == [("wal",)]
