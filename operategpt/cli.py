"""The `operategpt` command: what an operator does by hand."""

from __future__ import annotations

import logging
import sys

import click
from dotenv import load_dotenv

from operategpt.config import ConfigError, Settings


def serve_manager() -> None:
    """Serve the manager through gunicorn with the shipped settings (migrations run in its master)."""
    load_dotenv()
    from operategpt.manager import create_app, gunicorn_conf
    from operategpt.serve import run

    run(create_app, gunicorn_conf)


@click.group()
def main() -> None:
    """OperateGPT model gateway."""
    load_dotenv()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@main.group()
def db() -> None:
    """The registry database."""


@db.command()
def upgrade() -> None:
    """Apply the database migrations (DATABASE_URL, default the SQLite file in the data directory)."""
    from operategpt.manager.db import upgrade as run_upgrade

    run_upgrade(_settings().database_url)
    click.echo("database is at the latest revision")


@main.command()
def serve() -> None:
    """Run the manager (gateway) through gunicorn on LLM_MANAGE_SERVER_HOST:LLM_MANAGE_SERVER_PORT."""
    serve_manager()


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
