"""Changes pushed across instances: PostgreSQL's LISTEN/NOTIFY.

Every change that moves the registry version also sends a NOTIFY in its transaction (`store.announce_change`),
which PostgreSQL delivers to every listening session when, and only when, it commits. Each process of each
instance keeps one connection listening and checks its routing table as a notification arrives, so a change
made through another instance is routed on within milliseconds rather than at the next periodic check.
Polling stays: while the connection is down the table is still checked every REGISTRY_SYNC_INTERVAL, and a
reconnected listener checks once for what it may have missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import make_url

from operategpt.gateway.registry.store import CHANGES_CHANNEL
from operategpt.http.redact import redact

log = logging.getLogger(__name__)

# How often the listening thread looks up from its connection to see whether it should stop.
_WAKE_S = 1.0
_MAX_BACKOFF_S = 30.0


class ChangeListener:
    def __init__(self, database_url: str, on_change: Callable[[], object]):
        url = make_url(database_url)
        # psycopg's own connection string: SQLAlchemy's URL without the "+psycopg" driver part.
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while a connection listens (for tests and /ready-like checks)

    @staticmethod
    def supports(database_url: str) -> bool:
        return make_url(database_url).get_backend_name() == "postgresql"

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="operategpt-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(_WAKE_S + 5)
        self._thread = None

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self.listening.set()
                    backoff = 0.5
                    # Anything committed while no connection listened is read now.
                    self._changed()
                    while not self._stop.is_set():
                        # Notifications that arrive together cost one check.
                        if list(conn.notifies(timeout=_WAKE_S, stop_after=1)):
                            list(conn.notifies(timeout=0.0))
                            self._changed()
            except Exception as exc:
                self.listening.clear()
                if self._stop.is_set():
                    return
                problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("registry change listener: %s; polling every REGISTRY_SYNC_INTERVAL meanwhile, "
                            "reconnecting in %.1f s", redact(problem), backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        self.listening.clear()

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.warning("routing table check after a registry change failed", exc_info=True)
