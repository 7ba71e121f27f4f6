"""Observed worker state: active probes under a cluster-wide lease (`active`, `probe`) and passive failures
of real requests (`passive`)."""

from operategpt.gateway.health.active import LEASE_NAME, HealthMonitor, RoundReport
from operategpt.gateway.health.passive import PassiveHealth

__all__ = ["LEASE_NAME", "HealthMonitor", "PassiveHealth", "RoundReport"]
