"""Fixtures: every test gets a fresh migrated database and its own app; nothing global."""

from __future__ import annotations

import pytest

from operategpt.config import Settings
from operategpt.manager import create_app
from operategpt.manager.db import upgrade


@pytest.fixture
def database_url(tmp_path) -> str:
    url = "sqlite:///" + str(tmp_path / "registry.db")
    upgrade(url)
    return url


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
