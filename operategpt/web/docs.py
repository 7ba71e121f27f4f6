"""Route declarations that drive both request validation and the OpenAPI document.

`@accepts(Schema)` parses the request body with the same schema the document shows, so the
two cannot drift; `@documented(...)` states what a route answers. `/openapi.json` is built
from these attributes on the registered views (see `openapi.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel
from werkzeug.exceptions import RequestEntityTooLarge

from operategpt.schemas.seed import Schema, parse

F = TypeVar("F", bound=Callable[..., Any])

# A reply is a pydantic model (JSON) or a media type for bodies that are not JSON.
Reply = type[BaseModel] | str


@dataclass(frozen=True)
class Operation:
    summary: str
    replies: dict[int, Reply]
    auth: str | None = None  # "admin", "client" or None
    tag: str = "seed"
    params: tuple[tuple[str, str], ...] = field(default=())  # query parameters: (name, description)


def accepts(schema: type[Schema]) -> Callable[[F], F]:
    """Parse the JSON body with `schema` (400 naming every problem) and pass it to the view first."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def parsed(*args: Any, **kwargs: Any) -> Any:
            return view(parse(schema, _body()), *args, **kwargs)

        parsed.request_schema = schema  # type: ignore[attr-defined]
        return parsed  # type: ignore[return-value]

    return decorate


def _body() -> bytes:
    """The request body, never more than MAX_CONTENT_LENGTH (413 beyond it).

    Werkzeug enforces the limit on a declared Content-Length; a chunked body it only reads when the server says
    it terminates the stream (`wsgi.input_terminated`), and otherwise sees an empty body — a "not valid JSON"
    for what is really too large. The WSGI servers this runs under (gunicorn, werkzeug's) decode chunked
    bodies and end the stream at its last chunk, so such a body is read here, up to one byte over the limit.
    """
    if request.content_length is not None or "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return request.get_data()
    limit = request.max_content_length
    stream = request.environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while chunk := stream.read(64 * 1024):
        parts.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            raise RequestEntityTooLarge()
    return b"".join(parts)


def documented(operation: Operation) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        view.operation = operation  # type: ignore[attr-defined]
        return view

    return decorate
