"""Load balancing: which workers may take a request (`candidates`), and which one serves it (`strategies`)."""

from operategpt.gateway.balancing.candidates import (
    COOLING_DOWN,
    DRAINED,
    OBSERVED_COOLING_DOWN,
    ROUTABLE,
    UNHEALTHY,
    candidates,
    observed_state,
    state,
    unroutable_reasons,
)
from operategpt.gateway.balancing.inflight import InFlight
from operategpt.gateway.balancing.strategies import STRATEGIES, Strategy, make_strategy

__all__ = [
    "COOLING_DOWN", "DRAINED", "OBSERVED_COOLING_DOWN", "ROUTABLE", "STRATEGIES", "UNHEALTHY", "InFlight", "Strategy",
    "candidates", "make_strategy", "observed_state", "state", "unroutable_reasons",
]
