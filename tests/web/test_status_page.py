"""The status page at `/`: what it shows, what it never shows, and who may see it."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

from werkzeug.wrappers import Response

from operategpt.gateway.metrics import worker_counts
from operategpt.gateway.registry import store as registry
from operategpt.gateway.registry.models import utcnow
from operategpt.settings import Settings
from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream, free_port, json_reply


class WorkerTables(HTMLParser):
    """The page's worker tables as {model: [{column header: cell text}]}, read the way a browser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, list[dict[str, str]]] = {}
        self._model: str | None = None
        self._headers: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.classes: dict[tuple[str, str], str] = {}  # (model, worker id) -> the status badge's classes
        self._badge: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and "workers" in (attributes.get("class") or ""):
            self._model = attributes["data-model"] or ""
            self._headers = []
            self.models[self._model] = []
        elif self._model is not None and tag == "tr":
            self._row = []
        elif self._row is not None and tag in ("td", "th"):
            self._cell = []
        elif self._cell is not None and tag == "span" and "status" in (attributes.get("class") or "").split():
            self._badge = attributes["class"]
        elif self._cell is not None and tag == "br":
            self._cell.append(" ")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._model is not None:
            if not self._headers:
                self._headers = self._row
            else:
                row = dict(zip(self._headers, self._row, strict=True))
                self.models[self._model].append(row)
                if self._badge is not None:
                    self.classes[(self._model, row["id"])] = self._badge
            self._row, self._badge = None, None
        elif tag == "table":
            self._model = None


def worker_tables(html: str) -> WorkerTables:
    parser = WorkerTables()
    parser.feed(html)
    return parser


def register(client, model: str, url: str, **fields) -> int:
    reply = client.post("/api/server/register", json={
        "model_name": model, "req_url_template": url, "body": {"p": "{USER_PROMPT}"}, **fields})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["data"]["id"]


def test_models_workers_state_and_recent_calls(make_settings):
    app = create_app(make_settings(health_unhealthy_threshold=1, passive_failure_threshold=100))
    client = app.test_client()
    gateway = app.extensions["operategpt"]
    with FakeUpstream(lambda r: json_reply("ok")) as live, \
            FakeUpstream(lambda r: Response("overloaded", status=503)) as failing:
        dead = f"http://127.0.0.1:{free_port()}/g"
        up_id = register(client, "chat-model", live.url("/g"), weight=3, priority=1)
        failing_id = register(client, "chat-model", failing.url("/g"), weight=0)
        dead_id = register(client, "chat-model", dead)
        cooling_id = register(client, "embedder", live.url("/e"), model_type="embedding")
        gateway.health.run_round()
        with gateway.db.write() as session:
            registry.start_cooldown(session, cooling_id, utcnow() + timedelta(minutes=5))
        before = worker_counts()
        for _ in range(2):
            assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "chat-model"}) \
                .status_code == 200
        # Undrained, the failing worker is alone in the preferred tier: it fails and the live one answers.
        register(client, "chat-model", failing.url("/g"), weight=1)
        assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "chat-model"}) \
            .status_code == 200

        page = client.get("/")
    app.extensions["operategpt"].db.dispose()

    assert page.status_code == 200
    assert page.content_type == "text/html; charset=utf-8"
    html = page.get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="5">' in html
    assert "since the manager started" in html and "calls since start" in html
    tables = worker_tables(html)
    assert list(tables.models) == ["chat-model", "embedder"]
    rows = {int(row["id"]): row for row in tables.models["chat-model"]}
    assert rows[up_id]["status"] == "healthy"
    assert rows[failing_id]["status"] == "healthy"
    assert rows[dead_id]["status"] == "unhealthy"
    assert "connect" in rows[dead_id]["last error"].lower() or "refused" in rows[dead_id]["last error"].lower()
    assert rows[dead_id]["failures in a row"] == "1"
    assert (rows[up_id]["weight"], rows[up_id]["priority"]) == ("3", "1")
    assert rows[up_id]["URL"] == live.url("/g")
    assert rows[up_id]["last check"].startswith(("0 s ago", "1 s ago"))
    assert rows[up_id]["last check"].split()[-1].startswith(utcnow().strftime("%Y-%m-%d"))
    [embedder] = tables.models["embedder"]
    assert embedder["status"] == "cooling_down"
    assert tables.classes[("embedder", str(cooling_id))] == "status status-cooling_down"
    assert tables.classes[("chat-model", str(dead_id))] == "status status-unhealthy"

    def shown(worker_id: int) -> tuple[int, int]:
        row = rows[worker_id]
        return int(row["calls since start"]), int(row["failed calls since start"])

    def expected(worker_id: int, calls: int, failed: int) -> tuple[int, int]:
        # The counters are process-wide; earlier tests in this process may have used the same ids.
        earlier = before.get(worker_id, (0, 0))
        return earlier[0] + calls, earlier[1] + failed

    assert shown(up_id) == expected(up_id, 3, 0)
    assert shown(failing_id) == expected(failing_id, 1, 1)


def test_unknown_and_drained_workers_and_an_empty_registry(client):
    page = client.get("/").get_data(as_text=True)
    assert "No workers are registered" in page
    register(client, "m", "http://127.0.0.1:9/g", weight=0)
    [row] = worker_tables(client.get("/").get_data(as_text=True)).models["m"]
    assert (row["status"], row["weight"], row["last check"]) == ("unknown", "0 (drained)", "never")


def test_everything_is_escaped_and_no_secret_is_shown(client):
    # Model names cannot hold markup any more (letters, digits and ._:/@+- only): the owner carries it.
    register(client, "m", "http://admin:hunter2@127.0.0.1:9/g?api_key=sk-in-url&q={USER_PROMPT}",
             headers={"Authorization": "Bearer sk-in-header", "X-Api-Key": "sk-other"},
             owner="<script>alert(1)</script>")
    html = client.get("/").get_data(as_text=True)
    assert "<script>alert" not in html
    for secret in ("sk-in-header", "sk-other", "sk-in-url", "hunter2", "Bearer"):
        assert secret not in html
    [row] = worker_tables(html).models["m"]
    assert row["URL"] == "http://admin:****@127.0.0.1:9/g?api_key=****&q={USER_PROMPT}"


def test_admin_only(make_settings):
    open_app = create_app(make_settings())
    from_afar = open_app.test_client().get("/", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert from_afar.status_code == 403
    assert from_afar.get_json()["success"] is False
    open_app.extensions["operategpt"].db.dispose()

    app = create_app(make_settings(admin_token="s3cret-admin"))
    client = app.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/", headers={"Authorization": "Bearer s3cret-admin"}).status_code == 200
    assert client.get("/?token=s3cret-admin").status_code == 401
    app.extensions["operategpt"].db.dispose()


def test_other_routes_keep_json_errors(client):
    assert client.get("/nowhere").get_json() == {"success": False, "msg": "no route for GET /nowhere"}
    wrong_method = client.post("/")
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["success"] is False
    assert client.head("/").status_code == 200


def test_page_reads_the_shared_registry(database_url, make_settings):
    """A worker registered through another process's app shows at once (the page reads the database)."""
    writer = create_app(make_settings())
    reader = create_app(Settings.from_env({}, database_url=database_url, health_checks=False,
                                          registry_sync_interval=3600))
    assert "No workers are registered" in reader.test_client().get("/").get_data(as_text=True)
    register(writer.test_client(), "late", "http://127.0.0.1:9/g")
    assert "late" in worker_tables(reader.test_client().get("/").get_data(as_text=True)).models
    for app in (writer, reader):
        app.extensions["operategpt"].db.dispose()


def test_page_is_in_the_openapi_document(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/"]["get"]
    assert operation["responses"]["200"]["content"] == {"text/html": {"schema": {"type": "string"}}}
    assert operation["security"] == [{"bearer": []}]
