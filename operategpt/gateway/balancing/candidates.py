"""Routability — the one rule of which workers may take a request now — and the candidates it gives.

A worker is routable when it is not drained (weight 0), not unhealthy, and not cooling down; a request's
candidates are the routable workers of the best (lowest) priority tier that has any. The balancer, the
metrics, the status page and the command line all judge a worker by `state`.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Protocol, TypeVar

ROUTABLE = "routable"
DRAINED = "drained"
UNHEALTHY = "unhealthy"
COOLING_DOWN = "cooling down"


class Routable(Protocol):
    """What the balancer reads from a worker; any object with these attributes will do."""

    id: int
    weight: int  # >= 0; 0 = drained
    priority: int  # lower is preferred
    status: str  # "unknown" | "healthy" | "unhealthy"
    cooldown_until: float | None  # time.time() epoch seconds; routable again when None or <= now


R = TypeVar("R", bound=Routable)


def cooling_down(worker: Routable, now: float) -> bool:
    cooldown_until = worker.cooldown_until
    return cooldown_until is not None and cooldown_until > now


def state(worker: Routable, now: float) -> str:
    """ROUTABLE, or why not: DRAINED, UNHEALTHY or COOLING_DOWN, the first that applies (the operator's own
    decision first, so a drained worker that is also down reads as drained). "unknown" is routable, so a new
    worker gets traffic before its first probe."""
    if worker.weight <= 0:
        return DRAINED
    if worker.status == UNHEALTHY:
        return UNHEALTHY
    return COOLING_DOWN if cooling_down(worker, now) else ROUTABLE


# The observed state of a worker in a cooldown, as the listing, the CLI, metrics and the status page name it.
OBSERVED_COOLING_DOWN = "cooling_down"


def observed_state(worker: Routable, now: float) -> str:
    """What health says of a worker, the one answer the listing (`state`), the CLI, metrics and the status page
    give: "cooling_down" while a cooldown lasts, else its status ("healthy", "unhealthy" or "unknown"). A passing
    probe ends a cooldown, so a worker said to be healthy gets traffic unless drained."""
    return OBSERVED_COOLING_DOWN if cooling_down(worker, now) else worker.status


def candidates(workers: Iterable[R], now: float, exclude: Container[int] = ()) -> list[R]:
    """The routable workers of the best (lowest) priority tier that has any, in input order; [] if none.
    `exclude`: ids of workers already tried for this request."""
    best: list[R] = []
    best_priority = 0
    for worker in workers:
        if worker.id in exclude or state(worker, now) != ROUTABLE:
            continue
        priority = worker.priority
        if not best or priority < best_priority:
            best = [worker]
            best_priority = priority
        elif priority == best_priority:
            best.append(worker)
    return best


def unroutable_reasons(workers: Iterable[Routable], now: float) -> dict[str, int]:
    """Counts of workers that cannot take traffic, by reason (their `state`); only non-zero reasons."""
    counts: dict[str, int] = {}
    for worker in workers:
        reason = state(worker, now)
        if reason != ROUTABLE:
            counts[reason] = counts.get(reason, 0) + 1
    return {reason: counts[reason] for reason in (DRAINED, UNHEALTHY, COOLING_DOWN) if reason in counts}
