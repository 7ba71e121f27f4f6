"""README's seed walkthrough, pasted into a shell against a real manager and the fake upstream it names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import requests

from tests.support.servers import ROOT, ManagerProcess, free_port, wait_until


def walkthrough_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


@pytest.fixture
def fake_upstream():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "examples/fake_upstream.py", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL)
    assert wait_until(lambda: _up(f"http://127.0.0.1:{port}/health"))
    yield port
    proc.terminate()
    proc.wait(10)


def _up(url):
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def run_pasted(command: str, manager_port: int, upstream_port: int) -> dict:
    command = command.replace("127.0.0.1:8007", f"127.0.0.1:{manager_port}")
    command = command.replace("127.0.0.1:8009", f"127.0.0.1:{upstream_port}")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("how", ["gunicorn", "script"])
def test_readme_walkthrough(database_url, fake_upstream, how):
    commands = walkthrough_commands()
    assert len(commands) == 7
    with ManagerProcess(database_url, how=how, workers=2) as manager:
        replies = []
        for command in commands:
            replies.append(run_pasted(command, manager.port, fake_upstream))
            if "/api/server/" in command and "-X POST" in command:
                # A person pastes the next command more than REGISTRY_SYNC_INTERVAL (1 s) later; the
                # next request may land on another gunicorn process, which sees the change within that.
                time.sleep(1.1)
    register_glm, register_proxy, listing, ask_glm, ask_proxy, offline, ask_again = replies
    assert register_glm["success"] is True
    assert register_glm["msg"] == "register LLM chatglm2-6b succeed!"
    assert register_proxy["msg"] == "register LLM proxyllm succeed!"
    assert sorted(w["model_name"] for w in listing["data"]) == ["chatglm2-6b", "proxyllm"]
    assert ask_glm == {"success": True, "msg": "execute succeed",
                       "result": "I am ChatGLM2-6B (fake). You said: who are you?"}
    assert ask_proxy == {"success": True, "msg": "execute succeed",
                         "result": "I am a proxy model (fake). You said: who are you?"}
    assert offline == {
        "success": True,
        "msg": f"remove llm worker(model_name=chatglm2-6b, url=http://127.0.0.1:{fake_upstream}/api/generate) succeed!",
    }
    assert ask_again == {"success": False, "msg": "no worker registered for model 'chatglm2-6b'"}
