"""Who may call what: admin routes need MANAGER_ADMIN_TOKEN, completion routes one of MANAGER_API_KEYS.

Without an admin token, admin routes answer loopback clients only — and a request that came through a
proxy (Forwarded, X-Forwarded-For, X-Real-IP or Via present), the manager's own upstream calls included
(they carry its Via), is never "loopback". Credentials come as `Authorization: Bearer <secret>` and are
compared in constant time; none is ever logged.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, request

from operategpt.errors import Forbidden, LoopDetected, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])

# Headers a proxy adds: their presence means the peer address is the proxy's, not the client's.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP", "Via")


def register_loop_guard(app: Flask, instance_id: str) -> None:
    """Refuse, before any routing, a request carrying this instance's own Via: its own call come back."""
    mark = f"operategpt-{instance_id}".lower()

    @app.before_request
    def _refuse_own_calls() -> None:
        for value in request.headers.getlist("Via"):
            if mark in value.lower():
                raise LoopDetected("loop detected: this request came from this manager's own call to a worker "
                                   "(a worker URL leads back to the manager)")


class Credentials:
    def __init__(self, admin_token: str | None, api_keys: tuple[str, ...]):
        self.admin_token = admin_token
        self.api_keys = api_keys

    def check_admin(self) -> None:
        if self.admin_token is None:
            if not _is_loopback(request.remote_addr) or _proxied():
                raise Forbidden("admin routes answer only loopback clients while MANAGER_ADMIN_TOKEN is unset")
            return
        if not _matches(_bearer(), (self.admin_token,)):
            raise Forbidden("the admin token is not valid")

    def check_client(self) -> None:
        if self.api_keys and not _matches(_bearer(), self.api_keys):
            raise Forbidden("the API key is not valid")


def requires(role: str) -> Callable[[F], F]:
    """Mark a view as an admin route or a client (completion) route."""
    if role not in ("admin", "client"):
        raise ValueError(role)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            credentials: Credentials = current_app.extensions["operategpt.auth"]
            (credentials.check_admin if role == "admin" else credentials.check_client)()
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def _bearer() -> str:
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("missing credentials: send Authorization: Bearer <token>")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return secret.strip()


def _matches(given: str, accepted: tuple[str, ...]) -> bool:
    given_bytes = given.encode()
    # Compare against every key, so timing says nothing about which (if any) nearly matched.
    found = False
    for key in accepted:
        found |= hmac.compare_digest(given_bytes, key.encode())
    return found


def _proxied() -> bool:
    headers = request.headers
    return any(name in headers for name in PROXY_HEADERS)


def _is_loopback(address: str | None) -> bool:
    """127.0.0.0/8 and ::1, also as an IPv4-mapped address (::ffff:127.0.0.1, a dual-stack [::] bind)."""
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
