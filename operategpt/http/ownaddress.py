"""The manager's own listening addresses: a worker URL that reaches the manager itself is refused.

Such a worker would turn one request into a loop (every call comes back as a new request) or, from
loopback, into an admin caller. The bind host and port come from LLM_MANAGE_SERVER_HOST/PORT; with a
wildcard bind (0.0.0.0, ::) every local address counts — an address is local when a socket can be bound
to it, which the kernel answers exactly, interfaces and aliases included.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

_WILDCARDS = {"", "0.0.0.0", "::", "*"}


def via_mark(instance_id: str) -> str:
    """This instance's Via entry (RFC 9110 section 7.6.3), sent on every upstream call it makes; a request
    that carries it back is refused as a loop (`web.auth.register_loop_guard`)."""
    return f"1.1 operategpt-{instance_id}"


def _normal(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=256)
def _is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


class OwnAddresses:
    """Where the manager listens: `host` (an address, a name, or a wildcard) and `port`."""

    def __init__(self, host: str, port: int):
        self.port = port
        host = host.strip().strip("[]")
        self.wildcard = host in _WILDCARDS
        self.addresses: frozenset = frozenset()
        if not self.wildcard:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                infos = []
            self.addresses = frozenset(ip for info in infos if (ip := _normal(info[4][0])) is not None)

    def is_own(self, address: str, port: int) -> bool:
        """Whether a connection to `address`:`port` (an IP address) would reach this manager."""
        if port != self.port:
            return False
        ip = _normal(address)
        if ip is None:
            return False
        if ip.is_unspecified:  # connecting to 0.0.0.0 or :: reaches the local host
            return self.wildcard or any(own.is_loopback for own in self.addresses) or bool(self.addresses)
        return _is_local(ip) if self.wildcard else ip in self.addresses

    def reaches(self, host: str, port: int) -> bool:
        """At registration: whether `host` (a name or an address) resolves to an address of this manager."""
        if port != self.port:
            return False
        try:
            infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return False
        return any(self.is_own(info[4][0], port) for info in infos)
