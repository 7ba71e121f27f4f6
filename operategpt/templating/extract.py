"""response_extract: where the answer sits in an upstream reply, and pulling it out.

This module owns the path grammar (parsed once, when a worker is registered, into a tuple of steps)
and walking a reply along those steps on every request.

Grammar: an optional leading `response` root marker (only when followed by the end, `.` or `[`), then
segments: `.key` (the first key may omit its dot), `[]` (first element), `[N]` (index, negative from
the end), `["key"]` / `['key']` (any key; a backslash escapes the quote character and backslash).
"""

from __future__ import annotations

import json
from typing import Any

from operategpt.errors import BadReply, BadRequest

_ROOT = "response"
# Characters that end a bare key; whitespace ends one too.
_KEY_STOP = frozenset(".[]\"'")
_DIGITS = frozenset("0123456789")
# JSON's own whitespace, which json.loads skips before a value.
_JSON_WS = " \t\n\r"

# Step kinds.
_KEY = 0
_INDEX = 1
_FIRST = 2

_Step = tuple[int, Any, str]  # (kind, key or index, the segment as written, for error messages)


class ExtractSyntaxError(BadRequest):
    """A malformed response_extract path, refused at registration."""


class ExtractError(BadReply):
    """The upstream reply does not have the shape the path describes; another worker would not help."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _unwrap(text: str) -> str:
    """The empty path: a JSON string reply unwrapped, anything else unchanged."""
    # Only text starting with a quote can be a JSON string; everything else skips the parse.
    if text.lstrip(_JSON_WS)[:1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


class Extractor:
    """A compiled response_extract path; build one with compile_extract, call it with the reply text."""

    __slots__ = ("_steps", "path")

    def __init__(self, path: str, steps: tuple[_Step, ...]):
        self.path = path
        self._steps = steps

    def __call__(self, text: str) -> str:
        steps = self._steps
        if not steps:
            return _unwrap(text)
        try:
            node = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._error(
                f"failed: upstream reply is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except RecursionError:
            raise self._error("failed: upstream reply is not JSON: nested too deeply") from None

        for kind, arg, segment in steps:
            if kind == _KEY:
                if type(node) is not dict:
                    raise self._segment_error(segment, f"expected an object, got {_json_type(node)}")
                try:
                    node = node[arg]
                except KeyError:
                    raise self._segment_error(segment, "key not found") from None
            else:
                if type(node) is not list:
                    raise self._segment_error(segment, f"expected an array, got {_json_type(node)}")
                try:
                    node = node[arg]
                except IndexError:
                    if kind == _FIRST:
                        raise self._segment_error(segment, "array is empty") from None
                    raise self._segment_error(
                        segment, f"index out of range (array has {len(node)} elements)"
                    ) from None
        return node if type(node) is str else _dumps(node)

    def _error(self, problem: str) -> ExtractError:
        return ExtractError(f"response_extract '{self.path}' {problem}")

    def _segment_error(self, segment: str, problem: str) -> ExtractError:
        return self._error(f"failed at segment '{segment}': {problem}")


def compile_extract(path: str) -> Extractor:
    """Parse a response_extract path; ExtractSyntaxError (400) says where it is malformed."""
    if not isinstance(path, str):
        raise ExtractSyntaxError(f"response_extract must be a string, got {type(path).__name__}")
    path = path.strip()
    return Extractor(path, _Parser(path).parse())


class _Parser:
    """A one-pass scanner over the (stripped) path; positions in errors are 0-based offsets into it."""

    def __init__(self, path: str):
        self.path = path
        self.end = len(path)

    def fail(self, problem: str) -> ExtractSyntaxError:
        return ExtractSyntaxError(f"invalid response_extract '{self.path}': {problem}")

    def parse(self) -> tuple[_Step, ...]:
        path, end = self.path, self.end
        pos = 0
        root_end = len(_ROOT)
        if path.startswith(_ROOT) and (end == root_end or path[root_end] in ".["):
            pos = root_end
        steps: list[_Step] = []
        while pos < end:
            start = pos
            char = path[pos]
            if char == ".":
                key, pos = self.bare_key(pos + 1)
                steps.append((_KEY, key, path[start:pos]))
            elif char == "[":
                kind, arg, pos = self.bracket(pos)
                steps.append((kind, arg, path[start:pos]))
            elif pos == 0 and not self.stops_key(char):
                key, pos = self.bare_key(pos)
                steps.append((_KEY, key, path[start:pos]))
            else:
                raise self.fail(f"expected '.' or '[' at position {pos}, got '{char}'")
        return tuple(steps)

    @staticmethod
    def stops_key(char: str) -> bool:
        return char in _KEY_STOP or char.isspace()

    def bare_key(self, pos: int) -> tuple[str, int]:
        path, end = self.path, self.end
        stop = pos
        while stop < end and not self.stops_key(path[stop]):
            stop += 1
        if stop == pos:
            raise self.fail(f"empty key at position {pos}")
        return path[pos:stop], stop

    def bracket(self, open_pos: int) -> tuple[int, Any, int]:
        """One `[...]` segment starting at `open_pos`: (kind, key or index, position after the `]`)."""
        path, end = self.path, self.end
        pos = open_pos + 1
        if pos >= end:
            raise self.fail(f"unterminated '[' at position {open_pos}")
        char = path[pos]
        if char == "]":
            return _FIRST, 0, pos + 1
        if char in "\"'":
            key, pos = self.quoted_key(pos)
            return _KEY, key, self.close(pos)
        if char == "-" or char in _DIGITS:
            digits_start = pos + 1 if char == "-" else pos
            pos = digits_start
            while pos < end and path[pos] in _DIGITS:
                pos += 1
            if pos == digits_start:
                raise self.fail(f"expected a digit at position {pos}")
            return _INDEX, int(path[open_pos + 1 : pos]), self.close(pos)
        raise self.fail(f"expected an index, a quoted key or ']' at position {pos}")

    def quoted_key(self, quote_pos: int) -> tuple[str, int]:
        """A quoted key starting at `quote_pos`: (the key, position after the closing quote)."""
        path, end = self.path, self.end
        quote_char = path[quote_pos]
        chars: list[str] = []
        pos = quote_pos + 1
        while pos < end:
            char = path[pos]
            if char == quote_char:
                return "".join(chars), pos + 1
            if char == "\\":
                if pos + 1 >= end:
                    break
                escaped = path[pos + 1]
                if escaped != quote_char and escaped != "\\":
                    raise self.fail(f"invalid escape '\\{escaped}' at position {pos}")
                chars.append(escaped)
                pos += 2
            else:
                chars.append(char)
                pos += 1
        raise self.fail(f"unterminated quoted key at position {quote_pos}")

    def close(self, pos: int) -> int:
        if pos >= self.end or self.path[pos] != "]":
            raise self.fail(f"expected ']' at position {pos}")
        return pos + 1
