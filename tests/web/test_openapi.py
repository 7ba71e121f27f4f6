"""/openapi.json covers every route and shows the very schemas that validate requests."""

from __future__ import annotations

import pytest
from flask import Blueprint

from operategpt.schemas.openai import ChatCompletionRequest
from operategpt.schemas.seed import RegisterRequest
from operategpt.web.app import create_app
from operategpt.web.openapi import UNDOCUMENTED, UndocumentedRoute, build


def test_every_route_and_method_is_documented(app, client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED:
            continue
        path = rule.rule.replace("<path:model>", "{model}")
        served |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
    assert {"/api/server/register", "/api/v1/chat/completions", "/v1/chat/completions", "/openapi.json"} <= {
        path for path, _ in documented}


def test_request_bodies_are_the_validating_schemas(client):
    document = client.get("/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    register = document["paths"]["/api/server/register"]["post"]["requestBody"]["content"]["application/json"]
    assert register["schema"] == {"$ref": "#/components/schemas/RegisterRequest"}
    expected = RegisterRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["RegisterRequest"] == expected
    assert schemas["RegisterRequest"]["additionalProperties"] is False
    assert schemas["ChatCompletionRequest"] == {
        key: value for key, value in ChatCompletionRequest.model_json_schema(
            ref_template="#/components/schemas/{model}").items() if key != "$defs"}
    assert document["paths"]["/api/server/register"]["post"]["security"] == [{"bearer": []}]


def test_a_route_without_an_operation_cannot_be_served_undocumented(make_settings):
    app = create_app(make_settings())
    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/extra", "extra", lambda: "x")
    app.register_blueprint(extra)
    with pytest.raises(UndocumentedRoute, match="/extra"):
        build(app)
