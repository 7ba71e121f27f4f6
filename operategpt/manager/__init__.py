"""The gateway: app factory, HTTP API, services, routing table, balancer and registry."""

from operategpt.manager.app import create_app

__all__ = ["create_app"]
