"""Upstream API formats: one module per format, registered by name here (a registration's `api_format`).

Adding a format is one module with a `Format` subclass and one line in FORMATS. Nothing else in the
gateway branches on a worker's format: it asks the route's format.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from operategpt.gateway.formats.base import Call, Format
from operategpt.gateway.formats.openai import OpenAIFormat
from operategpt.gateway.formats.template import TemplateFormat
from operategpt.templating.extract import compile_extract
from operategpt.templating.templates import Template, TextTemplate, compile_template, compile_text

FORMATS: Mapping[str, Format] = MappingProxyType({fmt.name: fmt for fmt in (TemplateFormat(), OpenAIFormat())})

HeaderTemplates = tuple[tuple[str, TextTemplate], ...]


def compile_call(
    fmt: Format, method: str, url: str, body: Template | None, headers: HeaderTemplates, response_extract: str
) -> Call:
    """A worker's call from its compiled body and headers; raises BadRequest when the URL or path is malformed."""
    url_template = compile_text(url, url=True)
    all_names = url_template.names.union(*(template.names for _, template in headers))
    if body is not None:
        all_names |= body.names
    return Call(method, url_template, headers, body, _extractor(response_extract or fmt.default_extract),
                all_names)


def compile_body(body: Any) -> Template | None:
    return None if body is None else compile_template(body)


def compile_headers(headers: Mapping[str, str] | None) -> HeaderTemplates:
    return tuple((name, compile_text(value, header=True)) for name, value in (headers or {}).items())


# Compiled templates never change, so workers can share them. Those of one server software share their
# body template and extract path: at 10,000 workers, a cold reload compiles little more than the URLs.
_extractor = functools.lru_cache(maxsize=1024)(compile_extract)
