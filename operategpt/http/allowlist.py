"""UPSTREAM_ALLOWED_HOSTS: which hosts the manager may call, by name (`api.openai.com`, `*.internal`)
or by address range (`10.0.0.0/8`, `127.0.0.1`, `::1`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class HostAllowlist:
    def __init__(self, entries: Iterable[str]):
        self.names: set[str] = set()
        self.suffixes: tuple[str, ...] = ()
        self.networks: tuple[IPNetwork, ...] = ()
        suffixes, networks = [], []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            elif "/" in entry or " " in entry:
                raise ValueError(f"UPSTREAM_ALLOWED_HOSTS entry {raw!r} is neither a host name nor a CIDR")
            else:
                self.names.add(entry)
        self.suffixes = tuple(suffixes)
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.names or self.suffixes or self.networks)

    def allows_name(self, host: str) -> bool:
        """Listed by name, or a literal address inside a listed range."""
        host = host.lower().rstrip(".").strip("[]")
        if host in self.names or host.endswith(self.suffixes):
            return True
        try:
            return self.allows_address(host)
        except ValueError:
            return False

    def allows_address(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self.networks)

    def allows_host(self, host: str, port: int) -> bool:
        """At registration: a listed name, or a name whose every address lies in a listed range."""
        if self.allows_name(host):
            return True
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return False
        return bool(infos) and all(self.allows_address(info[4][0]) for info in infos)
