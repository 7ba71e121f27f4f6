"""Worker request templates: the placeholder syntax and compiling body, URL and header templates.

This module owns what a `{UPPER_SNAKE}` placeholder is, how a value is inserted (typed when a string is
exactly one placeholder, text otherwise, URL-encoded inside URLs), and the errors rendering can raise.
Templates are parsed once, when a worker is registered, into small closures; rendering a request only
looks values up and assembles fresh containers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any
from urllib.parse import quote

from operategpt.errors import BadRequest

_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")

# Deeper documents are refused at compile time rather than risking a RecursionError (a 500) while
# compiling or rendering; no real request body comes close.
_MAX_DEPTH = 256

_Values = Mapping[str, Any]
_Render = Callable[[_Values], Any]
_Encode = Callable[[Any, str], str]


# What a header value may not contain (RFC 9110 field-value: visible latin-1, space and tab), nor start with.
_BAD_HEADER_TEXT = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


def _bad_header_value(names: list[str], values: _Values, *, leading: bool) -> str:
    """The message for a header value made invalid by a placeholder's value, naming the placeholder."""
    for index, name in enumerate(names):
        text = _as_text(values[name], name)
        if _BAD_HEADER_TEXT.search(text) or (leading and index == 0 and text[:1].isspace()):
            break
    else:
        name = names[0]
    return (
        f"the value for placeholder {{{name}}} cannot be sent in a header: it may not hold control characters "
        "(line breaks, NUL), characters outside latin-1, or start with whitespace"
    )


class TemplateError(BadRequest):
    """A template that cannot be compiled, or a request whose values cannot be rendered into it."""


class MissingValueError(TemplateError):
    """Placeholders the request gave no value for."""

    def __init__(self, names: Iterable[str]):
        self.names: tuple[str, ...] = tuple(sorted(names))
        plural = "s" if len(self.names) > 1 else ""
        listed = ", ".join(f"{{{name}}}" for name in self.names)
        super().__init__(f"no value for placeholder{plural} {listed}")


def placeholders(text: str) -> frozenset[str]:
    """The placeholder names used in `text`."""
    return frozenset(_PLACEHOLDER.findall(text))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _as_text(value: Any, name: str) -> str:
    if type(value) is str:
        return value
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"the value for placeholder {{{name}}} is not JSON data") from exc


def _as_url_text(value: Any, name: str) -> str:
    # quote() encodes `/` (safe=""), but leaves `.` alone: a whole-segment `.` or `..` would then be taken for
    # a dot segment and normalised away (/tenant/../generate is /generate). A value of dots only is encoded,
    # so a value never adds, removes or climbs path segments, wherever it lands.
    text = quote(_as_text(value, name), safe="")
    return text.replace(".", "%2E") if text.strip(".") == "" else text


def _missing(names: frozenset[str], values: _Values) -> MissingValueError:
    return MissingValueError(names - values.keys())


def _text_renderer(literals: list[str], names: list[str], encode: _Encode) -> _Render:
    """A closure joining the precomputed literal pieces with the encoded values; `names` is non-empty."""
    if len(names) == 1:
        # The common shapes ("Bearer {API_KEY}", ".../{MODEL_NAME}/generate") skip the list and join.
        prefix, suffix = literals
        (name,) = names

        def render_one(values: _Values) -> str:
            return prefix + encode(values[name], name) + suffix

        return render_one

    pieces: list[str] = []
    slots: list[tuple[int, str]] = []
    for literal, name in zip(literals[:-1], names, strict=True):
        if literal:
            pieces.append(literal)
        slots.append((len(pieces), name))
        pieces.append("")
    if literals[-1]:
        pieces.append(literals[-1])
    frozen_slots = tuple(slots)

    def render_many(values: _Values) -> str:
        out = pieces.copy()
        for index, name in frozen_slots:
            out[index] = encode(values[name], name)
        return "".join(out)

    return render_many


def _split(text: str) -> tuple[list[str], list[str]]:
    """Literal pieces and placeholder names, alternating: len(literals) == len(names) + 1."""
    parts = _PLACEHOLDER.split(text)
    return parts[0::2], parts[1::2]


class Template:
    """A compiled JSON document template; build one with compile_template."""

    __slots__ = ("_const", "_render", "names")

    def __init__(self, names: frozenset[str], const: Any, render: _Render | None):
        self.names = names
        self._const = const
        self._render = render

    def render(self, values: Mapping[str, Any]) -> Any:
        """A new document with every placeholder replaced by its value from `values`."""
        names = self.names
        if names and not names <= values.keys():
            raise _missing(names, values)
        render = self._render
        return self._const if render is None else render(values)


def compile_template(doc: Any) -> Template:
    """Compile a JSON-shaped document (object, array or scalar, any depth) into a Template."""
    names: set[str] = set()
    const, render = _compile_node(doc, names, "$", 0)
    return Template(frozenset(names), const, render)


def _compile_node(doc: Any, names: set[str], where: str, depth: int) -> tuple[Any, _Render | None]:
    """(constant, None) for a leaf without placeholders, else (None, a closure rendering the node)."""
    if isinstance(doc, str):
        return _compile_string(doc, names)
    if doc is None or isinstance(doc, (bool, int)):
        return doc, None
    if isinstance(doc, float):
        if not math.isfinite(doc):
            raise TemplateError(f"template has a non-finite number at {where}; JSON has no NaN or Infinity")
        return doc, None
    if depth >= _MAX_DEPTH:
        raise TemplateError(f"template is nested deeper than {_MAX_DEPTH} levels at {where}")
    if isinstance(doc, dict):
        return None, _compile_object(doc, names, where, depth + 1)
    if isinstance(doc, list):
        return None, _compile_array(doc, names, where, depth + 1)
    raise TemplateError(
        f"template has a value of type {type(doc).__name__} at {where}; "
        "only objects, arrays, strings, numbers, booleans and null are allowed"
    )


def _compile_string(text: str, names: set[str]) -> tuple[Any, _Render | None]:
    literals, used = _split(text)
    if not used:
        return text, None
    names.update(used)
    if len(used) == 1 and not literals[0] and not literals[1]:
        # Exactly one placeholder: the value keeps its own JSON type.
        return None, itemgetter(used[0])
    return None, _text_renderer(literals, used, _as_text)


def _compile_object(doc: dict[Any, Any], names: set[str], where: str, depth: int) -> _Render:
    entries: list[tuple[str, _Render | None, Any, _Render | None]] = []
    for key, value in doc.items():
        if not isinstance(key, str):
            raise TemplateError(f"template has an object key of type {type(key).__name__} at {where}")
        key_literals, key_names = _split(key)
        key_render = None
        if key_names:
            names.update(key_names)
            # Keys are always text, even when the key is exactly one placeholder.
            key_render = _text_renderer(key_literals, key_names, _as_text)
        value_const, value_render = _compile_node(
            value, names, f"{where}[{json.dumps(key, ensure_ascii=False)}]", depth
        )
        entries.append((key, key_render, value_const, value_render))

    if all(key_render is None and value_render is None for _, key_render, _, value_render in entries):
        frozen = {key: value for key, _, value, _ in entries}

        def render_constant(values: _Values) -> dict[str, Any]:
            return frozen.copy()

        return render_constant

    frozen_entries = tuple(entries)

    def render_object(values: _Values) -> dict[str, Any]:
        out = {}
        for key, key_render, value, value_render in frozen_entries:
            out[key if key_render is None else key_render(values)] = (
                value if value_render is None else value_render(values)
            )
        return out

    if all(key_render is None for _, key_render, _, _ in entries):
        return render_object

    size = len(entries)

    def render_object_checked(values: _Values) -> dict[str, Any]:
        out = render_object(values)
        if len(out) != size:
            # A templated key landed on another key: refuse rather than let a request value silently
            # overwrite a field the operator fixed.
            raise TemplateError(f"rendered template has duplicate keys in the object at {where}")
        return out

    return render_object_checked


def _compile_array(doc: list[Any], names: set[str], where: str, depth: int) -> _Render:
    items = tuple(_compile_node(item, names, f"{where}[{index}]", depth) for index, item in enumerate(doc))

    if all(item_render is None for _, item_render in items):
        frozen = [item for item, _ in items]

        def render_constant(values: _Values) -> list[Any]:
            return frozen.copy()

        return render_constant

    def render_array(values: _Values) -> list[Any]:
        return [item if item_render is None else item_render(values) for item, item_render in items]

    return render_array


class TextTemplate:
    """A compiled text template (a URL or a header value); build one with compile_text."""

    __slots__ = ("_render", "names")

    def __init__(self, names: frozenset[str], render: Callable[[_Values], str]):
        self.names = names
        self._render = render

    def render(self, values: Mapping[str, Any]) -> str:
        """The text with every placeholder replaced by its value from `values`, as text."""
        names = self.names
        if names and not names <= values.keys():
            raise _missing(names, values)
        return self._render(values)


def compile_text(text: str, *, url: bool = False, header: bool = False) -> TextTemplate:
    """Compile a text template.

    url: values are URL-encoded (every reserved character, `/` included); the template's own text is not.
    header: the result is a header value, so rendering refuses (400, naming the placeholder) a value that would
    put a control character (CR, LF, NUL...) or a character outside latin-1 in it, or make it start with whitespace.
    """
    if url and header:
        raise ValueError("compile_text: url and header are mutually exclusive")
    if not isinstance(text, str):
        raise TemplateError(f"text template must be a string, got {type(text).__name__}")
    if header and _BAD_HEADER_TEXT.search(text):
        raise TemplateError("header value template contains a line break or another character not allowed in a header")
    if header and text[:1].isspace():
        raise TemplateError("header value template starts with whitespace")

    literals, used = _split(text)
    if not used:

        def render_constant(values: _Values) -> str:
            return text

        return TextTemplate(frozenset(), render_constant)

    render = _text_renderer(literals, used, _as_url_text if url else _as_text)
    if header:
        render_text = render

        def render_header(values: _Values) -> str:
            out = render_text(values)
            if _BAD_HEADER_TEXT.search(out) or out[:1].isspace():
                # A client's text that is no valid header value (a line break would inject headers; NUL,
                # other controls and what latin-1 cannot encode are refused by HTTP) is the client's fault.
                raise TemplateError(_bad_header_value(used, values, leading=not literals[0]))
            return out

        render = render_header
    return TextTemplate(frozenset(used), render)
