"""The host's change counter: read-your-writes across the processes of one manager.

Each process (gunicorn runs several) routes on its own table, checked against the registry version in the
database every REGISTRY_SYNC_INTERVAL seconds; between checks a process would route on a worker that
another process has already acknowledged taking offline. So every change is also counted in a small file
shared by all processes on the host that use the same database: the writer bumps it after the change
commits and before it answers, and a routing table compares it on every lookup — a read of shared memory,
no system call, no database round trip — and checks the database at once when it moved.

The file sits beside a SQLite database (`<file>-generation`), or for a server database in the temporary
directory, named by a hash of its URL; an in-memory database needs none (one process). A read never
creates it: until a writer does, the generation reads 0.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import stat
import struct
import tempfile

from sqlalchemy.engine import make_url

_COUNTER = struct.Struct("=Q")


def generation_path(database_url: str) -> str | None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        return f"{url.database}-generation"
    digest = hashlib.sha256(url.render_as_string(hide_password=False).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"operategpt-{os.getuid()}-{digest}.generation")


class Generation:
    """A counter shared by the processes that open the same `path` (None: this process's own)."""

    def __init__(self, path: str | None):
        self.path = path
        self._map: mmap.mmap | None = None
        self._fd = -1
        self._pid = 0
        self._own = 0  # the count itself when there is no file

    def open(self) -> None:
        """Create the file if it is missing and map it (a server's processes do, at start)."""
        if self.path is not None and self._map is None:
            self._open(create=True)

    def current(self) -> int:
        """The count now; 0 until the first bump on this host."""
        shared = self._map
        if shared is not None:
            return _COUNTER.unpack_from(shared)[0]
        if self.path is None:
            return self._own
        # Not opened (a command-line process): look without creating anything.
        return _COUNTER.unpack_from(shared)[0] if (shared := self._open(create=False)) is not None else 0

    def bump(self) -> int:
        """Count one committed change (call before acknowledging it); returns the count it made."""
        if self.path is None:
            self._own += 1
            return self._own
        if self._pid != os.getpid():
            # A descriptor inherited over fork shares its flock with the parent: each process takes its own.
            self.close()
        shared = self._map if self._map is not None else self._open(create=True)
        assert shared is not None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            count = _COUNTER.unpack_from(shared)[0] + 1
            _COUNTER.pack_into(shared, 0, count)
            return count
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _open(self, create: bool) -> mmap.mmap | None:
        assert self.path is not None
        # Never through a symbolic link, and only a regular file of this user's: in a shared temporary directory
        # another user could have put either there first.
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid():
                raise PermissionError(f"{self.path}: not a regular file of this user; remove it")
            if os.fstat(fd).st_size < _COUNTER.size:
                if not create:
                    os.close(fd)
                    return None
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < _COUNTER.size:
                        os.ftruncate(fd, _COUNTER.size)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _COUNTER.size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._pid = os.getpid()
        return self._map

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
