import random
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from operategpt.gateway.balancing import (
    STRATEGIES,
    InFlight,
    Strategy,
    candidates,
    make_strategy,
    unroutable_reasons,
)
from operategpt.gateway.balancing.strategies import LeastBusy, WeightedRandom, WeightedRoundRobin

NOW = 1_700_000_000.0


@dataclass
class W:
    id: int
    weight: int = 1
    priority: int = 0
    status: str = "healthy"
    cooldown_until: float | None = None


class FixedRng(random.Random):
    """Returns the given random() values in order, so a pick can be steered to an exact boundary."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


class UntouchableRng(random.Random):
    def random(self) -> float:
        raise AssertionError("rng must not be used")


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    # Switch threads as often as possible so a missing lock shows up as lost updates.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def ids(workers: list[W]) -> list[int]:
    return [w.id for w in workers]


def picks(strategy: Strategy, cands: list[W], n: int) -> list[int]:
    return [strategy.pick(cands).id for _ in range(n)]


# --- candidates() -------------------------------------------------------------------------------------------


def test_candidates_status_unknown_included_unhealthy_excluded() -> None:
    workers = [W(1, status="healthy"), W(2, status="unknown"), W(3, status="unhealthy")]
    assert ids(candidates(workers, NOW)) == [1, 2]


def test_candidates_cooldown() -> None:
    workers = [
        W(1, cooldown_until=NOW + 0.001),
        W(2, cooldown_until=NOW - 5),
        W(3, cooldown_until=NOW),
        W(4, cooldown_until=None),
    ]
    assert ids(candidates(workers, NOW)) == [2, 3, 4]


def test_candidates_drained_excluded() -> None:
    assert ids(candidates([W(1, weight=0), W(2, weight=1), W(3, weight=7)], NOW)) == [2, 3]


def test_candidates_exclude_ids() -> None:
    workers = [W(1), W(2), W(3)]
    assert ids(candidates(workers, NOW, exclude={1, 3})) == [2]
    assert ids(candidates(workers, NOW, exclude=(2,))) == [1, 3]


def test_candidates_lowest_priority_tier_wins_and_keeps_input_order() -> None:
    workers = [W(1, priority=2), W(2, priority=1), W(3, priority=5), W(4, priority=1), W(5, priority=2)]
    assert ids(candidates(workers, NOW)) == [2, 4]


def test_candidates_falls_back_to_next_tier_when_lower_tier_unroutable() -> None:
    workers = [
        W(1, priority=0, status="unhealthy"),
        W(2, priority=0, cooldown_until=NOW + 30),
        W(3, priority=0, weight=0),
        W(4, priority=0),
        W(5, priority=1),
        W(6, priority=2),
        W(7, priority=1),
    ]
    assert ids(candidates(workers, NOW)) == [4]
    assert ids(candidates(workers, NOW, exclude={4})) == [5, 7]
    assert ids(candidates(workers, NOW, exclude={4, 5, 7})) == [6]


def test_candidates_accepts_any_iterable() -> None:
    assert ids(candidates((w for w in [W(1), W(2, priority=-1)]), NOW)) == [2]


def test_candidates_empty() -> None:
    assert candidates([], NOW) == []
    assert candidates([W(1, status="unhealthy"), W(2, weight=0)], NOW) == []
    assert candidates([W(1)], NOW, exclude={1}) == []


# --- unroutable_reasons() -----------------------------------------------------------------------------------


def test_unroutable_reasons_counts() -> None:
    workers = [
        W(1),
        W(2, status="unknown"),
        W(3, weight=0),
        W(4, weight=0, status="unhealthy", cooldown_until=NOW + 10),  # drained wins
        W(5, status="unhealthy"),
        W(6, status="unhealthy", cooldown_until=NOW + 10),  # unhealthy wins over cooling down
        W(7, cooldown_until=NOW + 10),
        W(8, cooldown_until=NOW),  # cooldown over: routable
    ]
    assert unroutable_reasons(workers, NOW) == {"drained": 2, "unhealthy": 2, "cooling down": 1}


def test_unroutable_reasons_only_non_zero_keys() -> None:
    assert unroutable_reasons([W(1), W(2, cooldown_until=NOW + 1)], NOW) == {"cooling down": 1}
    assert unroutable_reasons([W(1), W(2)], NOW) == {}
    assert unroutable_reasons([], NOW) == {}


# --- InFlight -----------------------------------------------------------------------------------------------


def test_inflight_track_increments_and_decrements() -> None:
    inflight = InFlight()
    assert inflight.get(1) == 0
    with inflight.track(1):
        assert inflight.get(1) == 1
        with inflight.track(1):
            assert (inflight.get(1), inflight.get(2)) == (2, 0)
        with inflight.track(2):
            assert (inflight.get(1), inflight.get(2)) == (1, 1)
        assert inflight.get(2) == 0
    assert inflight.get(1) == 0
    assert inflight.counts == {}, "a worker with nothing in flight keeps no entry (memory contract)"


def test_inflight_track_decrements_on_exception() -> None:
    inflight = InFlight()
    with pytest.raises(RuntimeError, match="boom"), inflight.track(7):
        assert inflight.get(7) == 1
        raise RuntimeError("boom")
    assert inflight.get(7) == 0
    assert inflight.counts == {}, "a worker with nothing in flight keeps no entry (memory contract)"


@pytest.mark.usefixtures("frequent_thread_switches")
def test_inflight_thread_safety() -> None:
    inflight = InFlight()
    threads_n, rounds = 16, 2000
    start = threading.Barrier(threads_n)
    peak: list[int] = []

    def work(n: int) -> None:
        start.wait()
        for i in range(rounds):
            with inflight.track((n + i) % 3):
                peak.append(inflight.get((n + i) % 3))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [inflight.get(i) for i in range(3)] == [0, 0, 0]
    assert inflight.counts == {}, "a worker with nothing in flight keeps no entry (memory contract)"
    assert len(peak) == threads_n * rounds
    assert min(peak) >= 1


# --- WeightedRandom -----------------------------------------------------------------------------------------


def test_weighted_random_distribution_seeded() -> None:
    strategy = WeightedRandom(random.Random(1234))
    counts = Counter(picks(strategy, [W(1, weight=3), W(2, weight=1)], 10_000))
    assert set(counts) == {1, 2}
    assert abs(counts[1] / 10_000 - 0.75) <= 0.02


def test_weighted_random_boundaries() -> None:
    cands = [W(1, weight=3), W(2, weight=1)]
    # total 4: [0, 3) -> id 1, [3, 4) -> id 2; 1.0 is out of random()'s range but stands for a round-up.
    strategy = WeightedRandom(FixedRng(0.0, 0.7499, 0.75, 0.9999, 1.0))
    assert picks(strategy, cands, 5) == [1, 1, 2, 2, 2]


def test_weighted_random_single_candidate_does_not_touch_rng() -> None:
    only = W(9, weight=4)
    assert WeightedRandom(UntouchableRng()).pick([only]) is only


# --- WeightedRoundRobin -------------------------------------------------------------------------------------


def test_wrr_nginx_sequence() -> None:
    a, b, c = W(1, weight=5), W(2, weight=1), W(3, weight=1)
    strategy = WeightedRoundRobin()
    name = {1: "a", 2: "b", 3: "c"}
    assert [name[i] for i in picks(strategy, [a, b, c], 14)] == list("aabacaa" * 2)


def test_wrr_exact_counts_in_every_window() -> None:
    cands = [W(1, weight=4), W(2, weight=3), W(3, weight=2), W(4, weight=1)]
    sequence = picks(WeightedRoundRobin(), cands, 1000)
    assert Counter(sequence) == {1: 400, 2: 300, 3: 200, 4: 100}
    # Smooth: any 10 consecutive picks hold each worker exactly weight times.
    for start in range(len(sequence) - 10):
        assert Counter(sequence[start : start + 10]) == {1: 4, 2: 3, 3: 2, 4: 1}


def test_wrr_equal_weights_alternate_in_input_order() -> None:
    assert picks(WeightedRoundRobin(), [W(8), W(3), W(5)], 6) == [8, 3, 5, 8, 3, 5]


def test_wrr_set_change_midway_keeps_exact_cycles() -> None:
    a, b, c = W(1, weight=5), W(2, weight=1), W(3, weight=1)
    strategy = WeightedRoundRobin()
    assert picks(strategy, [a, b, c], 3) == [1, 1, 2]

    # c leaves: {a, b} runs its own cycle of 6.
    without_c = picks(strategy, [a, b], 60)
    for start in range(0, 60, 6):
        assert Counter(without_c[start : start + 6]) == {1: 5, 2: 1}

    # c comes back: no burst, and every window of 7 is exact again.
    back = picks(strategy, [a, b, c], 70)
    assert back[:4] == [1, 3, 1, 1]  # resumes a a b | a c a a
    for start in range(len(back) - 7):
        assert Counter(back[start : start + 7]) == {1: 5, 2: 1, 3: 1}

    # A new worker d joins: exact counts per cycle of 9 from the first pick.
    d = W(4, weight=2)
    joined = picks(strategy, [a, b, c, d], 90)
    for start in range(0, 90, 9):
        assert Counter(joined[start : start + 9]) == {1: 5, 2: 1, 3: 1, 4: 2}


def test_wrr_weight_change_starts_a_fresh_cycle() -> None:
    strategy = WeightedRoundRobin()
    a, b = W(1, weight=1), W(2, weight=1)
    assert picks(strategy, [a, b], 1) == [1]
    b.weight = 3
    assert picks(strategy, [a, b], 8) == [2, 1, 2, 2] * 2  # a continued state would give 2, 2, 1, ...


def test_wrr_evicts_least_recently_used_sets_memory_contract() -> None:
    a, b, c = W(1, weight=5), W(2, weight=1), W(3, weight=1)
    strategy = WeightedRoundRobin(max_sets=2)
    assert picks(strategy, [a, b, c], 2) == [1, 1]
    for n in range(10, 20):  # many sets seen once each, e.g. ids that come and go
        picks(strategy, [W(n), W(n + 100)], 1)
    assert len(strategy._cycles) == 2
    # The {a, b, c} state was evicted, so its sequence starts over (a resumed state would give b).
    assert picks(strategy, [a, b, c], 3) == [1, 1, 2]


def test_wrr_recently_used_set_survives_eviction() -> None:
    a, b, c = W(1, weight=5), W(2, weight=1), W(3, weight=1)
    strategy = WeightedRoundRobin(max_sets=2)
    assert picks(strategy, [a, b, c], 2) == [1, 1]
    picks(strategy, [W(10), W(11)], 1)
    assert picks(strategy, [a, b, c], 1) == [2]  # touched: now most recently used
    picks(strategy, [W(12), W(13)], 1)  # evicts {10, 11}, not {a, b, c}
    assert picks(strategy, [a, b, c], 4) == [1, 3, 1, 1]


def test_wrr_rejects_max_sets_below_one() -> None:
    with pytest.raises(ValueError, match=r"^max_sets must be >= 1, got 0$"):
        WeightedRoundRobin(max_sets=0)


def test_wrr_single_candidate() -> None:
    only = W(4, weight=3)
    strategy = WeightedRoundRobin()
    assert [strategy.pick([only]) for _ in range(3)] == [only, only, only]


@pytest.mark.usefixtures("frequent_thread_switches")
def test_wrr_thread_safety_exact_counts() -> None:
    cands = [W(1, weight=5), W(2, weight=1), W(3, weight=1)]
    strategy = WeightedRoundRobin()
    threads_n, rounds = 8, 7 * 300
    start = threading.Barrier(threads_n)
    results: list[list[int]] = []

    def work() -> None:
        start.wait()
        results.append(picks(strategy, cands, rounds))

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = Counter(i for r in results for i in r)
    assert total == {1: 5 * 300 * threads_n, 2: 300 * threads_n, 3: 300 * threads_n}


# --- LeastBusy ----------------------------------------------------------------------------------------------


def test_least_busy_prefers_less_loaded_per_unit_weight() -> None:
    inflight = InFlight()
    one, two = W(1, weight=2), W(2, weight=1)
    strategy = LeastBusy(inflight, UntouchableRng())
    with inflight.track(1), inflight.track(1):
        assert strategy.pick([one, two]) is two  # 2/2 = 1 vs 0/1 = 0
    with inflight.track(1), inflight.track(2):
        assert strategy.pick([one, two]) is one  # 1/2 vs 1/1
    with inflight.track(1), inflight.track(1), inflight.track(1), inflight.track(2):
        assert strategy.pick([two, one]) is two  # 3/2 vs 1/1
    heavy = W(3, weight=4)
    with inflight.track(2), inflight.track(3), inflight.track(3):
        assert strategy.pick([two, heavy]) is heavy  # 1/1 vs 2/4: more requests, but fewer per unit weight


def test_least_busy_ties_broken_by_weight() -> None:
    inflight = InFlight()
    one, two, three = W(1, weight=1), W(2, weight=3), W(3, weight=1)
    with ExitStack() as stack:
        for worker_id, load in ((1, 1), (2, 3), (3, 2)):
            for _ in range(load):
                stack.enter_context(inflight.track(worker_id))
        # 1 and 2 tie at 1 request per unit weight (3 is at 2); tie weights 1 + 3: [0, 0.25) -> 1, else 2.
        strategy = LeastBusy(inflight, FixedRng(0.0, 0.2499, 0.25, 0.9999, 1.0))
        assert picks(strategy, [one, two, three], 5) == [1, 1, 2, 2, 2]


def test_least_busy_distribution_without_inflight() -> None:
    strategy = LeastBusy(InFlight(), random.Random(4321))
    counts = Counter(picks(strategy, [W(1, weight=3), W(2, weight=1)], 10_000))
    assert set(counts) == {1, 2}
    assert abs(counts[1] / 10_000 - 0.75) <= 0.02


def test_least_busy_single_candidate_does_not_touch_rng() -> None:
    only = W(5)
    assert LeastBusy(InFlight(), UntouchableRng()).pick([only]) is only


# --- make_strategy / STRATEGIES -----------------------------------------------------------------------------


def test_strategies_keys() -> None:
    assert dict(STRATEGIES) == {
        "weighted_random": WeightedRandom,
        "weighted_round_robin": WeightedRoundRobin,
        "least_busy": LeastBusy,
    }
    with pytest.raises(TypeError):
        STRATEGIES["other"] = WeightedRandom  # type: ignore[index]


@pytest.mark.parametrize("name", ["weighted_random", "weighted_round_robin", "least_busy"])
def test_make_strategy_builds_named_class(name: str) -> None:
    strategy = make_strategy(name, inflight=InFlight())
    assert type(strategy) is STRATEGIES[name]
    assert strategy.name == name


def test_make_strategy_wires_inflight_and_rng() -> None:
    inflight = InFlight()
    strategy = make_strategy("least_busy", inflight=inflight, rng=FixedRng(0.0))
    one, two = W(1), W(2)
    with inflight.track(1):
        assert strategy.pick([one, two]) is two
    assert strategy.pick([one, two]) is one  # tie: FixedRng(0.0) picks the first
    assert make_strategy("weighted_random", inflight=inflight, rng=FixedRng(0.9)).pick([one, two]) is two


def test_make_strategy_unknown_name() -> None:
    with pytest.raises(ValueError) as excinfo:
        make_strategy("x", inflight=InFlight())
    assert str(excinfo.value) == (
        "unknown LB_STRATEGY 'x'; choose one of: least_busy, weighted_random, weighted_round_robin"
    )
