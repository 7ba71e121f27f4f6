"""Backends the inference server can run, chosen by name; add a backend by adding it to `BACKENDS`."""

from __future__ import annotations

from collections.abc import Callable

from operategpt.llmserver.backends.base import Backend
from operategpt.llmserver.backends.local import LocalBackend
from operategpt.llmserver.backends.proxy import ProxyBackend
from operategpt.llmserver.config import ServerSettings

BACKENDS: dict[str, Callable[[ServerSettings], Backend]] = {
    "proxyllm": ProxyBackend.from_settings,
    "local": LocalBackend.from_settings,
}


def build_backend(settings: ServerSettings) -> Backend:
    """The backend `settings.backend` names, ready to serve (a local model is loaded here)."""
    return BACKENDS[settings.backend](settings)
