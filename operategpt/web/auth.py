"""Who may call what: admin routes need MANAGER_ADMIN_TOKEN, completion routes one of MANAGER_API_KEYS.

Without an admin token, admin routes answer loopback clients only. Credentials come as
`Authorization: Bearer <secret>` and are compared in constant time; none is ever logged.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request

from operategpt.errors import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])


class Credentials:
    def __init__(self, admin_token: str | None, api_keys: tuple[str, ...]):
        self.admin_token = admin_token
        self.api_keys = api_keys

    def check_admin(self) -> None:
        if self.admin_token is None:
            if not _is_loopback(request.remote_addr):
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


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
