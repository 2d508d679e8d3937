"""serve.py, the web entry point, really started: its async modes, a port in use, and stopping as a
container's first process (PID 1) on SIGTERM and SIGINT."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ARTIFACTS
from tests.integration.conftest import Api, Feed
from tests.support import BIN, ROOT, Process, Stack, free_port, wait_for

# serve.SERVING_MODES (serve.py is not imported here: it monkey-patches the importing process).
SERVING_MODES = ("eventlet", "gevent")
# Stop times measured by the PID 1 test (seconds from the signal to the process's end), written
# to tests/artifacts/serve_stop.json: the goal is under 1 s; the test only asserts that it ended.
STOPPED: dict[str, float] = {}
# Generous for a busy two-core machine: the test fails on a process that ignores the signal.
STOP_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A private redis-server and a Celery worker; each test starts the web processes it needs."""
    running = Stack(logdir=ARTIFACTS / "logs" / f"serve-{time.strftime('%H%M%S')}")
    try:
        running.start_redis()
        running.start_worker()
        yield running
    finally:
        running.stop()
        if STOPPED:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "serve_stop.json").write_text(json.dumps(STOPPED, indent=2))


def serve(stack: Stack, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python serve.py` to its end with the stack's environment plus `env`, as a service
    manager would (no terminal: stdin is /dev/null)."""
    return subprocess.run([str(BIN / "python"), "serve.py"], cwd=ROOT, env={**stack.env, **env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """The process failed, its last line on stderr is its sentence, and there is no traceback.
    (Under eventlet, eventlet's own deprecation warning comes before it.)"""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    sentence = result.stderr.strip().splitlines()[-1]
    assert sentence.startswith("web: "), result.stderr
    return sentence


def test_gevent_serves_the_page_the_api_and_live_updates(stack: Stack) -> None:
    """ASYNC_MODE=gevent: the page, the REST API, and a WebSocket client that sees a task end live
    (pushed by the process's own listener, pusher and reconciler, running as gevent greenlets)."""
    url = stack.start_web(env={"ASYNC_MODE": "gevent"})
    web = stack.web(url)
    assert "(async mode gevent)" in web.output()
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    feed = Feed(url)
    try:
        assert feed.client.transport() == "websocket"
        feed.snapshot()
        task = Api(url).launch("steps", steps=3, delay=0.2)
        ended = feed.wait(task["id"])
        assert ended["state"] == "SUCCESS"
        assert any(state in ("STARTED", "PROGRESS") for state in feed.states(task["id"])), \
            f"only {feed.states(task['id'])}: nothing was pushed while the task ran"
        feed.check_contract()
    finally:
        feed.close()
        stack.kill_web(url, signal.SIGTERM)


@pytest.mark.parametrize("mode", ["threading", "gevent_uwsgi", "tornado"])
def test_a_mode_that_cannot_serve_is_refused_with_one_sentence(stack: Stack, mode: str) -> None:
    """threading is Werkzeug's development server (the unit tests' mode); others have no server here."""
    sentence = one_sentence(serve(stack, ASYNC_MODE=mode))
    assert f"ASYNC_MODE={mode}" in sentence
    assert all(name in sentence for name in SERVING_MODES), sentence


@pytest.mark.parametrize("mode", SERVING_MODES)
def test_a_port_in_use_ends_with_one_sentence(stack: Stack, mode: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(stack, ASYNC_MODE=mode, PORT=str(port), HOST="127.0.0.1")
    sentence = one_sentence(result)
    assert str(port) in sentence and "PORT" in sentence and "HOST" in sentence, sentence
    assert "listening for Celery events" not in result.stdout  # refused before anything started


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("mode", SERVING_MODES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_as_pid_1_it_stops_on_a_signal(stack: Stack, mode: str, sig: signal.Signals) -> None:
    """As a container's first process (PID 1 of its own pid namespace, as under docker), with a
    browser's Socket.IO connection open, serve.py ends on SIGTERM and on SIGINT (the kernel drops
    signals a PID 1 has no handler for: without one, `docker stop` waits 10 s and kills)."""
    port = free_port()
    env = {**stack.env, "ASYNC_MODE": mode, "PORT": str(port), "HOST": "127.0.0.1"}
    wrapped = Process(f"pid1-{mode}-{sig.name}", ["unshare", "--pid", "--fork", "--mount-proc",
                                                  str(BIN / "python"), "serve.py"], env, stack.logdir)
    feed = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 30, what="web /healthz")
        (serve_pid,) = children(wrapped.pid)
        namespaced = next(line for line in Path(f"/proc/{serve_pid}/status").read_text().splitlines()
                          if line.startswith("NSpid:"))
        assert namespaced.split()[-1] == "1", f"serve.py is not PID 1 in its namespace: {namespaced}"
        feed = Feed(url)
        feed.snapshot()

        started = time.monotonic()
        os.kill(serve_pid, sig)
        # unshare ends with its child, with the child's status.
        status = wrapped.proc.wait(STOP_TIMEOUT)
        STOPPED[f"{mode} {sig.name}"] = round(time.monotonic() - started, 3)
        assert status == 0, wrapped.output()
        assert f"stopping ({sig.name})" in wrapped.output()
        assert "Traceback" not in wrapped.output()
    finally:
        if feed is not None:
            feed.close()
        wrapped.stop(signal.SIGKILL)
