"""Keeping this server listed in the manager: register at start, respect what the operator does, leave at stop.

A `Registrar` runs one background thread. It waits until the server answers its own `/health`
(so the manager never routes to a server still loading its model), registers, then every
`LLM_REGISTER_INTERVAL` seconds reads its row in the manager's listing. The operator's decisions win:

- A row the server finds listed keeps its weight and priority: the server re-sends them whenever it
  registers again (at a restart after a crash, after a manager outage), so a drain (`weight: 0`) or
  another tier survives. `LLM_WEIGHT` is the weight of a new row only.
- A row that disappears while the manager kept answering was taken offline by the operator: the server
  logs it and does not register again until it restarts (or the operator registers it again, after which
  it watches that row). Only a row missing after a manager outage the server saw (failed rounds in
  between; the manager may have come back with an empty registry) is registered again.

When the manager cannot be reached it retries with backoff; it never stops the server. `stop()` takes
the server offline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from operategpt.llmserver.config import ServerSettings

logger = logging.getLogger(__name__)

MANAGER_TIMEOUT = 5.0
FIRST_RETRY_DELAY = 1.0
READY_POLL_DELAY = 0.2
# The body older versions registered on `/api/generate` (a template worker); see `Registrar._is_legacy`.
LEGACY_BODY = {"input": "{USER_PROMPT}", "temperature": "{MODEL_TEMPERATURE}"}


class RegistrationError(Exception):
    """The manager could not be reached or refused a request; the message says which."""


class Registrar:
    """Registers one inference server (`settings`) with the manager at `settings.manager_url`."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        ready_check: Callable[[], bool] | None = None,
        session: requests.Session | None = None,
    ):
        if not settings.manager_url:
            raise ValueError("a Registrar needs LLM_MANAGER_URL")
        self.settings = settings
        self.manager_url = settings.manager_url
        self._ready_check = ready_check
        self._session = session or requests.Session()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        # What the last round saw (only the registrar's thread changes these after start()).
        self._kept: dict[str, Any] = {}  # the listed row's weight and priority
        self._taken_offline = False  # by someone else, while the manager kept answering
        self._manager_was_down = False

    @property
    def registration(self) -> dict[str, Any]:
        """The body of the register call: an `openai`-format worker on this server's `/v1/chat/completions`.

        The manager passes OpenAI requests through (streams, `max_tokens`, system messages and history reach
        the model) and turns a seed completion into a one-message chat whose answer it knows where to find.
        """
        return {
            "model_name": self.settings.llm_name,
            "req_url_template": self.settings.chat_url,
            "api_format": "openai",
            "owner": "operategpt",
            "health_url": self.settings.health_url,
            "weight": self.settings.weight,
        }

    def register(self) -> None:
        """Register (or update in place), then take offline the template registration of an older version.

        The weight and priority sent are those of this server's listed row, else of the older version's row,
        else the last ones seen listed, else LLM_WEIGHT and 0.
        """
        listed = self.listing()
        own = next((worker for worker in listed if self._is_own(worker)), None)
        legacy = next((worker for worker in listed if self._is_legacy(worker)), None)
        body = self.registration
        for row in (own, legacy):
            if row is not None:
                self._keep(row)
                break
        body.update(self._kept)
        reply = self._call("POST", "/api/server/register", json=body)
        self._kept = {"weight": body["weight"], "priority": body.get("priority", 0)}
        self._taken_offline = False
        logger.info(
            "registered %s at %s (weight %s, priority %s) with the manager %s: %s",
            self.settings.llm_name,
            self.settings.chat_url,
            body["weight"],
            body.get("priority", 0),
            self.manager_url,
            reply.get("msg", "ok"),
        )
        if legacy is not None and self._take_offline(self.settings.generate_url):
            logger.info(
                "replaced the template registration at %s (an older llmserver's) by the openai-format one",
                self.settings.generate_url,
            )

    def listing(self) -> list[dict[str, Any]]:
        """The manager's workers of this model."""
        reply = self._call("GET", "/api/server/workers", params={"model_name": self.settings.llm_name})
        workers = reply.get("data")
        if not isinstance(workers, list):
            raise RegistrationError("the manager's worker listing has no 'data' array")
        return [worker for worker in workers if isinstance(worker, dict)]

    def is_listed(self) -> bool:
        return any(self._is_own(worker) for worker in self.listing())

    def ensure_registered(self) -> bool:
        """One round of the loop after the first registration; True if it registered again.

        Raises RegistrationError when the manager cannot be asked; the next round then counts as after an outage.
        """
        try:
            own = next((worker for worker in self.listing() if self._is_own(worker)), None)
        except RegistrationError:
            self._manager_was_down = True
            raise
        was_down, self._manager_was_down = self._manager_was_down, False
        if own is not None:
            if self._taken_offline:
                logger.info("the manager %s lists this server again (registered by hand); watching it again",
                            self.manager_url)
                self._taken_offline = False
            self._keep(own)
            return False
        if self._taken_offline:
            return False
        if was_down:
            logger.warning(
                "the manager %s no longer lists this server after it could not be reached (it may have lost its "
                "registry); registering again",
                self.manager_url,
            )
            try:
                self.register()
            except RegistrationError:
                self._manager_was_down = True
                raise
            return True
        self._taken_offline = True
        logger.warning(
            "the manager %s no longer lists %s at %s: taken offline by the operator. Not registering again "
            "until this server restarts (or register it by hand)",
            self.manager_url,
            self.settings.llm_name,
            self.settings.chat_url,
        )
        return False

    @property
    def taken_offline(self) -> bool:
        """The operator took this server offline: it stays out until it restarts."""
        return self._taken_offline

    def offline(self) -> bool:
        """Ask the manager to drop this server; True when it is gone (404 counts: already gone)."""
        try:
            self._take_offline(self.settings.chat_url)
        except RegistrationError as exc:
            logger.error("could not take this server offline in the manager: %s", exc)
            return False
        logger.info("took %s at %s offline in the manager", self.settings.llm_name, self.settings.chat_url)
        return True

    def _take_offline(self, url: str) -> bool:
        """Offline the worker of this model at `url`; False when the manager had no such worker."""
        body = {"model_name": self.settings.llm_name, "req_url_template": url}
        reply = self._call("POST", "/api/server/offline", json=body, ok_statuses=(404,))
        return reply.get("success") is not False

    def _keep(self, row: dict[str, Any]) -> None:
        self._kept = {
            "weight": row.get("weight", self.settings.weight),
            "priority": row.get("priority", 0),
        }

    def _is_own(self, worker: dict[str, Any]) -> bool:
        return worker.get("model_name") == self.settings.llm_name and worker.get("req_url_template") == (
            self.settings.chat_url
        )

    def _is_legacy(self, worker: dict[str, Any]) -> bool:
        """The registration versions before the switch to the openai format made: a template worker on
        `/api/generate` with exactly their body. One registered by hand (any other body) is left alone."""
        return (
            worker.get("model_name") == self.settings.llm_name
            and worker.get("req_url_template") == self.settings.generate_url
            and worker.get("api_format", "template") == "template"
            and worker.get("body") == LEGACY_BODY
            and worker.get("response_extract", "") == ""
        )

    def start(self) -> None:
        """Start the background thread (once)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="llmserver-registrar", daemon=True)
            self._thread.start()

    def stop(self, take_offline: bool = True) -> None:
        """Stop the thread and (by default) take this server offline; safe to call more than once."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=MANAGER_TIMEOUT * 2)
        if take_offline:
            self.offline()

    def _run(self) -> None:
        if not self._wait_until_ready():
            return
        delay = FIRST_RETRY_DELAY
        registered = False
        while not self._stop.is_set():
            try:
                if registered:
                    self.ensure_registered()
                else:
                    self.register()
                    registered = True
                delay = FIRST_RETRY_DELAY
                wait = self.settings.register_interval
            except RegistrationError as exc:
                logger.warning("manager %s: %s; retrying in %.0f s", self.manager_url, exc, delay)
                wait = delay
                delay = min(delay * 2, max(self.settings.register_interval, FIRST_RETRY_DELAY))
            except Exception:
                logger.exception("registration round failed; retrying in %.0f s", delay)
                wait = delay
            self._stop.wait(wait)

    def _wait_until_ready(self) -> bool:
        if self._ready_check is None:
            return True
        started = time.monotonic()
        warned = False
        while not self._stop.is_set():
            if self._ready_check():
                return True
            if not warned and time.monotonic() - started > 60:
                logger.warning("still waiting for this server to answer /health before registering")
                warned = True
            self._stop.wait(READY_POLL_DELAY)
        return False

    def _call(self, method: str, path: str, ok_statuses: tuple[int, ...] = (), **kwargs: Any) -> dict[str, Any]:
        headers = {}
        if self.settings.manager_admin_token:
            headers["Authorization"] = f"Bearer {self.settings.manager_admin_token}"
        url = f"{self.manager_url}{path}"
        try:
            response = self._session.request(
                method, url, headers=headers, timeout=MANAGER_TIMEOUT, allow_redirects=False, **kwargs
            )
        except requests.RequestException as exc:
            raise RegistrationError(f"cannot reach {url}: {type(exc).__name__}") from None
        try:
            reply = response.json()
        except ValueError:
            reply = None
        message = reply.get("msg") if isinstance(reply, dict) else response.text[:200]
        if response.status_code in (401, 403):
            raise RegistrationError(
                f"{method} {path} refused with HTTP {response.status_code} ({message}); check MANAGER_ADMIN_TOKEN"
            )
        if response.status_code in ok_statuses:
            return reply if isinstance(reply, dict) else {}
        if not 200 <= response.status_code < 300:
            raise RegistrationError(f"{method} {path} answered HTTP {response.status_code}: {message}")
        if isinstance(reply, dict) and reply.get("success") is False:
            raise RegistrationError(f"{method} {path} answered success=false: {message}")
        return reply if isinstance(reply, dict) else {}


def local_health_check(settings: ServerSettings) -> Callable[[], bool]:
    """A check that this server answers `/health` on its bound address (not the public URL)."""
    host = settings.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}/health"

    def check() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return check
