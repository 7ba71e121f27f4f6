"""Masking of secrets (header values that carry credentials) before anything is shown or logged."""

from __future__ import annotations

import re
from collections.abc import Mapping

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
