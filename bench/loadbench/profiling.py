"""py-spy on the manager's workers under load, and a text summary of its raw (collapsed-stack) output.

`py-spy record --format raw` writes one line per distinct stack, `root;...;leaf count`, each frame
`function (file:line)`. Percentages are of all samples: exclusive counts the leaf frame only, inclusive
counts every function once per stack it appears in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Leaf files grouped by who owns the code, for "where does the CPU go" at a glance.
_LIBRARIES = (
    ("operategpt", "operategpt (app code)"),
    ("flask", "flask"),
    ("werkzeug", "werkzeug"),
    ("gunicorn", "gunicorn"),
    ("requests", "requests"),
    ("urllib3", "urllib3"),
    ("http/client", "http.client (stdlib)"),
    ("email/", "email header parsing (stdlib, via http.client)"),
    ("pydantic", "pydantic"),
    ("sqlalchemy", "sqlalchemy"),
    ("json", "json (stdlib)"),
    ("socket", "socket (stdlib)"),
    ("ssl", "ssl (stdlib)"),
    ("selectors", "selectors (stdlib)"),
    ("threading", "threading (stdlib)"),
    ("concurrent", "concurrent.futures (stdlib)"),
    ("queue", "queue (stdlib)"),
    ("logging", "logging (stdlib)"),
    ("urllib/", "urllib.parse (stdlib)"),
    ("idna", "idna"),
    ("encodings", "encodings/codecs (stdlib)"),
)


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, output: Path, *, rate: int = 250, gil: bool = True) -> subprocess.Popen[bytes]:
    """Start recording `pid` for `seconds` into `output` (raw collapsed stacks); wait on the returned process.

    --nonblocking reads the process's memory without pausing it: pausing a process of hundreds of threads
    250 times a second would itself halve its throughput.
    """
    tool = py_spy()
    if tool is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    command = [tool, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate),
               "--format", "raw", "--output", str(output), "--nonblocking"]
    if gil:
        command.append("--gil")  # only the thread holding the GIL: where the process spends CPU in Python
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _name(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    file = match["file"]
    for marker in ("site-packages/", "lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker == "lib/python3.":
                file = file.split("/", 1)[1] if "/" in file else file
    return f"{match['function']} ({file})", file


def library(file: str) -> str:
    for needle, label in _LIBRARIES:
        if needle in file:
            return label
    return file or "other"


@dataclass
class Profile:
    samples: int
    inclusive: Counter[str]
    exclusive: Counter[str]
    by_library: Counter[str]

    def report(self, top: int = 20) -> str:
        if not self.samples:
            return "no samples"
        lines = [f"{self.samples} samples"]
        for title, counter in (("exclusive (leaf) by library", self.by_library),
                               ("inclusive by function", self.inclusive),
                               ("exclusive by function", self.exclusive)):
            lines.append(f"\n{title}:")
            for name, count in counter.most_common(top):
                lines.append(f"  {100 * count / self.samples:5.1f}%  {name}")
        return "\n".join(lines)


def summarize(paths: list[Path]) -> Profile:
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    by_library: Counter[str] = Counter()
    samples = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_name(frame) for frame in stack.split(";") if frame]
            if not frames:
                continue
            samples += count
            for name in {name for name, _ in frames}:
                inclusive[name] += count
            leaf, leaf_file = frames[-1]
            exclusive[leaf] += count
            by_library[library(leaf_file)] += count
    return Profile(samples, inclusive, exclusive, by_library)
