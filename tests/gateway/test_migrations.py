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


def test_0003_reports_model_names_outside_the_character_set_and_changes_nothing(tmp_path, caplog):
    import logging

    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = create_engine(url)
    columns = ("model_name, req_url_template, owner, req_type, response_extract, api_format, model_type, weight, "
               "priority, created_at, updated_at, status, consecutive_failures, passive_failures, retry_on_timeout")
    with engine.begin() as conn:
        for name in ("good-model", "evil\nx", "evil x=1 status=200"):
            conn.execute(text(f"insert into workers ({columns}) values (:name, 'http://h/' || :name, '', 'POST', '',"
                              " 'template', 'chat', 1, 0, '2026-01-01', '2026-01-01', 'healthy', 0, 0, 0)"),
                         {"name": name})
    before = query(url, "select * from workers order by id")
    with caplog.at_level(logging.WARNING):
        upgrade(url, "0003")
    engine.dispose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 worker(s)" in warnings[0] and "'evil\\nx'" in warnings[0] and "'evil x=1 status=200'" in warnings[0]
    assert "good-model" not in warnings[0]
    assert query(url, "select * from workers order by id") == before


def test_0004_keeps_every_row_and_gives_old_errors_no_time_or_source(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0003")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "insert into workers (model_name, req_url_template, owner, req_type, response_extract, api_format,"
            " model_type, weight, priority, created_at, updated_at, status, consecutive_failures, passive_failures,"
            " retry_on_timeout, last_error) values ('m', 'http://h/m', '', 'POST', '', 'template', 'chat', 1, 0,"
            " '2026-01-01', '2026-01-01', 'unhealthy', 2, 0, 0, 'connect refused')")
    engine.dispose()
    upgrade(url)
    assert query(url, "select model_name, last_error, last_error_at, last_error_source from workers") == [
        ("m", "connect refused", None, None)]
