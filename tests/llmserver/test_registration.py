"""Self-registration against a fake manager on loopback: register, re-register, back off, go offline."""

from __future__ import annotations

import logging

import pytest

from operategpt.llmserver.config import ServerSettings
from operategpt.llmserver.registration import Registrar, RegistrationError
from tests.llmserver.conftest import FakeManager, eventually
from tests.support.servers import free_port


def settings_for(manager_url: str, **overrides: object) -> ServerSettings:
    env = {
        "LLM_NAME": "proxyllm",
        "OPEN_AI_KEY": "sk-x",
        "LLM_MANAGER_URL": manager_url,
        "LLM_SERVER_PORT": "8123",
        "LLM_REGISTER_INTERVAL": "0.1",
    }
    return ServerSettings.from_env(env, **overrides)


def test_registration_body_is_what_the_manager_expects(fake_manager: FakeManager) -> None:
    registrar = Registrar(settings_for(fake_manager.url, weight=3))
    registrar.register()
    [call] = fake_manager.calls("/api/server/register")
    assert "Authorization" not in call.headers
    # An openai-format worker: the manager passes OpenAI requests (streams, max_tokens, whole conversations)
    # through to /v1/chat/completions instead of rendering a template into /api/generate.
    assert call.json() == {
        "model_name": "proxyllm",
        "req_url_template": "http://127.0.0.1:8123/v1/chat/completions",
        "api_format": "openai",
        "owner": "operategpt",
        "health_url": "http://127.0.0.1:8123/health",
        "weight": 3,
    }
    assert registrar.is_listed()


def test_admin_token_is_sent_when_set() -> None:
    manager = FakeManager(token="s3cret")
    with manager.server:
        Registrar(settings_for(manager.url, manager_admin_token="s3cret")).register()
        assert manager.calls("/api/server/register")[0].headers["Authorization"] == "Bearer s3cret"
        with pytest.raises(RegistrationError, match=r"HTTP 401.*MANAGER_ADMIN_TOKEN"):
            Registrar(settings_for(manager.url, manager_admin_token="wrong")).register()


CHAT_URL = "http://127.0.0.1:8123/v1/chat/completions"


def test_an_operators_offline_sticks_until_the_server_is_registered_again(fake_manager: FakeManager, caplog) -> None:
    registrar = Registrar(settings_for(fake_manager.url))
    registrar.start()
    try:
        assert eventually(lambda: bool(fake_manager.workers), timeout=5)
        with caplog.at_level(logging.WARNING, logger="operategpt.llmserver.registration"):
            fake_manager.forget()  # the operator's POST /api/server/offline, the manager answering throughout
            assert eventually(lambda: registrar.taken_offline, timeout=5)
            rounds = len(fake_manager.calls("/api/server/workers"))
            assert eventually(lambda: len(fake_manager.calls("/api/server/workers")) >= rounds + 5, timeout=5)
        assert fake_manager.workers == {}
        assert len(fake_manager.calls("/api/server/register")) == 1
        assert "taken offline by the operator" in caplog.text
        assert fake_manager.calls("/api/server/workers")[0].query == "model_name=proxyllm"

        # Registered again by hand: the server watches that row again (and leaves it at stop).
        Registrar(settings_for(fake_manager.url)).register()
        assert eventually(lambda: not registrar.taken_offline, timeout=5)
    finally:
        registrar.stop()
    assert fake_manager.workers == {}
    left = fake_manager.calls("/api/server/offline")[-1].json()
    assert left == {"model_name": "proxyllm", "req_url_template": CHAT_URL}


def test_after_a_manager_outage_a_missing_row_is_registered_again_drained_as_it_was(
    fake_manager: FakeManager,
) -> None:
    registrar = Registrar(settings_for(fake_manager.url, weight=3))
    registrar.start()
    try:
        assert eventually(lambda: bool(fake_manager.workers), timeout=5)
        # The operator drains it and moves it to a fallback tier; the server sees that in its next rounds.
        fake_manager.workers[("proxyllm", CHAT_URL)].update(weight=0, priority=5)
        rounds = len(fake_manager.calls("/api/server/workers"))
        assert eventually(lambda: len(fake_manager.calls("/api/server/workers")) >= rounds + 2, timeout=5)
        # The manager goes away and comes back with an empty registry.
        fake_manager.down = True
        failed = len(fake_manager.seen)
        assert eventually(lambda: len(fake_manager.seen) >= failed + 1, timeout=5)
        fake_manager.forget()
        fake_manager.down = False
        assert eventually(lambda: bool(fake_manager.workers), timeout=5)
    finally:
        registrar.stop(take_offline=False)
    row = fake_manager.workers[("proxyllm", CHAT_URL)]
    assert (row["weight"], row["priority"]) == (0, 5)
    assert not registrar.taken_offline


def test_a_restarted_server_keeps_the_weight_and_priority_of_its_listed_row(fake_manager: FakeManager) -> None:
    # A server that crashed (no offline) left its row, drained since by the operator; LLM_WEIGHT=3 is for new rows.
    Registrar(settings_for(fake_manager.url, weight=3)).register()
    fake_manager.workers[("proxyllm", CHAT_URL)].update(weight=0, priority=-1)
    Registrar(settings_for(fake_manager.url, weight=3)).register()
    registered = fake_manager.calls("/api/server/register")[-1].json()
    assert (registered["weight"], registered["priority"]) == (0, -1)
    assert (fake_manager.workers[("proxyllm", CHAT_URL)]["weight"]) == 0


def test_waits_for_its_own_health_before_registering(fake_manager: FakeManager) -> None:
    ready = {"now": False}
    registrar = Registrar(settings_for(fake_manager.url), ready_check=lambda: ready["now"])
    registrar.start()
    try:
        assert not eventually(lambda: bool(fake_manager.seen), timeout=0.5)
        ready["now"] = True
        assert eventually(lambda: bool(fake_manager.workers), timeout=5)
    finally:
        registrar.stop()


def test_a_down_manager_is_retried_without_crashing(fake_manager: FakeManager, caplog) -> None:
    fake_manager.down = True
    registrar = Registrar(settings_for(fake_manager.url))
    with caplog.at_level(logging.WARNING, logger="operategpt.llmserver.registration"):
        registrar.start()
        try:
            assert eventually(lambda: len(fake_manager.seen) >= 2, timeout=5)
            assert fake_manager.workers == {}
            fake_manager.down = False
            assert eventually(lambda: bool(fake_manager.workers), timeout=5)
        finally:
            registrar.stop()
    assert "HTTP 503: manager is down" in caplog.text


def test_an_unreachable_manager_never_raises_out_of_stop() -> None:
    registrar = Registrar(settings_for(f"http://127.0.0.1:{free_port()}"))
    registrar.start()
    registrar.stop()
    assert registrar.offline() is False


def test_offline_accepts_an_already_forgotten_server(fake_manager: FakeManager) -> None:
    assert Registrar(settings_for(fake_manager.url)).offline() is True


OLD_TEMPLATE_ROW = {
    "model_name": "proxyllm",
    "req_url_template": "http://127.0.0.1:8123/api/generate",
    "body": {"input": "{USER_PROMPT}", "temperature": "{MODEL_TEMPERATURE}"},
    "owner": "operategpt",
    "response_extract": "",
    "health_url": "http://127.0.0.1:8123/health",
}


def test_the_template_row_of_an_older_version_is_replaced_keeping_its_weight_and_priority(
    fake_manager: FakeManager,
) -> None:
    # What an llmserver before the openai format registered, later drained by the operator.
    fake_manager.workers[("proxyllm", OLD_TEMPLATE_ROW["req_url_template"])] = {
        **OLD_TEMPLATE_ROW, "api_format": "template", "weight": 0, "priority": 2,
    }
    Registrar(settings_for(fake_manager.url, weight=3)).register()
    assert list(fake_manager.workers) == [("proxyllm", "http://127.0.0.1:8123/v1/chat/completions")]
    row = fake_manager.workers[("proxyllm", "http://127.0.0.1:8123/v1/chat/completions")]
    assert (row["api_format"], row["weight"], row["priority"]) == ("openai", 0, 2)


def test_a_template_row_registered_by_hand_on_api_generate_is_left_alone(fake_manager: FakeManager) -> None:
    by_hand = {**OLD_TEMPLATE_ROW, "body": {"input": "{USER_PROMPT}", "model_name": "{MODEL_NAME}"}, "weight": 5}
    fake_manager.workers[("proxyllm", by_hand["req_url_template"])] = by_hand
    Registrar(settings_for(fake_manager.url)).register()
    assert fake_manager.workers[("proxyllm", by_hand["req_url_template"])] == by_hand
    assert fake_manager.workers[("proxyllm", "http://127.0.0.1:8123/v1/chat/completions")]["weight"] == 1
    assert fake_manager.calls("/api/server/offline") == []
