"""ServerSettings: defaults, the environment's names, and the start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from operategpt.llmserver.config import ServerSettings
from operategpt.settings import ConfigError


def test_defaults_serve_the_bundled_smollm2_on_8008(smollm2_path: str) -> None:
    settings = ServerSettings.from_env({})
    assert settings.port == 8008
    assert settings.backend == "local"
    assert settings.model_path == smollm2_path
    assert settings.model_path.endswith(".gguf")
    assert settings.public_url == "http://127.0.0.1:8008"
    assert settings.chat_url == "http://127.0.0.1:8008/v1/chat/completions"
    assert settings.generate_url == "http://127.0.0.1:8008/api/generate"
    assert settings.health_url == "http://127.0.0.1:8008/health"
    assert settings.manager_url == ""
    assert settings.context_length == 2048
    assert settings.n_threads >= 1


def test_environment_names() -> None:
    settings = ServerSettings.from_env(
        {
            "LLM_NAME": "proxyllm",
            "LLM_SERVER_PORT": "9001",
            "OPEN_AI_PROXY_SERVER_URL": "https://api.example.com/v1/",
            "OPEN_AI_KEY": "sk-x",
            "PROXYLLM_BACKEND": "gpt-test",
            "LLM_MANAGER_URL": "http://manager:8007/",
            "MANAGER_ADMIN_TOKEN": "t0ken",
            "LLM_WEIGHT": "3",
            "LLM_REGISTER_INTERVAL": "2.5",
            "LLM_SERVER_PUBLIC_URL": "http://gpu-7.internal:9001/",
        }
    )
    assert settings.backend == "proxyllm"
    assert settings.port == 9001
    assert settings.proxy_url == "https://api.example.com/v1"
    assert settings.proxy_api_key == "sk-x"
    assert settings.proxy_model == "gpt-test"
    assert settings.manager_url == "http://manager:8007"
    assert settings.manager_admin_token == "t0ken"
    assert settings.weight == 3
    assert settings.register_interval == 2.5
    assert settings.chat_url == "http://gpu-7.internal:9001/v1/chat/completions"


def test_public_url_follows_the_port(smollm2_path: str) -> None:
    assert ServerSettings.from_env({"LLM_SERVER_PORT": "8010"}).public_url == "http://127.0.0.1:8010"


def test_proxy_without_a_key_is_a_start_up_error() -> None:
    with pytest.raises(ConfigError, match="OPEN_AI_KEY"):
        ServerSettings.from_env({"LLM_NAME": "proxyllm"})


def test_missing_model_file_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LLM_MODEL_PATH"):
        ServerSettings.from_env({"LLM_MODEL_PATH": str(tmp_path / "nope.gguf")})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LLM_SERVER_PORT", "eighty", "LLM_SERVER_PORT must be an integer"),
        ("LLM_SERVER_PORT", "70000", "LLM_SERVER_PORT must be <= 65535"),
        ("LLM_QUEUE_SIZE", "-1", "LLM_QUEUE_SIZE must be >= 0"),
        ("LLM_SERVER_PUBLIC_URL", "gpu-7:8008", "LLM_SERVER_PUBLIC_URL must be an absolute http"),
        ("LLM_MANAGER_URL", "ftp://manager", "LLM_MANAGER_URL must be an absolute http"),
        ("DEFAULT_TEMPERATURE", "3", "DEFAULT_TEMPERATURE must be <= 2"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of"),
    ],
)
def test_bad_values_are_named(smollm2_path: str, name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings.from_env({name: value})


def test_settings_are_frozen() -> None:
    settings = ServerSettings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
