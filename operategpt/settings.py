"""Settings read from the environment (a `.env` file is loaded by the entry points, not here)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

# gunicorn threads per process (GUNICORN_THREADS): requests each process holds in flight at once.
DEFAULT_THREADS = 512
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting has a value that cannot be used; raised at start-up, never per request."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default).strip()


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float | None = None) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _api_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """MANAGER_API_KEYS (comma-separated) plus MANAGER_API_KEYS_FILE (one key a line, # comments)."""
    keys = [key.strip() for key in env.get("MANAGER_API_KEYS", "").split(",")]
    path = env_str(env, "MANAGER_API_KEYS_FILE", "")
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"MANAGER_API_KEYS_FILE cannot be read: {exc.strerror}") from None
        keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
    return tuple(key for key in keys if key)


def _derived_instance_id(values: Mapping[str, object]) -> str:
    seed = "\n".join(str(values[name]) for name in ("server_host", "server_port", "database_url"))
    return hashlib.sha256(f"{socket.gethostname()}\n{seed}".encode()).hexdigest()[:16]


def with_overrides(settings_class: type, values: dict[str, object], overrides: Mapping[str, object]) -> None:
    """Put `overrides` (keyword arguments of a `from_env`) into `values`; ConfigError naming unknown ones."""
    unknown = set(overrides) - {f.name for f in fields(settings_class)}
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    values.update(overrides)


# The directory above the package: a source checkout (what `make install` installs, editable) when setup.py is there.
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]
ENV_FILE = ".env"


@dataclass(frozen=True)
class ProjectDir:
    """Where a relative OPERATEGPT_DATA_DIR (the default `data` included) is anchored, and why there."""

    path: Path
    reason: str


def project_dir(env: Mapping[str, str], cwd: Path | None = None) -> ProjectDir:
    """The same directory for the servers and the command line wherever either is started from.

    The directory of the `.env` file the entry points load (the first found from the working directory
    upward), else the checkout the package runs from, else the user's data directory
    (`$XDG_DATA_HOME/operategpt`, by default `~/.local/share/operategpt`) for an installed package.
    """
    start = (cwd or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / ENV_FILE).is_file():
            return ProjectDir(directory, f"the directory of {directory / ENV_FILE}")
    if (_PACKAGE_PARENT / "setup.py").is_file():
        return ProjectDir(_PACKAGE_PARENT, "the checkout operategpt runs from")
    base = env.get("XDG_DATA_HOME", "").strip() or str(Path(env.get("HOME", "") or Path.home()) / ".local/share")
    return ProjectDir(Path(base) / "operategpt", "the user's data directory")


def data_dir_of(env: Mapping[str, str], cwd: Path | None = None) -> tuple[Path, str]:
    """OPERATEGPT_DATA_DIR as an absolute path, and how it was found (for messages)."""
    raw = Path(env_str(env, "OPERATEGPT_DATA_DIR", "") or "data").expanduser()
    if raw.is_absolute():
        return raw, "OPERATEGPT_DATA_DIR"
    anchor = project_dir(env, cwd)
    return (anchor.path / raw).resolve(), f"OPERATEGPT_DATA_DIR={raw} in {anchor.reason}"


def default_database_url(data_dir: str | Path) -> str:
    return "sqlite:///" + str(Path(data_dir).resolve() / "operategpt.db")


@dataclass(frozen=True)
class Settings:
    """Everything the manager reads from its environment; see .env.example for each variable."""

    database_url: str
    data_dir: str = "data"
    # How the registry was chosen, for the command line's messages: DATABASE_URL, or how data_dir was found.
    database_source: str = "DATABASE_URL"
    auto_migrate: bool = True
    llm_name: str = "chatglm2-6b"
    default_temperature: float = 0.7
    lb_strategy: str = "weighted_random"
    registry_sync_interval: float = 1.0
    upstream_timeout: float = 120.0
    upstream_connect_timeout: float = 5.0
    upstream_max_bytes: int = 16 * 1024 * 1024
    upstream_pool_size: int = DEFAULT_THREADS
    db_pool_size: int = 10
    max_retries: int = 2
    max_content_length: int = 16 * 1024 * 1024
    request_deadline: float = 300.0
    health_checks: bool = True
    health_check_interval: float = 10.0
    health_check_timeout: float = 3.0
    health_check_concurrency: int = 1024
    health_unhealthy_threshold: int = 3
    health_lease_ttl: float = 30.0
    passive_failure_threshold: int = 3
    cooldown_seconds: float = 30.0
    admin_token: str | None = None
    upstream_allowed_hosts: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    # Where this instance listens (LLM_MANAGE_SERVER_HOST/PORT): worker URLs reaching it are refused.
    server_host: str = "127.0.0.1"
    server_port: int = 8007
    # This instance's mark in the Via header of its upstream calls (OPERATEGPT_INSTANCE_ID, or derived from the
    # host name, bind address and registry: the same in every gunicorn process of the instance).
    instance_id: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        data_dir, data_dir_source = data_dir_of(env)
        database_url = env_str(env, "DATABASE_URL", "")
        # One pooled upstream connection per thread that may call a worker at once; beyond that urllib3 opens
        # and closes a connection per request.
        threads = env_int(env, "GUNICORN_THREADS", DEFAULT_THREADS, 1)
        values: dict[str, object] = {
            "data_dir": str(data_dir),
            "database_url": database_url or default_database_url(data_dir),
            "auto_migrate": env_bool(env, "AUTO_MIGRATE", True),
            "llm_name": env_str(env, "LLM_NAME", "chatglm2-6b"),
            "default_temperature": env_float(env, "DEFAULT_TEMPERATURE", 0.7, 0.0),
            "lb_strategy": env_str(env, "LB_STRATEGY", "weighted_random"),
            "registry_sync_interval": env_float(env, "REGISTRY_SYNC_INTERVAL", 1.0, 0.05),
            "upstream_timeout": env_float(env, "UPSTREAM_TIMEOUT", 120.0, 0.001),
            "upstream_connect_timeout": env_float(env, "UPSTREAM_CONNECT_TIMEOUT", 5.0, 0.001),
            "upstream_max_bytes": env_int(env, "UPSTREAM_MAX_BYTES", 16 * 1024 * 1024, 1),
            "upstream_pool_size": env_int(env, "UPSTREAM_POOL_SIZE", threads, 1),
            "db_pool_size": env_int(env, "DB_POOL_SIZE", 10, 1),
            "max_retries": env_int(env, "MAX_RETRIES", 2, 0),
            "max_content_length": env_int(env, "MAX_CONTENT_LENGTH", 16 * 1024 * 1024, 1),
            "request_deadline": env_float(env, "REQUEST_DEADLINE", 300.0, 0.001),
            "health_checks": env_bool(env, "HEALTH_CHECKS", True),
            "health_check_interval": env_float(env, "HEALTH_CHECK_INTERVAL", 10.0, 0.05),
            "health_check_timeout": env_float(env, "HEALTH_CHECK_TIMEOUT", 3.0, 0.01),
            "health_check_concurrency": env_int(env, "HEALTH_CHECK_CONCURRENCY", 1024, 1),
            "health_unhealthy_threshold": env_int(env, "HEALTH_UNHEALTHY_THRESHOLD", 3, 1),
            "health_lease_ttl": env_float(env, "HEALTH_LEASE_TTL", 30.0, 0.1),
            "passive_failure_threshold": env_int(env, "PASSIVE_FAILURE_THRESHOLD", 3, 1),
            "cooldown_seconds": env_float(env, "COOLDOWN_SECONDS", 30.0, 0.0),
            "admin_token": env_str(env, "MANAGER_ADMIN_TOKEN", "") or None,
            "upstream_allowed_hosts": tuple(
                entry.strip() for entry in env.get("UPSTREAM_ALLOWED_HOSTS", "").split(",") if entry.strip()
            ),
            "api_keys": _api_keys(env),
            "server_host": env_str(env, "LLM_MANAGE_SERVER_HOST", "127.0.0.1"),
            "server_port": env_int(env, "LLM_MANAGE_SERVER_PORT", 8007, 0),
        }
        with_overrides(cls, values, overrides)
        default = not database_url and "database_url" not in overrides
        values.setdefault("database_source", f"the default registry: {data_dir_source}" if default else "DATABASE_URL")
        if not values.get("instance_id"):
            values["instance_id"] = env_str(env, "OPERATEGPT_INSTANCE_ID", "") or _derived_instance_id(values)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.health_lease_ttl <= settings.health_check_interval + settings.health_check_timeout:
            raise ConfigError(
                "HEALTH_LEASE_TTL must be longer than HEALTH_CHECK_INTERVAL + HEALTH_CHECK_TIMEOUT, "
                "or the checker's lease expires between its own rounds"
            )
        return settings
