"""The status page at `/`: every model and its workers with health, weight, priority and recent traffic.

Server-rendered HTML (templates/status.html) that reloads itself; an admin route like the
registry listing, and built from the same worker views. Those are read from the database rather
than the routing table: the page is not on the request hot path and should show the registry as it
is now, whichever process registered what.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from operategpt.gateway.balancing import candidates
from operategpt.gateway.metrics import worker_counts
from operategpt.gateway.registry.models import as_utc
from operategpt.gateway.workers import Observed
from operategpt.http.redact import redact_url
from operategpt.schemas.replies import Failure
from operategpt.web.auth import requires
from operategpt.web.current import gateway
from operategpt.web.docs import Operation, documented

bp = Blueprint("status", __name__)

REFRESH_SECONDS = 5


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: int
    url: str
    state: str  # healthy | unhealthy | unknown | cooling_down (the listing's `state`)
    weight: int
    priority: int
    last_checked: datetime | None
    last_checked_ago: str
    last_error: str | None
    consecutive_failures: int
    calls: int
    failed_calls: int


@dataclass(frozen=True, slots=True)
class ModelGroup:
    name: str
    model_types: str
    workers: tuple[WorkerRow, ...]
    routable: int  # workers that would take a request now (the best priority tier's)


def display_url(url: str) -> str:
    """The URL with any password and credential-like query values hidden (`http.redact.redact_url`)."""
    return redact_url(url)


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _row(worker: Mapping[str, Any], counts: Mapping[int, tuple[int, int]], now: datetime) -> WorkerRow:
    checked = as_utc(worker["last_checked_at"])
    calls, failed = counts.get(worker["id"], (0, 0))
    return WorkerRow(
        id=worker["id"],
        url=display_url(worker["req_url_template"]),
        state=worker["state"],
        weight=worker["weight"],
        priority=worker["priority"],
        last_checked=checked,
        last_checked_ago=ago(checked, now),
        last_error=worker["last_error"],
        consecutive_failures=worker["consecutive_failures"],
        calls=calls,
        failed_calls=failed,
    )


def model_groups(
    workers: Sequence[Mapping[str, Any]], counts: Mapping[int, tuple[int, int]], now: datetime
) -> list[ModelGroup]:
    """Worker views grouped by model (the registry lists them by model name, then id)."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for worker in workers:
        grouped.setdefault(worker["model_name"], []).append(worker)
    return [
        ModelGroup(
            name=name,
            model_types=", ".join(sorted({worker["model_type"] for worker in members})),
            workers=tuple(_row(worker, counts, now) for worker in members),
            routable=len(candidates([Observed.of(worker) for worker in members], now.timestamp())),
        )
        for name, members in grouped.items()
    ]


@bp.get("/")
@documented(Operation("Status page: models and their workers (HTML, reloads itself)",
                      {200: "text/html", 401: Failure, 403: Failure}, auth="admin", tag="ops"))
@requires("admin")
def status_page() -> ResponseReturnValue:
    workers = gateway().workers.list_workers()
    now = datetime.now(timezone.utc)
    groups = model_groups(workers, worker_counts(), now)
    html = render_template(
        "status.html",
        groups=groups,
        worker_total=len(workers),
        now=now,
        refresh=REFRESH_SECONDS,
    )
    return html, 200, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
