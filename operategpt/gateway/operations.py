"""The operations the gateway serves over any format: a seed completion, OpenAI chat (whole or streamed),
embeddings, and the model list. Each is routed by `Router.dispatch`; what is sent to the worker and how its
reply is read is the route's format's business."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from operategpt.errors import ModelNotFound, WrongModelType
from operategpt.gateway.balancing import candidates
from operategpt.gateway.inputs import ChatInput, EmbeddingInput, Prompt
from operategpt.gateway.registry import Registry, store
from operategpt.gateway.registry.models import as_utc
from operategpt.gateway.router import Router
from operategpt.gateway.table import Route, RoutingTable
from operategpt.schemas.openai import ChatCompletionRequest, EmbeddingRequest, Message
from operategpt.schemas.seed import CompletionRequest

EMBEDDING = "embedding"


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    worker_id: int


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply for the HTTP layer: a JSON document, or (`stream`) events to send as they come, then close."""

    body: bytes | Iterable[bytes]
    worker_id: int
    stream: bool = False


class Operations:
    def __init__(self, router: Router, table: RoutingTable, registry: Registry, default_model: str,
                 default_temperature: float):
        self.router = router
        self.table = table
        self.registry = registry
        self.default_model = default_model
        self.default_temperature = default_temperature

    # -- the seed route ----------------------------------------------------------------------------

    def complete(self, request: CompletionRequest) -> Completion:
        model = request.model_name or self.default_model
        temperature = request.temperature
        prompt = Prompt(request.input, temperature, {
            **request.params,
            "USER_PROMPT": request.input,
            "MESSAGES": [{"role": "user", "content": request.input}],
            "MODEL_NAME": model,
            "MODEL_TEMPERATURE": self.default_temperature if temperature is None else temperature,
        })
        text, route = self.router.dispatch(model, lambda route, http: route.format.complete(route, prompt, http))
        return Completion(text, route.id)

    # -- OpenAI --------------------------------------------------------------------------------------

    def chat(self, request: ChatCompletionRequest) -> Answer:
        self._check_model(request.model, embedding=False)
        # The client's body as sent, extra fields included: what an openai-format worker receives.
        body = request.model_dump(exclude_unset=True)
        values: dict[str, Any] = {
            "MESSAGES": body["messages"],
            "MODEL_NAME": request.model,
            "MODEL_TEMPERATURE": self.default_temperature if request.temperature is None else request.temperature,
        }
        prompt = _last_user_text(request.messages)
        if prompt is not None:
            values["USER_PROMPT"] = prompt
        chat = ChatInput(request.model, body, values)
        if request.stream:
            events, route = self.router.dispatch(
                request.model, lambda route, http: route.format.chat_stream(route, chat, http))
            return Answer(events, route.id, stream=True)
        document, route = self.router.dispatch(request.model, lambda route, http: route.format.chat(route, chat, http))
        return Answer(document, route.id)

    def embeddings(self, request: EmbeddingRequest) -> Answer:
        self._check_model(request.model, embedding=True)
        values: dict[str, Any] = {"MODEL_NAME": request.model, "MODEL_TEMPERATURE": self.default_temperature}
        if isinstance(request.input, str):
            values["USER_PROMPT"] = request.input
        embed = EmbeddingInput(request.model, request.model_dump(exclude_unset=True), values, request.encoding_format)
        document, route = self.router.dispatch(
            request.model, lambda route, http: route.format.embeddings(route, embed, http))
        return Answer(document, route.id)

    def _check_model(self, model: str, *, embedding: bool) -> None:
        """Refuse a model with no workers, or of the wrong type for the route, before anything is sent."""
        routes = self.table.routes(model)
        if not routes:
            raise ModelNotFound(f"model '{model}' does not exist: no worker is registered for it")
        types = sorted({route.model_type for route in routes})
        if embedding and EMBEDDING not in types:
            raise WrongModelType(
                f"model '{model}' has model_type '{'/'.join(types)}'; /v1/embeddings serves models of type 'embedding'"
            )
        if not embedding and types == [EMBEDDING]:
            raise WrongModelType(f"model '{model}' has model_type 'embedding'; ask /v1/embeddings for it")

    # -- models --------------------------------------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        """Every model with at least one routable worker, as OpenAI model objects sorted by id."""
        now = time.time()
        routable = {name: pool for name, routes in self.table.all_routes().items() if (pool := candidates(routes, now))}
        return self._model_objects(routable, None)

    def get_model(self, name: str) -> dict[str, Any]:
        pool = candidates(self.table.routes(name), time.time())
        found = self._model_objects({name: pool}, name) if pool else []
        if not found:
            raise ModelNotFound(f"model '{name}' does not exist or has no routable worker")
        return found[0]

    def _model_objects(self, routable: Mapping[str, Sequence[Route]], only: str | None) -> list[dict[str, Any]]:
        """OpenAI model objects for the `routable` models (the routable workers of each); `only` narrows the read."""
        if not routable:
            return []
        # The owner and registration time are not on the routes; listing models is rare enough to read them.
        owners: dict[str, str] = {}
        created: dict[str, int] = {}
        with self.registry.db.read() as session:
            for worker in store.list_workers(session, only):
                name = worker.model_name
                owners[name] = owners.get(name) or worker.owner
                registered = as_utc(worker.created_at)
                if registered is not None:
                    stamp = int(registered.timestamp())
                    created[name] = min(created.get(name, stamp), stamp)
        return [
            {
                "id": name,
                "object": "model",
                "created": created.get(name, 0),
                "owned_by": owners.get(name) or "operategpt",
                "model_type": routable[name][0].model_type,
            }
            for name in sorted(routable)
            if name in owners
        ]


def _last_user_text(messages: Sequence[Message]) -> str | None:
    """The content of the last user message as text (a list of parts: its text parts, one per line)."""
    for message in reversed(messages):
        if message.role == "user":
            content = message.content
            if content is None or isinstance(content, str):
                return content or ""
            return "\n".join(
                part["text"] for part in content if part["type"] == "text" and isinstance(part.get("text"), str)
            )
    return None
