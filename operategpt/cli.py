"""The `operategpt` command: what an operator does by hand.

The `workers` commands work on the registry database (DATABASE_URL) through the manager's own
gateway, so a worker the command line accepts is exactly one the HTTP API accepts, and running
managers see each change within REGISTRY_SYNC_INTERVAL. The default SQLite registry is found the way
the servers find it (`operategpt.settings.data_dir_of`), wherever the command runs; only `db upgrade`
creates one, and the other commands name the file they looked for when it is not there. Every failure
is one line on stderr, `error: …`, with exit status 1 (2 for a usage mistake, as click does).

Manager modules are imported inside the commands: they import prometheus_client, which must not be
loaded before `serve` has set PROMETHEUS_MULTIPROC_DIR (see operategpt/deploy/gunicorn_conf.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
import yaml
from dotenv import find_dotenv, load_dotenv
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from operategpt.errors import GatewayError
from operategpt.settings import ConfigError, Settings

if TYPE_CHECKING:
    from operategpt.gateway import Gateway
    from operategpt.schemas.seed import RegisterRequest, Schema

S = TypeVar("S", bound="Schema")


class CommandError(click.ClickException):
    """A failure the operator can act on: shown as one line, `error: <message>`, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _Commands(click.Group):
    """Where the failures an operator can cause become `error: …` lines, whichever command meets them.

    Bad settings, a rejected worker, an unusable database, a file that cannot be read.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, GatewayError) as exc:
            raise CommandError(str(exc)) from None
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise CommandError(f"registry database: {_one_line(str(cause))}") from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise CommandError(f"{where}{exc.strerror or exc}") from None


def serve_manager() -> None:
    """Serve the manager through gunicorn with the shipped settings (migrations run in its master)."""
    load_dotenv(find_dotenv(usecwd=True))
    from operategpt.deploy import gunicorn_conf
    from operategpt.deploy.run import run
    from operategpt.web.app import create_app

    run(create_app, gunicorn_conf)


@click.group(cls=_Commands)
def main() -> None:
    """OperateGPT model gateway.

    Settings come from the environment and a .env file (see .env.example); the registry is DATABASE_URL.
    """
    load_dotenv(find_dotenv(usecwd=True))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# -- servers ----------------------------------------------------------------------------------


@main.command()
def serve() -> None:
    """Run the manager (gateway).

    Through gunicorn with the shipped settings, on LLM_MANAGE_SERVER_HOST:LLM_MANAGE_SERVER_PORT.
    """
    serve_manager()


@main.command()
def llmserver() -> None:
    """Run the inference server.

    On LLM_SERVER_PORT; LLM_NAME picks the backend (see docs/llmserver.md).
    """
    from operategpt.llmserver.serve import main as run_llmserver

    try:
        run_llmserver()
    except SystemExit as exc:
        # The server exits with its reason as text (a setting it cannot use); keep the one error format.
        if isinstance(exc.code, str):
            raise CommandError(exc.code) from None
        raise


# -- database ---------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The registry database."""


@db.command()
def upgrade() -> None:
    """Apply the database migrations (DATABASE_URL, default the SQLite file in the data directory).

    Creates the registry (and its directory) when it is not there yet.
    """
    from operategpt.gateway.registry.db import upgrade as run_upgrade

    settings = Settings.from_env()
    run_upgrade(settings.database_url)
    click.echo(f"database {_where(settings)} is at the latest revision")


# -- health -----------------------------------------------------------------------------------


@main.group()
def health() -> None:
    """Worker health."""


@health.command("check")
def health_check() -> None:
    """Probe every registered worker once, record the results, and print them."""
    with _gateway(check_schema=False) as gateway:
        report = gateway.health.run_round()
    for worker_id, model, url, status, result in report.results:
        detail = f"{result.latency_ms:.1f} ms" if result.ok else result.error
        click.echo(f"{worker_id:>6}  {model:<24} {status:<9} {url}  {detail}")
    click.echo(f"{report.probed} probed, {report.healthy} healthy, {report.unhealthy} unhealthy "
               f"in {report.seconds:.2f} s")


# -- workers ----------------------------------------------------------------------------------


@main.group()
def workers() -> None:
    """The worker registry."""


@workers.command("list")
@click.option("--model", "model_name", metavar="NAME", help="Only this model's workers.")
@click.option("--json", "as_json", is_flag=True, help="JSON: the same objects as GET /api/server/workers.")
def workers_list(model_name: str | None, as_json: bool) -> None:
    """List the workers and their state.

    A table, or with --json their admin and observed state with secret header values masked.
    """
    with _gateway() as gateway:
        found = gateway.workers.list_workers(model_name)
        where = _where(gateway.settings)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False, default=_iso))
        return
    if not found:
        # The registry named: an empty listing from another registry than the manager's is the classic mistake.
        click.echo("no workers registered" + (f" for model {model_name}" if model_name else "") + f" in {where}")
        return
    rows = [
        (
            str(worker["id"]),
            worker["model_name"],
            worker["req_url_template"],
            worker["state"],
            str(worker["weight"]),
            str(worker["priority"]),
            _one_line(worker["last_error"] or ""),
        )
        for worker in found
    ]
    _echo_table(("ID", "MODEL", "URL", "STATUS", "WEIGHT", "PRIORITY", "LAST ERROR"), rows, numeric={0, 4, 5})


@workers.command("register")
@click.argument("file", metavar="FILE")
def workers_register(file: str) -> None:
    """Register the worker(s) in FILE, or update them in place.

    FILE (or - for stdin) holds one worker object or a list of them, with the fields of
    POST /api/server/register; .json files are read as JSON, anything else as YAML (which takes JSON too).
    Every worker is validated before any is registered, so one bad entry changes nothing.
    """
    _register_file(file)


@workers.command("offline", short_help="Remove a worker.")
@click.argument("model_name", metavar="MODEL")
@click.argument("req_url_template", metavar="URL")
def workers_offline(model_name: str, req_url_template: str) -> None:
    """Remove the worker of MODEL at URL (its req_url_template, exactly as registered)."""
    from operategpt.schemas.seed import OfflineRequest

    request = _parse(OfflineRequest, {"model_name": model_name, "req_url_template": req_url_template})
    with _gateway() as gateway:
        gateway.workers.offline(request)
    click.echo(f"removed worker model_name={model_name} url={req_url_template}")


@workers.command("export", short_help="Write every registration to a file (backup).")
@click.argument("file", metavar="[FILE]", default="-")
def workers_export(file: str) -> None:
    """Write every worker's registration to FILE, for backup or migration.

    A JSON list, to stdout when FILE is - (the default).

    The export is what `workers import` (and `workers register`) read back. It holds header values
    UNMASKED — API keys included — so keep it as secret as the keys themselves; a new FILE is created
    readable by its owner only.
    """
    from operategpt.http.redact import mask_headers

    with _gateway() as gateway:
        exported = gateway.workers.export()
    text = json.dumps(exported, indent=2, ensure_ascii=False) + "\n"
    if file == "-":
        click.echo(text, nl=False)
    else:
        with os.fdopen(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as out:
            out.write(text)
        click.echo(f"exported {_count(len(exported), 'worker')} to {file}")
    if any(mask_headers(worker["headers"]) != worker["headers"] for worker in exported):
        click.echo(f"warning: {'the export' if file == '-' else file} holds secret header values unmasked",
                   err=True)


@workers.command("import", short_help="Register every worker of an export.")
@click.argument("file", metavar="FILE")
def workers_import(file: str) -> None:
    """Register every worker of an export, updating those already registered.

    FILE is an export (- for stdin). All are validated before any is registered. Workers registered
    but absent from FILE are kept.
    """
    _register_file(file)


# -- helpers ----------------------------------------------------------------------------------


@contextmanager
def _gateway(check_schema: bool = True) -> Iterator[Gateway]:
    """The manager's gateway, built as the servers build it (`build_gateway`), with no background loop."""
    from operategpt.gateway import build_gateway

    settings = Settings.from_env()
    _require_registry(settings)
    gateway = build_gateway(replace(settings, db_pool_size=1))
    try:
        problem = gateway.db.readiness_problem() if check_schema else None
        if problem:
            hint = "; run `operategpt db upgrade`" if problem.startswith("database schema") else ""
            where = make_url(settings.database_url).render_as_string(hide_password=True)
            raise CommandError(f"{where}: {problem}{hint}")
        yield gateway
    finally:
        gateway.close()


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database, an in-memory one or a `file:` URI)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).resolve()


def _where(settings: Settings) -> str:
    path = _sqlite_file(settings.database_url)
    return str(path) if path is not None else make_url(settings.database_url).render_as_string(hide_password=True)


def _require_registry(settings: Settings) -> None:
    """A SQLite registry that is not there is refused: opening it would create an empty file and its directory."""
    path = _sqlite_file(settings.database_url)
    if path is not None and not path.is_file():
        raise CommandError(
            f"no registry at {path} ({settings.database_source}); start the manager, "
            "or run `operategpt db upgrade` to create it"
        )


def _register_file(file: str) -> None:
    entries = _load_entries(file)
    with _gateway() as gateway:
        requests = _validated(gateway, entries, file)
        for worker in gateway.workers.register_many(requests):
            verb = "registered" if worker["created_at"] == worker["updated_at"] else "updated"
            click.echo(f"{verb} worker {worker['id']}: {worker['model_name']} {worker['req_url_template']}")
    click.echo(f"{_count(len(requests), 'worker')} registered from {file}")


def _load_entries(file: str) -> list[Any]:
    """The worker objects in FILE: a JSON or YAML document holding one object or a list of them."""
    if file == "-":
        text = sys.stdin.read()
    else:
        with open(file, encoding="utf-8") as source:
            text = source.read()
    if file.endswith(".json"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{file}: not valid JSON: {exc}") from None
    else:
        try:
            document = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise CommandError(f"{file}: not valid YAML: {exc.problem or exc.context}{at}") from None
        except yaml.YAMLError as exc:
            raise CommandError(f"{file}: not valid YAML: {_one_line(str(exc))}") from None
    if document is None:
        raise CommandError(f"{file} holds no worker")
    return document if isinstance(document, list) else [document]


def _validated(gateway: Gateway, entries: Sequence[Any], file: str) -> list[RegisterRequest]:
    """Every entry checked as POST /api/server/register checks it, before any is registered.

    Registering as we go would leave half a file applied when its fifth worker is wrong.
    """
    from operategpt.schemas.seed import RegisterRequest

    requests = []
    for number, entry in enumerate(entries, 1):
        where = file
        if len(entries) > 1:
            where += f": worker {number}"
            if isinstance(entry, dict) and isinstance(entry.get("model_name"), str):
                where += f" ({entry['model_name']})"
        if not isinstance(entry, dict):
            raise CommandError(f"{where}: must be an object with model_name and req_url_template")
        try:
            request = _parse(RegisterRequest, entry)
            gateway.workers.check(request)
        except GatewayError as exc:
            raise CommandError(f"{where}: {exc.message}") from None
        requests.append(request)
    return requests


def _parse(schema: type[S], entry: dict[str, Any]) -> S:
    """Validate as the API validates a request body (strict JSON types, unknown fields refused)."""
    from operategpt.schemas.seed import parse

    # YAML reads some scalars as dates; as JSON they are the text the operator wrote.
    return parse(schema, json.dumps(entry, default=str).encode())


def _iso(value: Any) -> str:
    """Times as the API writes them: ISO 8601, naive ones in UTC."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _echo_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> None:
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
