"""The host's change counter: shared by every process opening the same file, never created by a reader, never
opened through a link another user could have planted."""

from __future__ import annotations

import os

import pytest

from operategpt.gateway.registry.generation import Generation, generation_path


def test_a_bump_is_seen_by_every_opener_and_a_reader_creates_nothing(tmp_path):
    path = str(tmp_path / "registry.db-generation")
    reader = Generation(path)
    assert reader.current() == 0 and not os.path.exists(path)
    writer = Generation(path)
    assert writer.bump() == 1
    assert reader.current() == 1
    reader.open()
    assert writer.bump() == 2 and reader.current() == 2


def test_forked_children_count_with_their_own_lock(tmp_path):
    generation = Generation(str(tmp_path / "g"))
    generation.open()
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            for _ in range(200):
                generation.bump()
            os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    assert generation.current() == 800


def test_a_symbolic_link_in_its_place_is_refused(tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"do not overwrite")
    link = tmp_path / "g"
    link.symlink_to(target)
    with pytest.raises(OSError):
        Generation(str(link)).bump()
    assert target.read_bytes() == b"do not overwrite"


def test_paths():
    assert generation_path("sqlite:////var/lib/og/registry.db") == "/var/lib/og/registry.db-generation"
    assert generation_path("sqlite:///:memory:") is None
    assert generation_path("postgresql+psycopg://u:p@db/reg") != generation_path("postgresql+psycopg://u:p@db/other")
    assert Generation(None).bump() == 1
