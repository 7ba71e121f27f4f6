"""JSON replies: orjson writes them, with what Flask's own provider would write."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from operategpt.web.app import create_app


@pytest.fixture
def app(make_settings):
    return create_app(make_settings())


def reply_body(app, *args, **kwargs) -> bytes:
    with app.app_context():
        return app.json.response(*args, **kwargs).get_data()


def test_replies_are_compact_utf8_in_insertion_order(app):
    body = reply_body(app, zeta=1, alpha="模型 é ok", nested={"b": [1.5, None, True], "a": {}})
    assert body == '{"zeta":1,"alpha":"模型 é ok","nested":{"b":[1.5,null,true],"a":{}}}\n'.encode()


def test_integers_beyond_64_bits_are_written_exactly(app):
    # orjson cannot write them; an upstream's reply can hold one.
    body = reply_body(app, {"usage": {"tokens": 2**70}, "name": "é"})
    assert body == '{"usage":{"tokens":1180591620717411303424},"name":"é"}\n'.encode()
    assert json.loads(body)["usage"]["tokens"] == 2**70


def test_types_only_flask_knows_are_written_as_flask_writes_them(app):
    assert json.loads(reply_body(app, price=Decimal("1.10"))) == {"price": "1.10"}


def test_times_are_iso_8601_and_naive_ones_are_utc(app):
    aware = datetime(2026, 12, 2, 1, 2, 3, 450000, tzinfo=timezone.utc)
    naive = datetime(2026, 12, 2, 1, 2, 3)
    assert json.loads(reply_body(app, aware=aware, naive=naive)) == {
        "aware": "2026-12-02T01:02:03.450000+00:00", "naive": "2026-12-02T01:02:03+00:00"}


def test_a_value_json_cannot_hold_is_an_error_not_a_silent_reply(app):
    with pytest.raises(TypeError):
        reply_body(app, thing=object())


def test_dumps_with_options_uses_them(app):
    assert app.json.dumps({"b": 1, "a": 2}, sort_keys=True, indent=1) == '{\n "a": 2,\n "b": 1\n}'
    assert app.json.dumps({"b": 1, "a": [2]}) == '{"b":1,"a":[2]}'


def test_debug_replies_are_indented(app):
    app.debug = True
    assert reply_body(app, a=[1]) == b'{\n  "a": [\n    1\n  ]\n}\n'
