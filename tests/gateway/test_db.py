"""SQLite writers take turns: threads of a process, and processes (forked ones included) through a lock file."""

from __future__ import annotations

import multiprocessing
import threading
import time

from operategpt.gateway.registry.db import _SqliteWriters


def _enter(writers: _SqliteWriters, entered) -> None:  # type: ignore[no-untyped-def]
    with writers.turn():
        entered.value = time.monotonic()


def test_a_forked_process_waits_for_the_writer_of_its_parent(tmp_path):
    writers = _SqliteWriters(str(tmp_path / "registry.db"))
    context = multiprocessing.get_context("fork")
    entered = context.Value("d", 0.0)
    with writers.turn():
        child = context.Process(target=_enter, args=(writers, entered))
        child.start()
        time.sleep(0.5)
        assert entered.value == 0.0, "the child wrote while its parent held the turn"
        released = time.monotonic()
    child.join(10)
    assert child.exitcode == 0
    assert entered.value >= released


def test_threads_take_turns(tmp_path):
    writers = _SqliteWriters(str(tmp_path / "registry.db"))
    inside, most = [0], [0]
    lock = threading.Lock()

    def write() -> None:
        for _ in range(50):
            with writers.turn():
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.0005)
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
