"""The routing decision and failover: pick a worker, run the operation on it as an attempt, fail over.

An attempt (Kong's balancer handle) is made for every call of a request to a worker and finished exactly
once with its outcome: when the operation returns, when it fails, or — for a stream — when the relay ends.
In-flight counts, passive health, metrics and what the access log says of the request all hang off that
one place, `Attempt.finish`. Whether a failed attempt fails over is the retry policy's decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from operategpt.errors import ModelNotFound, NoRoute, UpstreamError
from operategpt.gateway import metrics
from operategpt.gateway.balancing import InFlight, candidates, unroutable_reasons
from operategpt.gateway.balancing.strategies import Strategy
from operategpt.gateway.formats.base import UpstreamRequest
from operategpt.gateway.health.passive import PassiveHealth
from operategpt.gateway.relay import Relay
from operategpt.gateway.retry import RetryPolicy, outcome, worker_failed
from operategpt.gateway.table import Route, RoutingTable
from operategpt.http.client import Reply, UpstreamClient, UpstreamStream

T = TypeVar("T")


class Attempt:
    """One call of a request to one worker, and the worker's Exchange for the format that makes it."""

    __slots__ = ("_done", "_info", "_router", "_started", "relayed", "remaining", "route", "timeout")

    def __init__(self, router: Router, route: Route, timeout: float, remaining: float,
                 info: metrics.RequestInfo | None):
        self._router = router
        self.route = route
        self.timeout = timeout  # each call's bound (a whole reply; between a stream's events)
        self.remaining = remaining  # what is left of the request's deadline: a stream's whole bound
        self._info = info
        self._done = False
        self.relayed = False  # the client has been sent the reply's first bytes: no failover any more
        self._started = time.perf_counter()
        router.inflight.add(route.id)

    @property
    def max_bytes(self) -> int:
        return self._router.upstream.max_bytes

    def send(self, request: UpstreamRequest) -> Reply:
        return self._router.upstream.send(request.method, request.url, body=request.body,
                                          headers=self._headers(request), timeout=self.timeout)

    def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        return self._router.upstream.open_stream(request.method, request.url, body=request.body,
                                                 headers=self._headers(request), timeout=self.timeout,
                                                 total=self.remaining)

    def _headers(self, request: UpstreamRequest) -> dict[str, str]:
        # Every call carries this instance's Via mark: should the worker lead back to the manager, the call
        # is refused there as a loop (508) and is never taken for a loopback admin.
        headers = {**request.headers}
        via = self._router.via
        given = next((name for name in headers if name.lower() == "via"), None)
        if given is None:
            headers["Via"] = via
        elif via:
            headers[given] = f"{headers[given]}, {via}"
        if self._info is not None:
            headers[metrics.REQUEST_ID_HEADER] = self._info.request_id
        return headers

    def finish(self, error: UpstreamError | None = None, *, cancelled: bool = False) -> None:
        """End the attempt: ok (no error), failed with `error`, or `cancelled` (the client went away, or the
        request turned out bad before it was sent: neither says anything about the worker)."""
        if self._done:
            return
        self._done = True
        router, route = self._router, self.route
        router.inflight.remove(route.id)
        if cancelled:
            return
        seconds = time.perf_counter() - self._started
        metrics.record_attempt(route.model_name, route.id, outcome(error), seconds)
        info = self._info
        if info is not None:
            info.model, info.worker_id = route.model_name, route.id
            info.upstream_ms += seconds * 1000
            if error is not None:
                if self.relayed:
                    info.broken = True
                else:
                    info.retries += 1
        if error is None:
            router.passive.record_success(route)
        elif worker_failed(error):
            router.passive.record_failure(route, error.message)


class Router:
    def __init__(self, table: RoutingTable, strategy: Strategy, inflight: InFlight, upstream: UpstreamClient,
                 passive: PassiveHealth, policy: RetryPolicy, *, upstream_timeout: float, request_deadline: float,
                 retry_after: float, via: str = ""):
        self.table = table
        self.strategy = strategy
        self.inflight = inflight
        self.upstream = upstream
        self.passive = passive
        self.policy = policy
        self.upstream_timeout = upstream_timeout
        self.request_deadline = request_deadline
        self.retry_after = retry_after
        self.via = via

    def dispatch(self, model: str, work: Callable[[Route, Attempt], T]) -> tuple[T, Route]:
        """Serve one request for `model`: pick a candidate, run `work` on it as an attempt, fail over as the
        retry policy allows. Never tries the same worker twice. A failure raised names its worker."""
        routes = self.table.routes(model)
        if not routes:
            raise ModelNotFound(f"no worker registered for model '{model}'")
        info = metrics.current_request.get()
        tried: set[int] = set()
        failure: UpstreamError | None = None
        deadline = time.monotonic() + self.request_deadline
        for _ in range(1 + self.policy.max_retries):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pool = candidates(routes, time.time(), exclude=tried)
            if not pool:
                break
            route = self.strategy.pick(pool)
            tried.add(route.id)
            if failure is not None:
                metrics.record_failover(model)
            attempt = Attempt(self, route, min(route.timeout_s or self.upstream_timeout, remaining), remaining, info)
            try:
                result = work(route, attempt)
            except UpstreamError as exc:
                exc.worker_id = route.id
                attempt.finish(exc)
                if not self.policy.fails_over(exc, route):
                    raise
                failure = exc
                continue
            except BaseException:
                attempt.finish(cancelled=True)
                raise
            if isinstance(result, Relay):
                attempt.relayed = True
                result.attach(attempt)
            else:
                attempt.finish()
            return result, route
        if failure is not None:
            raise failure
        raise self._no_route(model, routes)

    def _no_route(self, model: str, routes: tuple[Route, ...]) -> NoRoute:
        now = time.time()
        reasons = unroutable_reasons(routes, now)
        why = ", ".join(f"{count} {reason}" for reason, count in reasons.items()) or "none left to try"
        cooling = [until - now for route in routes if (until := route.cooldown_until) and until > now]
        plural = "s" if len(routes) != 1 else ""
        return NoRoute(
            f"model '{model}' has {len(routes)} worker{plural} registered but none is routable: {why}",
            retry_after=max(1, math.ceil(min(cooling))) if cooling else self.retry_after,
        )
