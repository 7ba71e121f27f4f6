"""The shapes of the manager's replies, for the OpenAPI document (schemathesis checks replies against them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Open(BaseModel):
    """Replies may grow fields; clients must ignore the ones they do not know."""

    model_config = ConfigDict(extra="allow")


class Ok(Open):
    success: Literal[True]
    msg: str


class Failure(Open):
    success: Literal[False]
    msg: str


class WorkerReply(Ok):
    data: dict[str, Any]


class WorkersReply(Ok):
    data: list[dict[str, Any]]


class CompletionReply(Ok):
    result: str


class ErrorDetail(Open):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(Open):
    error: ErrorDetail


class ModelCard(Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Open):
    object: Literal["list"]
    data: list[ModelCard]


class ChatCompletion(Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]


class EmbeddingList(Open):
    object: Literal["list"]
    data: list[dict[str, Any]]
    model: str
