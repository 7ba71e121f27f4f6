"""The `operategpt` command line, run in-process with click's CliRunner against a real registry."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from operategpt import cli
from operategpt.settings import DEFAULT_THREADS, Settings
from tests.conftest import new_registry_url
from tests.support.db import query
from tests.support.servers import FakeUpstream, free_port, json_reply

CHATGLM = {
    "model_name": "chatglm2-6b",
    "req_url_template": "http://127.0.0.1:8009/api/generate",
    "body": {"input": "{USER_PROMPT}", "model_name": "{MODEL_NAME}"},
    "owner": "operategpt",
    "response_extract": "data.items[].attributes.answer",
}
OPENAI = {
    "model_name": "gpt-4o-mini",
    "req_url_template": "https://api.openai.com/v1/chat/completions",
    "api_format": "openai",
    "headers": {"Authorization": "Bearer sk-live-secret"},
    "weight": 3,
    "priority": 1,
}
WORKERS_YAML = """\
- model_name: chatglm2-6b
  req_url_template: http://127.0.0.1:8009/api/generate
  body: {input: "{USER_PROMPT}", model_name: "{MODEL_NAME}"}
  owner: operategpt
  response_extract: data.items[].attributes.answer
- model_name: gpt-4o-mini
  req_url_template: https://api.openai.com/v1/chat/completions
  api_format: openai
  headers:
    Authorization: Bearer sk-live-secret
  weight: 3
  priority: 1
"""


@pytest.fixture
def run(database_url):
    def invoke(*args: str, database: str | None = None, env: dict[str, str] | None = None,
               stdin: str | None = None) -> Result:
        environment = {"DATABASE_URL": database or database_url, **(env or {})}
        return CliRunner().invoke(cli.main, list(args), env=environment, input=stdin)

    return invoke


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_register_yaml_list_then_list_table_and_offline(run, tmp_path):
    source = tmp_path / "workers.yaml"
    source.write_text(WORKERS_YAML)

    registered = run("workers", "register", str(source))
    assert registered.exit_code == 0, registered.output
    assert registered.stdout.splitlines() == [
        f"registered worker 1: chatglm2-6b {CHATGLM['req_url_template']}",
        f"registered worker 2: gpt-4o-mini {OPENAI['req_url_template']}",
        f"2 workers registered from {source}",
    ]

    table = run("workers", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "MODEL", "URL", "STATUS", "WEIGHT", "PRIORITY", "LAST", "ERROR"]
    assert table[1].split() == ["1", "chatglm2-6b", CHATGLM["req_url_template"], "unknown", "1", "0"]
    assert table[2].split() == ["2", "gpt-4o-mini", OPENAI["req_url_template"], "unknown", "3", "1"]
    # Aligned: every column starts at the same place on every line.
    assert len({line.index("http") for line in table[1:]}) == 1
    assert "sk-live-secret" not in run("workers", "list").output

    offline = run("workers", "offline", "chatglm2-6b", CHATGLM["req_url_template"])
    assert offline.exit_code == 0
    assert offline.stdout == f"removed worker model_name=chatglm2-6b url={CHATGLM['req_url_template']}\n"
    assert [line.split()[1] for line in run("workers", "list").stdout.splitlines()[1:]] == ["gpt-4o-mini"]
    assert_one_line_error(run("workers", "offline", "chatglm2-6b", CHATGLM["req_url_template"]),
                          "no worker registered with model_name=chatglm2-6b")


def test_list_json_is_what_the_api_lists(run, client, tmp_path):
    (tmp_path / "w.json").write_text(json.dumps([CHATGLM, OPENAI]))
    assert run("workers", "register", str(tmp_path / "w.json")).exit_code == 0

    listed = json.loads(run("workers", "list", "--json").stdout)
    assert listed == client.get("/api/server/workers").get_json()["data"]
    assert listed[1]["headers"] == {"Authorization": "Bearer ****"}
    only = json.loads(run("workers", "list", "--json", "--model", "gpt-4o-mini").stdout)
    assert [worker["model_name"] for worker in only] == ["gpt-4o-mini"]


def test_registering_again_updates_in_place(run, tmp_path):
    source = tmp_path / "one.json"
    source.write_text(json.dumps(CHATGLM))
    assert run("workers", "register", str(source)).exit_code == 0
    source.write_text(json.dumps({**CHATGLM, "weight": 5}))
    again = run("workers", "register", str(source))
    assert again.stdout.splitlines()[0] == f"updated worker 1: chatglm2-6b {CHATGLM['req_url_template']}"
    assert json.loads(run("workers", "list", "--json").stdout)[0]["weight"] == 5


def test_register_reads_stdin(run):
    result = run("workers", "register", "-", stdin=json.dumps(CHATGLM))
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("1 worker registered from -\n")


def test_one_invalid_worker_registers_none(run, database_url, tmp_path):
    bad_body = {**OPENAI, "model_name": "broken", "body": {"p": "{USER_PROMPT}"}}
    source = tmp_path / "mixed.json"
    source.write_text(json.dumps([CHATGLM, OPENAI, bad_body]))
    assert_one_line_error(run("workers", "register", str(source)),
                          f"{source}: worker 3 (broken): an openai-format worker takes no body")
    assert query(database_url, "select count(*) from workers") == [(0,)]


@pytest.mark.parametrize("entry", [
    {**CHATGLM, "weight": "1"},
    {**CHATGLM, "colour": "red"},
    {"model_name": "m"},
    {**CHATGLM, "body": {"input": "fixed"}},
    {**CHATGLM, "req_url_template": "ftp://x/y"},
    {**OPENAI, "response_extract": "choices[0]"},
])
def test_validation_is_the_apis(run, client, tmp_path, entry):
    reply = client.post("/api/server/register", json=entry)
    assert reply.status_code == 400
    source = tmp_path / "w.json"
    source.write_text(json.dumps(entry))
    result = run("workers", "register", str(source))
    assert_one_line_error(result)
    assert result.stderr == f"error: {source}: {reply.get_json()['msg']}\n"


def test_upstream_allowlist_applies(run, tmp_path):
    source = tmp_path / "w.json"
    source.write_text(json.dumps(CHATGLM))
    result = run("workers", "register", str(source), env={"UPSTREAM_ALLOWED_HOSTS": "api.example.com"})
    assert_one_line_error(result, "host 127.0.0.1 is not in UPSTREAM_ALLOWED_HOSTS")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("broken.json", '{"model_name": ', "broken.json: not valid JSON: Expecting value: line 1"),
    ("broken.yaml", "model_name: [a\n", "broken.yaml: not valid YAML: expected ',' or ']'"),
    ("empty.yaml", "", "empty.yaml holds no worker"),
    ("scalar.json", '["just text"]', "scalar.json: must be an object with model_name and req_url_template"),
])
def test_unreadable_files(run, tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    assert_one_line_error(run("workers", "register", str(tmp_path / name)), message)


def test_missing_file(run, tmp_path):
    assert_one_line_error(run("workers", "register", str(tmp_path / "nope.json")),
                          f"{tmp_path / 'nope.json'}: No such file or directory")


def test_export_fresh_database_import_round_trips(run, tmp_path, postgres_database):
    source = tmp_path / "w.yaml"
    source.write_text(WORKERS_YAML)
    assert run("workers", "register", str(source)).exit_code == 0

    backup = tmp_path / "backup.json"
    exported = run("workers", "export", str(backup))
    assert exported.exit_code == 0, exported.output
    assert exported.stdout == f"exported 2 workers to {backup}\n"
    assert exported.stderr == f"warning: {backup} holds secret header values unmasked\n"
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    first = json.loads(backup.read_text())
    assert first[1]["headers"] == {"Authorization": "Bearer sk-live-secret"}
    assert set(first[0]) == {
        "model_name", "req_url_template", "owner", "req_type", "body", "headers", "response_extract",
        "api_format", "upstream_model", "model_type", "health_url", "timeout_s", "retry_on_timeout", "weight",
        "priority",
    }

    fresh = new_registry_url(tmp_path, postgres_database)
    imported = run("workers", "import", str(backup), database=fresh)
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.endswith(f"2 workers registered from {backup}\n")
    again = run("workers", "export", database=fresh)
    assert json.loads(again.stdout) == first
    assert again.stderr == "warning: the export holds secret header values unmasked\n"


def test_export_of_an_empty_registry_imports(run, tmp_path):
    empty = run("workers", "export")
    assert (empty.exit_code, json.loads(empty.stdout), empty.stderr) == (0, [], "")
    assert run("workers", "import", "-", stdin=empty.stdout).stdout == "0 workers registered from -\n"


def test_unmigrated_database_says_what_to_do(run, tmp_path):
    bare = tmp_path / "bare.db"
    sqlite3.connect(bare).close()  # a database file without the schema
    url = f"sqlite:///{bare}"
    assert_one_line_error(run("workers", "list", database=url), "database schema is at no revision",
                          "run `operategpt db upgrade`")
    upgraded = run("db", "upgrade", database=url)
    assert (upgraded.exit_code, upgraded.stdout) == (0, f"database {bare} is at the latest revision\n")
    assert run("workers", "list", database=url).stdout == f"no workers registered in {bare}\n"


@pytest.mark.parametrize("command", [("workers", "list"), ("workers", "export"), ("health", "check"),
                                     ("workers", "offline", "m", "http://127.0.0.1:9/g")])
def test_commands_other_than_db_upgrade_create_no_registry(run, tmp_path, command):
    missing = tmp_path / "nowhere" / "operategpt.db"
    assert_one_line_error(run(*command, database=f"sqlite:///{missing}"), f"no registry at {missing} (DATABASE_URL)",
                          "`operategpt db upgrade`")
    assert not missing.parent.exists()


def test_the_default_registry_is_the_servers_wherever_the_command_runs(tmp_path, monkeypatch):
    # The manager started in a checkout (or beside its .env) and the command line run from elsewhere
    # open the same file: a relative OPERATEGPT_DATA_DIR is anchored, never taken from the working directory.
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / ".env").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    servers = Settings.from_env({})
    monkeypatch.chdir(project / "sub")
    assert Settings.from_env({}).database_url == servers.database_url == f"sqlite:///{project}/data/operategpt.db"
    monkeypatch.chdir(elsewhere)
    checkout = Path(cli.__file__).resolve().parents[1]
    assert Settings.from_env({}).database_url == f"sqlite:///{checkout}/data/operategpt.db"
    assert Settings.from_env({"OPERATEGPT_DATA_DIR": "reg"}).data_dir == str(checkout / "reg")
    assert Settings.from_env({"OPERATEGPT_DATA_DIR": str(tmp_path / "abs")}).data_dir == str(tmp_path / "abs")

    result = CliRunner().invoke(cli.main, ["workers", "list"], env={"DATABASE_URL": "", "OPERATEGPT_DATA_DIR": "x"})
    assert_one_line_error(result, f"no registry at {checkout}/x/operategpt.db",
                          "OPERATEGPT_DATA_DIR=x in the checkout operategpt runs from")
    assert not (elsewhere / "data").exists() and not (checkout / "x").exists()


def test_an_installed_package_without_a_dotenv_keeps_the_registry_in_the_users_data_directory(tmp_path, monkeypatch):
    from operategpt import settings as settings_module

    monkeypatch.setattr(settings_module, "_PACKAGE_PARENT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    env = {"HOME": str(tmp_path / "home")}
    assert Settings.from_env(env).data_dir == str(tmp_path / "home/.local/share/operategpt/data")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    assert Settings.from_env(env).data_dir == str(tmp_path / "xdg/operategpt/data")


def test_bad_settings_are_one_line(run):
    assert_one_line_error(run("workers", "list", env={"HEALTH_CHECK_INTERVAL": "often"}),
                          "HEALTH_CHECK_INTERVAL must be a number, got 'often'")


def test_usage_mistakes_exit_2(run):
    result = run("workers", "offline", "only-a-model")
    assert result.exit_code == 2
    assert "Missing argument 'URL'" in result.stderr


def test_health_check_probes_and_records(run, database_url, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/g"
    with FakeUpstream(lambda request: json_reply("ok")) as live:
        workers = [{"model_name": "m", "req_url_template": url, "body": {"p": "{USER_PROMPT}"}}
                   for url in (live.url("/g"), dead)]
        (tmp_path / "w.json").write_text(json.dumps(workers))
        assert run("workers", "register", str(tmp_path / "w.json")).exit_code == 0
        checked = run("health", "check", env={"HEALTH_UNHEALTHY_THRESHOLD": "1"})
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines()[-1].startswith("2 probed, 1 healthy, 1 unhealthy")
    statuses = dict(query(database_url, "select req_url_template, status from workers"))
    assert statuses == {live.url("/g"): "healthy", dead: "unhealthy"}
    table = run("workers", "list").stdout
    assert "healthy" in table and "unhealthy" in table


def test_llmserver_runs_the_inference_server(run, monkeypatch):
    started = []
    monkeypatch.setattr("operategpt.llmserver.serve.main", lambda: started.append(True))
    assert run("llmserver").exit_code == 0
    assert started == [True]


def test_llmserver_configuration_errors_are_one_line(run):
    assert_one_line_error(run("llmserver", env={"LLM_SERVER_PORT": "abc"}), "LLM_SERVER_PORT")


def test_upstream_pool_follows_the_thread_count():
    assert Settings.from_env({}).upstream_pool_size == DEFAULT_THREADS
    assert Settings.from_env({"GUNICORN_THREADS": "64"}).upstream_pool_size == 64
    assert Settings.from_env({"GUNICORN_THREADS": "64", "UPSTREAM_POOL_SIZE": "8"}).upstream_pool_size == 8
