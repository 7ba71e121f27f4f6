"""Fixtures: every test gets a fresh migrated registry and its own app; nothing global.

The registry is a SQLite file per test, or, when OPERATEGPT_TEST_POSTGRES_URL is set (an
admin URL such as postgresql+psycopg://postgres@127.0.0.1:5432/postgres), a schema per test
in a database created for the run and dropped after it. With the variable set, an
unreachable server fails the run: nothing is skipped.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url

from operategpt.gateway.registry.db import upgrade
from operategpt.settings import Settings
from operategpt.web.app import create_app

POSTGRES_ENV = "OPERATEGPT_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_database():
    """The database this run owns on the PostgreSQL server, or None on SQLite runs."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        yield None
        return
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"operategpt_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def new_registry_url(tmp_path, postgres_database: URL | None) -> str:
    """A fresh, migrated registry: its own SQLite file or its own PostgreSQL schema."""
    if postgres_database is None:
        url = "sqlite:///" + str(tmp_path / f"registry-{uuid.uuid4().hex[:6]}.db")
    else:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(postgres_database, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine.dispose()
        url = postgres_database.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    upgrade(url)
    return url


@pytest.fixture
def database_url(tmp_path, postgres_database) -> str:
    return new_registry_url(tmp_path, postgres_database)


@pytest.fixture
def make_settings(database_url):
    def make(**overrides) -> Settings:
        # No checker thread in unit tests: a test that wants one starts it.
        overrides.setdefault("health_checks", False)
        return Settings.from_env({}, database_url=database_url, **overrides)

    return make


@pytest.fixture
def app(make_settings):
    app = create_app(make_settings())
    yield app
    app.extensions["operategpt"].db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()
