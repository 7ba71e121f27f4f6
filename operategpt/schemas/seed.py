"""Request schemas for the manager's routes: the one place request bodies are validated.

Each schema is a strict pydantic model, so JSON types are never coerced ("1" is not an
integer, 1.5 is not an integer) and unknown fields are refused.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from operategpt.errors import BadRequest

BUILTIN_PLACEHOLDERS = frozenset({"USER_PROMPT", "MODEL_TEMPERATURE", "MODEL_NAME", "MESSAGES"})
_PLACEHOLDER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    try:
        (parts.hostname or "").encode("idna")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except UnicodeError:
        raise ValueError("has a host name that cannot be looked up (invalid IDNA)") from None
    return value


def _json_container(value: Any) -> Any:
    if value is not None and not isinstance(value, (dict, list)):
        raise ValueError("must be a JSON object or array")
    return value


def _params(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if not _PLACEHOLDER_NAME.fullmatch(key):
            raise ValueError(f"key {key!r} is not an UPPER_SNAKE placeholder name")
        if key in BUILTIN_PLACEHOLDERS:
            raise ValueError(f"key {key!r} is a built-in placeholder and cannot be set through params")
    return value


# The pattern is shown in the OpenAPI document; _http_url enforces it with a clearer message.
HttpUrl = Annotated[
    str,
    Field(max_length=2048, json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+"}),
    AfterValidator(_http_url),
]
# Model names end up in log lines, metric labels and URLs: no spaces, `=`, quotes or control characters.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9._:/@+-]+$"
ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=MODEL_NAME_PATTERN)]
# RFC 9110 field names (tokens): anything else is either refused by the HTTP client at every call or, with
# `:`, CR or LF, a header injection.
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


class Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class Stored(Schema):
    """A request whose text is stored in the registry: PostgreSQL cannot hold a NUL character in text or JSON,
    so none is accepted (on any database), rather than a 500 from the insert."""

    @model_validator(mode="after")
    def _no_nul(self) -> Stored:
        for name in type(self).model_fields:
            if _has_nul(getattr(self, name)):
                raise ValueError(f"field '{name}' contains a NUL character")
        return self


class RegisterRequest(Stored):
    model_name: ModelName
    req_url_template: HttpUrl
    body: Annotated[Any, AfterValidator(_json_container)] = None
    owner: Annotated[str, Field(max_length=128)] = ""
    response_extract: Annotated[str, Field(max_length=1024)] = ""
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    priority: Annotated[int, Field(ge=-1_000_000, le=1_000_000)] = 0
    headers: dict[
        Annotated[str, Field(min_length=1, max_length=256, pattern=HEADER_NAME_PATTERN)],
        Annotated[str, Field(max_length=8192)],
    ] = {}
    req_type: Literal["POST", "GET"] = "POST"
    health_url: HttpUrl | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    retry_on_timeout: bool = False
    model_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "chat"
    api_format: Literal["template", "openai"] = "template"
    upstream_model: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class OfflineRequest(Stored):
    model_name: ModelName
    req_url_template: Annotated[str, Field(min_length=1, max_length=2048)]


class CompletionRequest(Schema):
    input: str
    model_name: ModelName | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    params: Annotated[dict[str, Any], AfterValidator(_params)] = {}


S = TypeVar("S", bound=Schema)


def parse(schema: type[S], raw: bytes) -> S:
    """Validate a raw JSON request body against `schema`, or raise BadRequest naming every problem."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise BadRequest(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    unknown: list[str] = []
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        kind = error["type"]
        if kind == "json_invalid":
            return "request body is not valid JSON: " + str(error.get("ctx", {}).get("error", error["msg"]))
        if kind == "extra_forbidden":
            unknown.append(where)
        elif kind == "missing":
            problems.append(f"missing required field '{where}'")
        elif not where and kind == "value_error":  # a check of the whole request
            problems.append(_clean(error["msg"]))
        elif not where:
            problems.append("request body must be a JSON object")
        else:
            problems.append(f"field '{where}': {_clean(error['msg'])}")
    if unknown:
        problems.insert(0, "unknown field" + ("s" if len(unknown) > 1 else "") + ": " + ", ".join(unknown))
    return "; ".join(problems)


def _clean(message: str) -> str:
    # pydantic prefixes custom validator errors with "Value error, ".
    return message.removeprefix("Value error, ")
