"""A faster parse of HTTP reply headers for http.client, which urllib3 (and so every upstream call) uses.

http.client hands the header lines of every reply to the `email` package's feed parser: about
60 µs of CPU per upstream call out of ~250 (bench/upstream_clients.py). Reply headers are almost
always plain `Name: value` lines, and for those this module builds the very message the feed
parser would (compat32 policy: the value without the spaces after the colon and without the line
end). Anything else (a folded line, a line without a colon, a bare CR inside a line, a multipart
or message content type, a mbox "From " line) goes to the standard parser, unchanged, so the
result is the standard library's in every case. Reading the lines keeps http.client's limits and
errors.

`install()` puts it in place of http.client.parse_headers for the whole process.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from http.client import HTTPMessage
from typing import BinaryIO

_standard_parse_headers = http.client.parse_headers

# What http.client enforces (its _MAXLINE and _MAXHEADERS).
MAX_LINE = 65536
MAX_HEADERS = 100

# A header line the feed parser takes as it is: a field name of printable ASCII without the colon (its own
# pattern), the colon, a value without CR or LF, then the line end.
_PLAIN = re.compile(r"([\041-\071\073-\176]+):([^\r\n]*)\r?\n")
# Content types whose (absent) body the feed parser goes on to parse, recording defects.
_STRUCTURED = re.compile(r"[ \t]*(multipart|message)/", re.IGNORECASE)


def parse_headers(fp: BinaryIO, _class: type[HTTPMessage] = HTTPMessage) -> HTTPMessage:
    """http.client.parse_headers, for the same arguments and with the same result."""
    lines = []
    while True:  # http.client._read_headers: the blank line counts towards the limit
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    message = _class()
    for line in lines[:-1]:
        plain = _PLAIN.fullmatch(line.decode("iso-8859-1"))
        if plain is None:
            return _standard(lines, _class)
        name, value = plain.groups()
        value = value.lstrip(" \t")
        if name.lower() == "content-type" and _STRUCTURED.match(value):
            return _standard(lines, _class)
        message.set_raw(name, value)
    message.set_payload("")
    return message


def _standard(lines: list[bytes], _class: type[HTTPMessage]) -> HTTPMessage:
    """What http.client.parse_headers makes of these lines."""
    return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def install() -> None:
    """Parse every reply's headers in this process with `parse_headers`."""
    http.client.parse_headers = parse_headers  # type: ignore[assignment]


def uninstall() -> None:
    http.client.parse_headers = _standard_parse_headers
