"""The one gunicorn runner of both servers: a WSGI app served by gunicorn from Python (never Flask's dev server).

`run(factory, settings)` takes gunicorn's settings as a module (the manager's `gunicorn_conf`, whose
non-setting names are skipped) or as a dict (the llmserver's, built from its own settings, where an
unknown name is a mistake). Hooks are settings like any other (`when_ready`, `on_exit`, ...).
`before_stop` is the one thing gunicorn has no hook for: it runs in the master when a stop signal
(SIGTERM, SIGINT, SIGQUIT) arrives, before gunicorn starts stopping the workers, which still serve
meanwhile; the llmserver leaves the manager's listing there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter


class Server(BaseApplication):
    """gunicorn configured in code: no configuration file and no command line are read."""

    def __init__(
        self,
        factory: Callable[[], Any],
        settings: ModuleType | Mapping[str, Any],
        *,
        name: str = "operategpt",
        before_stop: Callable[[], None] | None = None,
    ):
        self._factory = factory
        self._settings = settings
        self.name = name
        self._before_stop = before_stop
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        if isinstance(self._settings, ModuleType):
            module = self._settings
            values = {name: getattr(module, name) for name in dir(module) if name in self.cfg.settings}
        else:
            unknown = sorted(set(self._settings) - set(self.cfg.settings))
            if unknown:
                raise ValueError(f"unknown gunicorn settings: {', '.join(unknown)}")
            values = dict(self._settings)
        for name, value in values.items():
            if value is not None:
                self.cfg.set(name, value)

    def load(self) -> Any:
        return self._factory()

    def run(self) -> None:
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:
            # What gunicorn raises for a setting it cannot use; it would print it between blank lines.
            raise SystemExit(f"{self.name}: {exc}") from None

    def before_stop(self) -> None:
        if self._before_stop is not None:
            self._before_stop()


class _Arbiter(Arbiter):
    """gunicorn's master, running the application's `before_stop` when told to stop, before stopping."""

    app: Server

    def handle_term(self) -> None:
        self.app.before_stop()
        super().handle_term()

    def handle_int(self) -> None:
        self.app.before_stop()
        super().handle_int()

    def handle_quit(self) -> None:
        self.app.before_stop()
        super().handle_quit()


def run(
    factory: Callable[[], Any],
    settings: ModuleType | Mapping[str, Any],
    *,
    name: str = "operategpt",
    before_stop: Callable[[], None] | None = None,
) -> None:
    """Serve `factory()`'s app with gunicorn in the foreground until a signal stops it."""
    Server(factory, settings, name=name, before_stop=before_stop).run()
