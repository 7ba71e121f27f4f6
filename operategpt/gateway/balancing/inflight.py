"""Per-process counts of requests in progress, per worker id (what `least_busy` balances on)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InFlight:
    """Thread-safe counts; only workers with requests in progress have an entry, so it stays as small as the
    load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[int, int] = {}

    def get(self, worker_id: int) -> int:
        # No lock: a single dict read is atomic, and a count one request stale is fine for balancing.
        return self.counts.get(worker_id, 0)

    def add(self, worker_id: int) -> None:
        with self._lock:
            self.counts[worker_id] = self.counts.get(worker_id, 0) + 1

    def remove(self, worker_id: int) -> None:
        with self._lock:
            remaining = self.counts[worker_id] - 1
            if remaining:
                self.counts[worker_id] = remaining
            else:
                del self.counts[worker_id]

    @contextmanager
    def track(self, worker_id: int) -> Iterator[None]:
        """Count one request to `worker_id` for the duration of the block, even if it raises."""
        self.add(worker_id)
        try:
            yield
        finally:
            self.remove(worker_id)
