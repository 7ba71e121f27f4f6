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
    from operategpt import gunicorn_conf
    from operategpt.manager import create_app
    from operategpt.serve import run

    run(create_app, gunicorn_conf)


@click.group()
def main() -> None:
    """OperateGPT model gateway."""
    load_dotenv()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.group()
def db() -> None:
    """The registry database."""


@db.command()
def upgrade() -> None:
    """Apply the database migrations (DATABASE_URL, default the SQLite file in the data directory)."""
    from operategpt.manager.db import upgrade as run_upgrade

    settings = _settings()
    run_upgrade(settings.database_url)
    click.echo("database is at the latest revision")


@main.command()
def serve() -> None:
    """Run the manager (gateway) through gunicorn on LLM_MANAGE_SERVER_HOST:LLM_MANAGE_SERVER_PORT."""
    serve_manager()


@main.group()
def health() -> None:
    """Worker health."""


@health.command("check")
def health_check() -> None:
    """Probe every registered worker once, record the results, and print them."""
    from operategpt.manager.db import Database
    from operategpt.manager.health import HealthMonitor
    from operategpt.manager.routing import RoutingTable

    settings = _settings()
    db = Database(settings.database_url, pool_size=1)
    try:
        report = HealthMonitor(settings, db, RoutingTable(db, settings.registry_sync_interval)).run_round()
    finally:
        db.dispose()
    for worker_id, model, url, status, result in report.results:
        detail = f"{result.latency_ms:.1f} ms" if result.ok else result.error
        click.echo(f"{worker_id:>6}  {model:<24} {status:<9} {url}  {detail}")
    click.echo(f"{report.probed} probed, {report.healthy} healthy, {report.unhealthy} unhealthy "
               f"in {report.seconds:.2f} s")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
