"""Database engine and sessions, SQLite tuning, and running the Alembic migrations."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """One engine and session factory per process."""

    def __init__(self, url: str, pool_size: int = 10):
        self.url = url
        self.engine = make_engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        parsed = make_url(url)
        self._writer_turn = (
            _SqliteWriters(parsed.database).turn if parsed.get_backend_name() == "sqlite" else contextlib.nullcontext
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that takes the write lock up front and commits on success.

        On SQLite, a deferred transaction that reads and then writes can fail at once with
        "database is locked" when another process writes meanwhile; BEGIN IMMEDIATE waits
        on the busy timeout instead.
        """
        with self._sessions() as session, self._writer_turn():
            session.connection(execution_options={"sqlite_begin": "BEGIN IMMEDIATE"})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def readiness_problem(self) -> str | None:
        """None when the database answers and its schema is at the migrations' head, else what is wrong."""
        try:
            with self.engine.connect() as conn:
                current = set(MigrationContext.configure(conn).get_current_heads())
        except SQLAlchemyError as exc:
            return f"database unreachable ({type(exc.orig or exc).__name__})"
        expected = set(ScriptDirectory.from_config(alembic_config(self.url)).get_heads())
        if current != expected:
            return f"database schema is at {sorted(current) or 'no revision'}, migrations at {sorted(expected)}"
        return None

    def dispose(self) -> None:
        self.engine.dispose()


class _SqliteWriters:
    """Lets SQLite writers in one at a time: this process's threads queue on a mutex, processes on flock(2)
    of a file beside the database.

    Writers that find the database locked otherwise wait in SQLite's busy handler, which sleeps in steps
    growing to 100 ms, so the lock sits idle between their attempts; with 8 concurrent registrations over
    2 processes that halved the throughput. flock wakes the next writer as soon as the lock is released.
    """

    def __init__(self, database: str | None):
        self._path = f"{database}-writer.lock" if database and database != ":memory:" else None
        self._fd = -1
        self._mutex = threading.Lock()
        os.register_at_fork(after_in_child=functools.partial(_start_afresh, weakref.ref(self)))

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._mutex:
            if self._path is None:
                yield
                return
            if self._fd < 0:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def after_fork(self) -> None:
        # The parent's mutex may be held by a thread the child does not have, and a descriptor shared with the
        # parent shares its lock: the child starts with its own.
        self._mutex = threading.Lock()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _start_afresh(writers: weakref.ref[_SqliteWriters]) -> None:
    alive = writers()
    if alive is not None:
        alive.after_fork()


def make_engine(url: str, pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    _tune_sqlite(engine)
    return engine


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL: an acknowledged registration survives power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`; safe to run on an up-to-date database."""
    log.info("applying migrations to %s", make_url(url).render_as_string(hide_password=True))
    command.upgrade(alembic_config(url), revision)
