"""The shipped gunicorn settings' hooks."""

from __future__ import annotations

import gc
import importlib


def test_a_worker_freezes_what_it_loaded_out_of_the_garbage_collectors_sight(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # or importing the settings makes a directory
    settings = importlib.import_module("operategpt.deploy.gunicorn_conf")
    assert gc.get_freeze_count() == 0
    try:
        settings.post_worker_init(worker=None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
