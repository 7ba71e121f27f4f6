"""The fast reply-header parser gives http.client's own result for every header block, plain or not."""

from __future__ import annotations

import http.client
import io

import pytest

from operategpt.http import headerparse as httpheaders
from operategpt.web.app import create_app

STANDARD = httpheaders._standard_parse_headers

BLOCKS = [
    b"Server: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 01:02:03 GMT\r\nContent-Type: application/json\r\n"
    b"Content-Length: 54\r\nConnection: keep-alive\r\n\r\n",
    b"\r\n",
    b"",
    b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nSET-COOKIE: c=3\r\n\r\n",  # repeated, any case
    b"X-Empty:\r\nX-Spaces:   \t value with  inner   spaces \t \r\n\r\n",
    b"X-Unix-Line-End: yes\nOther: too\n\n",
    b"Location: http://host:8080/a?b=c:d\r\n\r\n",  # colons in the value
    b"X-Latin: caf\xe9 \xa0\xff\r\n\r\n",
    b"X-Control: a\x00b\x7fc\r\n\r\n",
    b"X-Nel: a\x85b\r\n\r\n",
    b"Content-Type: text/event-stream; charset=utf-8\r\n\r\n",
    # Not plain: left to the standard parser.
    b"X-Folded: first\r\n  second\r\n\tthird\r\nAfter: x\r\n\r\n",
    b"Broken line without colon\r\nX-After: lost\r\n\r\n",
    b"Bad Name: v\r\n\r\n",
    b"Spaced : v\r\n\r\n",
    b": no name\r\n\r\n",
    b"X-Cr: a\rb\r\n\r\n",
    b"From someone\r\nX: y\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n",
    b"content-type:  Message/rfc822\r\n\r\n",
    b"X-No-End: v",
    b"X-A: 1\r\nX-B: 2",
    b"  leading: space\r\n\r\n",
]


def parsed(parse, block: bytes):
    try:
        message = parse(io.BytesIO(block + b"BODY"))
    except http.client.HTTPException as exc:
        return type(exc), str(exc)
    payload = message.get_payload()
    return (
        message.items(),
        [type(defect) for defect in message.defects],
        [part.items() for part in payload] if isinstance(payload, list) else payload,
        message.is_multipart(),
        message.get_content_type(),
        message.get("content-length"),
        message.get_all("set-cookie"),
        type(message),
    )


@pytest.mark.parametrize("block", BLOCKS)
def test_same_message_as_the_standard_parser(block):
    assert parsed(httpheaders.parse_headers, block) == parsed(STANDARD, block)


@pytest.mark.parametrize("count", [98, 99, 100, 101])
def test_same_limit_on_header_count(count):
    block = b"".join(b"X-%d: v\r\n" % i for i in range(count)) + b"\r\n"
    assert parsed(httpheaders.parse_headers, block) == parsed(STANDARD, block)


def test_same_limit_on_line_length():
    block = b"X-Long: " + b"a" * 70000 + b"\r\n\r\n"
    assert parsed(httpheaders.parse_headers, block) == parsed(STANDARD, block) == (
        http.client.LineTooLong, "got more than 65536 bytes when reading header line")


def test_the_body_is_left_unread():
    stream = io.BytesIO(b"A: b\r\n\r\nthe body")
    httpheaders.parse_headers(stream)
    assert stream.read() == b"the body"


def test_plain_headers_do_not_reach_the_email_package(monkeypatch):
    def refuse(*args):
        raise AssertionError("the standard parser was used")

    monkeypatch.setattr(httpheaders, "_standard", refuse)
    assert httpheaders.parse_headers(io.BytesIO(BLOCKS[0])).get("content-length") == "54"


def test_installed_by_the_manager_not_by_importing_the_client(make_settings, monkeypatch):
    monkeypatch.setattr(http.client, "parse_headers", STANDARD)
    import operategpt.http.client  # noqa: F401

    assert http.client.parse_headers is STANDARD, "importing the client patched http.client for the whole process"
    app = create_app(make_settings())
    try:
        assert http.client.parse_headers is httpheaders.parse_headers
    finally:
        app.extensions["operategpt"].close()
