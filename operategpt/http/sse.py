"""Server-Sent Events framing: where events end in a byte stream, the data they carry, and the events we write.

A relay passes the upstream's bytes on unchanged; `EventSplitter` only decides where to cut them, so that
every write ends after a complete event. A client is then never left mid-event, and the gateway can always
append a well-formed event of its own (an error) should the upstream break off. A server that reads a stream
itself (the llmserver's proxy backend) takes the `data` of each event from `event_data`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from operategpt.errors import BadReply

DONE = b"data: [DONE]\n\n"
# An event ends with an empty line; lines end with CRLF, LF or CR.
_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")
_LONGEST = max(len(boundary) for boundary in _BOUNDARIES)


def event(payload: Any) -> bytes:
    """One `data:` event carrying `payload` as compact JSON."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class EventTooLarge(BadReply):
    """The upstream sent more than the limit without ending an event: not an event stream, or a broken one."""


class EventSplitter:
    """Cuts a byte stream after its last complete event and keeps the incomplete rest for the next chunk."""

    __slots__ = ("_max", "_pending")

    def __init__(self, max_event_bytes: int):
        self._max = max_event_bytes
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events available after `chunk` (b"" when none is complete yet), bytes unchanged."""
        pending = self._pending
        data = pending + chunk if pending else chunk
        # The pending bytes hold no boundary, so only one ending in the new chunk can be found.
        start = max(0, len(pending) - _LONGEST + 1)
        end = 0
        for boundary in _BOUNDARIES:
            found = data.rfind(boundary, start)
            if found >= 0:
                end = max(end, found + len(boundary))
        self._pending = data[end:]
        if len(self._pending) > self._max:
            raise EventTooLarge(f"worker sent more than {self._max} bytes without ending an event")
        return data[:end]

    def rest(self) -> bytes:
        """What is left when the stream ends: an incomplete last event, relayed as it came."""
        rest, self._pending = self._pending, b""
        return rest


def event_data(chunks: Iterable[bytes], max_event_bytes: int) -> Iterator[str]:
    """The `data` of each complete event in a byte stream, as soon as the empty line that ends it arrives.

    As the SSE standard reads a stream: the `data:` lines of an event are joined with LF (one space after
    the colon is dropped), comments and other fields are skipped, an event without a `data` line is not
    passed on, and an incomplete last event (the stream ended before its empty line) is discarded. Raises
    `EventTooLarge` when more than `max_event_bytes` arrive without an event ending.
    """
    splitter = EventSplitter(max_event_bytes)
    data: list[str] = []
    for chunk in chunks:
        # What feed() returns ends with an empty line; splitlines() splits at CRLF, LF and CR only (bytes).
        for line in splitter.feed(chunk).splitlines():
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
