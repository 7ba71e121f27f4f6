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
            return view(parse(schema, request.get_data()), *args, **kwargs)

        parsed.request_schema = schema  # type: ignore[attr-defined]
        return parsed  # type: ignore[return-value]

    return decorate


def documented(operation: Operation) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        view.operation = operation  # type: ignore[attr-defined]
        return view

    return decorate
