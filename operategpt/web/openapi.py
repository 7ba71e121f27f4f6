"""/openapi.json: an OpenAPI 3.1 document built from the registered routes and the schemas that validate them.

Every route must carry an `Operation` (`docs.documented`); building the document fails
otherwise, so a new route cannot go undocumented.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from operategpt import __version__
from operategpt.web.docs import Operation

bp = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
UNDOCUMENTED = frozenset({"static"})


class UndocumentedRoute(RuntimeError):
    pass


def build(app: Flask) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in UNDOCUMENTED:
            continue
        view = app.view_functions[rule.endpoint]
        operation: Operation | None = getattr(view, "operation", None)
        if operation is None:
            raise UndocumentedRoute(f"route {rule.rule} ({rule.endpoint}) has no @documented Operation")
        path = _PATH_PARAM.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.endpoint, operation, getattr(view, "request_schema", None), list(rule.arguments), components
            )
    return {
        "openapi": "3.1.0",
        "info": {"title": "OperateGPT model manager", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(endpoint: str, operation: Operation, schema: type[BaseModel] | None, arguments: list[str],
               components: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": {str(status): _reply(reply, components) for status, reply in sorted(operation.replies.items())},
    }
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in arguments]
    parameters += [{"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
                   for name, text in operation.params]
    if parameters:
        result["parameters"] = parameters
    if schema is not None:
        content = {"application/json": {"schema": _ref(schema, components)}}
        result["requestBody"] = {"required": True, "content": content}
    if operation.auth is not None:
        result["security"] = [{"bearer": []}, {}] if operation.auth == "client" else [{"bearer": []}]
    return result


def _reply(reply: type[BaseModel] | str, components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(reply, str):
        return {"description": reply, "content": {reply: {"schema": {"type": "string"}}}}
    return {"description": reply.__name__, "content": {"application/json": {"schema": _ref(reply, components)}}}


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    document = current_app.extensions.get("operategpt.openapi")
    if document is None:
        document = current_app.extensions["operategpt.openapi"] = build(current_app)
    return jsonify(document)


openapi.operation = Operation("This document", {200: "application/json"}, tag="ops")  # type: ignore[attr-defined]
