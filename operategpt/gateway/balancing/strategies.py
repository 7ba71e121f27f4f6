"""The selection strategies named by LB_STRATEGY: each picks one of the candidates `candidates()` gave.

A new strategy is a class here and a line in STRATEGIES. `pick()` runs on every gateway request, so each
strategy is one or two plain O(n) loops (faster on CPython 3.11 than map() with attrgetter) that allocate no
more than a list or two of n.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar

from operategpt.gateway.balancing.candidates import R
from operategpt.gateway.balancing.inflight import InFlight


class Strategy(ABC):
    """Chooses one worker among the candidates that `candidates()` returned."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def build(cls, *, inflight: InFlight, rng: random.Random | None) -> Strategy:
        """An instance, taking from the shared dependencies what this strategy needs."""

    @abstractmethod
    def pick(self, candidates: Sequence[R]) -> R:
        """One of `candidates`, which the caller guarantees is non-empty with every weight > 0."""


def _weighted_choice(candidates: Sequence[R], rng: random.Random) -> R:
    """A candidate drawn with probability weight / total weight."""
    cumulative = []
    total = 0
    for candidate in candidates:
        total += candidate.weight
        cumulative.append(total)
    # hi keeps the index in range should random() * total round up to total.
    return candidates[bisect_right(cumulative, rng.random() * total, 0, len(cumulative) - 1)]


class WeightedRandom(Strategy):
    """Each candidate with probability weight / total weight; stateless, so nothing to share or lock."""

    name = "weighted_random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    @classmethod
    def build(cls, *, inflight: InFlight, rng: random.Random | None) -> WeightedRandom:
        return cls(rng)

    def pick(self, candidates: Sequence[R]) -> R:
        if len(candidates) == 1:
            return candidates[0]
        return _weighted_choice(candidates, self._rng)


class _Cycle:
    """The smooth weighted round robin state of one candidate set."""

    __slots__ = ("current", "total", "weights")

    def __init__(self, weights: list[int]) -> None:
        self.weights = weights
        self.total = sum(weights)
        self.current = [0] * len(weights)


class WeightedRoundRobin(Strategy):
    """Smooth weighted round robin as nginx does it: a deterministic, evenly interleaved sequence.

    Each pick adds every candidate's weight to its current value, chooses the highest current (first in order
    on ties) and subtracts the total weight from the chosen one. Every run of total-weight consecutive picks
    over the same candidates then holds each candidate exactly `weight` times.

    The current values belong to one candidate set (the ids, in order): a request that excludes a failed
    worker, or a worker leaving and coming back, resumes that set's own sequence instead of carrying over
    values earned in another set, which would give the returning worker a burst. A weight change restarts the
    set's sequence. Sets are kept in LRU order and the least recently used is dropped beyond `max_sets`, so
    ids no longer seen do not pile up.
    """

    name = "weighted_round_robin"

    def __init__(self, max_sets: int = 1024) -> None:
        if max_sets < 1:
            raise ValueError(f"max_sets must be >= 1, got {max_sets}")
        self._max_sets = max_sets
        self._lock = threading.Lock()
        self._cycles: OrderedDict[tuple[int, ...], _Cycle] = OrderedDict()

    @classmethod
    def build(cls, *, inflight: InFlight, rng: random.Random | None) -> WeightedRoundRobin:
        return cls()

    def pick(self, candidates: Sequence[R]) -> R:
        if len(candidates) == 1:
            return candidates[0]
        ids = tuple([c.id for c in candidates])
        weights = [c.weight for c in candidates]
        with self._lock:
            cycle = self._cycles.get(ids)
            if cycle is None or cycle.weights != weights:
                cycle = self._cycles[ids] = _Cycle(weights)
                if len(self._cycles) > self._max_sets:
                    self._cycles.popitem(last=False)
            self._cycles.move_to_end(ids)
            current = cycle.current
            chosen = 0
            highest = current[0] + weights[0]
            current[0] = highest
            for index in range(1, len(weights)):
                value = current[index] + weights[index]
                current[index] = value
                # Strictly greater: the first of equal highs wins, as in nginx.
                if value > highest:
                    highest = value
                    chosen = index
            current[chosen] = highest - cycle.total
        return candidates[chosen]


class LeastBusy(Strategy):
    """The candidate with the fewest in-flight requests per unit of weight; ties at random, by weight.

    Counts are per process, so with several gateway processes each balances its own share of the traffic.
    """

    name = "least_busy"

    def __init__(self, inflight: InFlight, rng: random.Random | None = None) -> None:
        self._inflight = inflight
        self._rng = rng if rng is not None else random.Random()

    @classmethod
    def build(cls, *, inflight: InFlight, rng: random.Random | None) -> LeastBusy:
        return cls(inflight, rng)

    def pick(self, candidates: Sequence[R]) -> R:
        if len(candidates) == 1:
            return candidates[0]
        # The dict itself rather than InFlight.get: a bound C method per candidate instead of a Python call.
        counts = self._inflight.counts
        # With nothing in flight every candidate ties at 0.
        if not counts:
            return _weighted_choice(candidates, self._rng)
        load_of = counts.get
        ties: list[R] = []
        best_load = 0
        best_weight = 1
        for candidate in candidates:
            load = load_of(candidate.id, 0)
            weight = candidate.weight
            # load / weight compared as cross products: exact, and no float division per candidate.
            if not ties or load * best_weight < best_load * weight:
                ties = [candidate]
                best_load = load
                best_weight = weight
            elif load * best_weight == best_load * weight:
                ties.append(candidate)
        if len(ties) == 1:
            return ties[0]
        return _weighted_choice(ties, self._rng)


STRATEGIES: Mapping[str, type[Strategy]] = MappingProxyType(
    {strategy.name: strategy for strategy in (WeightedRandom, WeightedRoundRobin, LeastBusy)}
)


def make_strategy(name: str, *, inflight: InFlight, rng: random.Random | None = None) -> Strategy:
    """The strategy named `name` (the LB_STRATEGY setting); ValueError listing the valid names if unknown."""
    strategy = STRATEGIES.get(name)
    if strategy is None:
        raise ValueError(f"unknown LB_STRATEGY {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}")
    return strategy.build(inflight=inflight, rng=rng)
