"""Reading Server-Sent Events: the data of each complete event, from bytes cut anywhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from operategpt.http.sse import DONE, EventSplitter, EventTooLarge, event, event_data

STREAM = event({"n": 1}) + b": a comment\n\n" + event({"n": 2}) + DONE


def data_of(*chunks: bytes, limit: int = 1024) -> list[str]:
    return list(event_data(iter(chunks), limit))


def test_the_data_of_every_event_in_order() -> None:
    assert data_of(STREAM) == ['{"n":1}', '{"n":2}', "[DONE]"]


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_chunks_cut_anywhere_give_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert data_of(*chunks) == ['{"n":1}', '{"n":2}', "[DONE]"]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(end: bytes) -> None:
    stream = end.join([b"data: one", b"", b"data:two", b"", b"data: [DONE]", b"", b""])
    assert data_of(stream) == ["one", "two", "[DONE]"]
    assert data_of(*(stream[i : i + 1] for i in range(len(stream)))) == ["one", "two", "[DONE]"]


def test_data_lines_join_and_other_fields_are_skipped() -> None:
    stream = b"event: update\nid: 7\ndata: first\ndata:  second\ndata\nretry: 10\n\n"
    # One space after the colon is dropped, no more; `data` without a colon is an empty line of data.
    assert data_of(stream) == ["first\n second\n"]


def test_events_without_data_are_not_passed_on() -> None:
    assert data_of(b": keep-alive\n\nevent: ping\n\n\n\ndata: x\n\n") == ["x"]


def test_an_empty_data_line_is_an_event_with_empty_data() -> None:
    assert data_of(b"data:\n\n") == [""]


def test_an_incomplete_last_event_is_discarded() -> None:
    assert data_of(b"data: whole\n\ndata: cut off") == ["whole"]
    assert data_of(b"data: whole\n\ndata: cut off\n") == ["whole"]


def test_utf8_split_across_chunks() -> None:
    raw = "data: héllo — ✓\n\n".encode()
    assert data_of(*(raw[i : i + 1] for i in range(len(raw)))) == ["héllo — ✓"]


def test_each_event_is_yielded_as_soon_as_it_ends() -> None:
    sent: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (b"data: a\n", b"\n", b"data: b\n\n"):
            sent.append(chunk)
            yield chunk

    events = event_data(chunks(), 1024)
    assert next(events) == "a"
    assert sent == [b"data: a\n", b"\n"]  # the second event has not been read yet
    assert list(events) == ["b"]


def test_an_event_that_never_ends_is_too_large() -> None:
    with pytest.raises(EventTooLarge, match="more than 16 bytes without ending an event"):
        data_of(b"data: " + b"x" * 10, b"y" * 10, limit=16)
    # Complete events of any number stay within the limit: it applies to one event.
    assert data_of(*[b"data: 0123456\n\n"] * 10, limit=16) == ["0123456"] * 10


def test_the_splitter_relays_bytes_unchanged() -> None:
    splitter = EventSplitter(1024)
    assert splitter.feed(STREAM[:5]) == b""
    assert splitter.feed(STREAM[5:]) == STREAM
    assert splitter.rest() == b""
