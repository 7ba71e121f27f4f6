"""What a format adapter is: how to call one kind of upstream API for each operation the gateway serves.

A format owns the registration fields that are its own (checked at registration), compiles a worker's call
once (`Call`: URL, header and body templates, where the answer is), and for each operation builds the
upstream requests and reads their replies. It sends through the `Exchange` it is handed, which belongs to
the attempt the router made: the request id, the timeout and the outcome are the router's business, never
the format's. An operation a format cannot serve raises BadRequest saying why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from operategpt.templating.extract import Extractor
from operategpt.templating.templates import MissingValueError, Template, TextTemplate

if TYPE_CHECKING:
    from operategpt.gateway.inputs import ChatInput, EmbeddingInput, Prompt
    from operategpt.gateway.table import Route
    from operategpt.http.client import Reply, UpstreamStream
    from operategpt.schemas.seed import RegisterRequest


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: Any = None


@dataclass(frozen=True, slots=True)
class Call:
    """How to call one worker, compiled once per registration."""

    method: str
    url: TextTemplate
    headers: tuple[tuple[str, TextTemplate], ...]
    body: Template | None
    extract: Extractor
    names: frozenset[str]  # every placeholder the URL, headers and body use

    def request(self, values: Mapping[str, Any], body: Any = None) -> UpstreamRequest:
        """The request with every template filled from `values`; the body is `body` when given, else the
        rendered body template. A placeholder with no value is a BadRequest naming it."""
        if not self.names <= values.keys():
            raise MissingValueError(self.names - values.keys())
        headers = {name: template.render(values) for name, template in self.headers}
        if body is None and self.body is not None:
            body = self.body.render(values)
        return UpstreamRequest(self.method, self.url.render(values), headers, body)


class Exchange(Protocol):
    """The attempt's channel to its worker: requests go out with the request id and the attempt's timeout."""

    max_bytes: int  # the largest reply (or streamed event) accepted

    def send(self, request: UpstreamRequest) -> Reply: ...

    def open_stream(self, request: UpstreamRequest) -> UpstreamStream: ...


class Format(ABC):
    """One upstream API format. Subclasses are registered by name in `operategpt.gateway.formats.FORMATS`."""

    name: ClassVar[str]
    # Where the answer is in a reply when the registration gives no response_extract path.
    default_extract: ClassVar[str] = ""

    @abstractmethod
    def check(self, registration: RegisterRequest) -> None:
        """Refuse (BadRequest naming the field) registration fields this format cannot take."""

    def check_call(self, call: Call) -> None:  # noqa: B027 - most formats take any call
        """Refuse a compiled call this format cannot use (BadRequest)."""

    @abstractmethod
    def complete(self, route: Route, prompt: Prompt, http: Exchange) -> str:
        """The seed route: one prompt, the answer's text."""

    @abstractmethod
    def chat(self, route: Route, chat: ChatInput, http: Exchange) -> bytes:
        """An OpenAI chat.completion document."""

    @abstractmethod
    def chat_stream(self, route: Route, chat: ChatInput, http: Exchange) -> Iterable[bytes]:
        """Server-Sent Events of chat.completion.chunk objects. Everything up to the first event happens in
        this call (so a failure still fails over); a `Relay` returned carries the rest."""

    @abstractmethod
    def embeddings(self, route: Route, request: EmbeddingInput, http: Exchange) -> bytes:
        """An OpenAI embedding list document."""
