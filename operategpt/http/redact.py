"""Masking of secrets before anything is shown or logged: header values that carry credentials, URL
passwords and query keys, and any text (an error page echoing the request) that may hold them."""

from __future__ import annotations

import logging
import re
from base64 import b64encode
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

_SENSITIVE = re.compile(r"auth|key|token|secret|password|passwd|cookie|credential|signature", re.IGNORECASE)
_PLACEHOLDER_ONLY = re.compile(r"^(?:\{[A-Z][A-Z0-9_]*\}|\s)*$")
MASK = "****"


def mask_header_value(name: str, value: str) -> str:
    """Hide a sensitive header's value, keeping an auth scheme word ("Bearer ****") and bare placeholders."""
    if not _SENSITIVE.search(name) or _PLACEHOLDER_ONLY.match(value):
        return value
    scheme, _, rest = value.partition(" ")
    if rest and scheme.isalpha() and len(scheme) <= 16:
        return f"{scheme} {MASK}"
    return MASK


def mask_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {name: mask_header_value(name, value) for name, value in (headers or {}).items()}


def secret_values(headers: Mapping[str, str] | None) -> list[str]:
    """The credential parts of sensitive header values ("sk-abc" of "Bearer sk-abc"), longest first."""
    secrets = set()
    for name, value in (headers or {}).items():
        if _SENSITIVE.search(name) and value.strip():
            credential = value.strip().partition(" ")[2].strip() or value.strip()
            secrets.add(credential)
    return sorted(secrets, key=len, reverse=True)


# -- text that leaves the process: replies, error excerpts, log lines, last_error, listings --------------

# `scheme://user:password@`: the password.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*):[^/?#@\s]*@")
# `Authorization: Basic …`, `Bearer …` and kin, wherever they appear.
_SCHEME_CREDENTIAL = re.compile(r"\b(Basic|Bearer|Token|Digest|ApiKey|Api-Key)\s+(?!\*{4})[A-Za-z0-9._~+/=-]{4,}",
                                re.IGNORECASE)
# `?key=…&api_key=…` in a URL or form text; `"api_key": "…"` in echoed JSON; `X-Api-Key: …` in echoed headers.
_SECRET_NAME = r"[A-Za-z0-9_.-]*(?:auth|key|token|secret|password|passwd|credential|signature|sig)[A-Za-z0-9_.-]*"
_QUERY_SECRET = re.compile(r"([?&;]" + _SECRET_NAME + r"=)(?!\*{4})[^&#\s\"'<>]+", re.IGNORECASE)
_JSON_SECRET = re.compile(r"(\"" + _SECRET_NAME + r"\"\s*:\s*\")(?!\*{4})[^\"]+", re.IGNORECASE)
_HEADER_SECRET = re.compile(
    r"(^|[\s,;{])([A-Za-z0-9]+-[A-Za-z0-9-]*(?:auth|key|token|secret|signature)[A-Za-z0-9-]*:\s*)(?!\*{4})[^\s,;}]+",
    re.IGNORECASE,
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret hidden: the known `secrets` (values the manager sent), then whatever looks
    like a credential — URL passwords, credential-like query values, auth scheme tokens, secret JSON fields
    and headers. The one redaction function for everything the manager shows or logs."""
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(r"\1:" + MASK + "@", text)
    text = _SCHEME_CREDENTIAL.sub(r"\1 " + MASK, text)
    text = _QUERY_SECRET.sub(r"\1" + MASK, text)
    text = _JSON_SECRET.sub(r"\1" + MASK, text)
    return _HEADER_SECRET.sub(r"\1\2" + MASK, text)


def redact_url(url: str) -> str:
    """The URL with any password and credential-like query values hidden (some APIs take a key as `?key=`);
    otherwise verbatim, so what is shown is the URL `workers offline` needs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if has_password else netloc
    pieces, masked = [], netloc != parts.netloc
    for piece in parts.query.split("&") if parts.query else ():
        name, has_value, value = piece.partition("=")
        if has_value and mask_header_value(unquote_plus(name), unquote_plus(value)) != unquote_plus(value):
            piece, masked = f"{name}={MASK}", True
        pieces.append(piece)
    if not masked:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(pieces), parts.fragment))


def url_secrets(url: str) -> list[str]:
    """What in a worker URL is a credential: the password (as written and decoded), the Basic authorization the
    client derives from `user:password@`, and credential-like query values."""
    parts = urlsplit(url)
    found: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    if colon and (user or password):
        found += [password, unquote(password),
                  b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()]
    for piece in parts.query.split("&") if parts.query else ():
        name, has_value, value = piece.partition("=")
        if has_value and value and mask_header_value(unquote_plus(name), unquote_plus(value)) != unquote_plus(value):
            found += [value, unquote_plus(value)]
    return [secret for secret in found if secret and "{" not in secret]


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's text: for loggers of libraries that log URLs (urllib3 logs every
    request target, query keys included, at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def redact_library_logs() -> None:
    """Install the filter on the loggers that would write a worker URL (idempotent)."""
    for name in ("urllib3.connectionpool", "urllib3.connection"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
            logger.addFilter(RedactingFilter())
