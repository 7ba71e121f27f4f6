"""A worker's event stream passed on to the client as it arrives; its end is its attempt's end.

Only whole events are passed on (`EventSplitter`), so a failure after the first byte — too late to fail
over — still leaves the client at an event boundary, where the web layer appends an error event. Whatever
ends the relay (the last event, a broken upstream, the client going away) finishes the attempt exactly once,
so passive health, in-flight counts, metrics and the access log see a stream's true outcome and duration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from operategpt.errors import UpstreamError
from operategpt.http.sse import EventSplitter

if TYPE_CHECKING:
    from operategpt.gateway.router import Attempt

log = logging.getLogger(__name__)


class Relay:
    """Iterate for the events; a failure of the worker is raised (after the attempt learned of it).

    The WSGI server calls close() when the reply is done or the client has gone (its next write failed):
    that closes the request to the worker.
    """

    def __init__(self, head: bytes, chunks: Iterator[bytes], splitter: EventSplitter,
                 close_upstream: Callable[[], None], worker_id: int):
        self._head = head
        self._chunks = chunks
        self._splitter = splitter
        self._close_upstream = close_upstream
        self.worker_id = worker_id
        self._attempt: Attempt | None = None

    def attach(self, attempt: Attempt) -> None:
        """The attempt this stream belongs to; the router hands it over once the first event is in."""
        self._attempt = attempt

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield self._head
            for chunk in self._chunks:
                events = self._splitter.feed(chunk)
                if events:
                    yield events
            rest = self._splitter.rest()
            if rest:
                yield rest
        except UpstreamError as exc:
            log.warning("worker %d failed mid-stream: %s", self.worker_id, exc.message)
            exc.worker_id = self.worker_id
            self._end(exc)
            raise
        except GeneratorExit:
            self._end(None, cancelled=True)
            raise
        self._end(None)

    def close(self) -> None:
        # Closed before it was ever iterated (the client left at once): the attempt ends here.
        self._end(None, cancelled=True)

    def _end(self, error: UpstreamError | None, cancelled: bool = False) -> None:
        self._close_upstream()
        if self._attempt is not None:
            self._attempt.finish(error, cancelled=cancelled)
