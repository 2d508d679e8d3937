"""The Procfile as Heroku runs it (app.json's formation and settings, PORT, DYNO, a rediss:// REDIS_URL)
against a TLS Redis that allows 20 clients, as heroku-redis:mini does: every process healthy, and
the Redis connections each holds counted (the budget: README, "Redis connections")."""
from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import ARTIFACTS
from tests.support import BIN, ROOT, Process, free_port, wait_for

MAXCLIENTS = 20
# What the test itself may hold at once (its Redis client, a CLI run): the rest must fit the processes.
HEADROOM = 3


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def app_json() -> dict[str, Any]:
    return json.loads((ROOT / "app.json").read_text())


@pytest.fixture(scope="module")
def heroku(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TLS redis-server (self-signed, clients not authenticated, maxclients 20) and each process
    of app.json's formation started from its Procfile line by bash, as Heroku starts a dyno."""
    here = tmp_path_factory.mktemp("heroku")
    logdir = ARTIFACTS / "logs-heroku"
    logdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=redis",
                    "-keyout", str(here / "key.pem"), "-out", str(here / "cert.pem")], check=True, capture_output=True)
    port = free_port()
    processes: list[Process] = []
    base = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(here), "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8"}
    tls = Process("redis-tls", ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                                "--tls-cert-file", str(here / "cert.pem"), "--tls-key-file", str(here / "key.pem"),
                                "--tls-ca-cert-file", str(here / "cert.pem"), "--tls-auth-clients", "no",
                                "--maxclients", str(MAXCLIENTS), "--save", "", "--appendonly", "no",
                                "--dir", str(here)], base, logdir)
    processes.append(tls)
    client = redis.Redis(port=port, ssl=True, ssl_cert_reqs="none", socket_timeout=10)
    try:
        wait_for(client.ping, 10, what="the TLS redis-server")
        settings = {name: spec["value"] for name, spec in app_json()["env"].items() if "value" in spec}
        env = {**base, **settings, "REDIS_URL": f"rediss://127.0.0.1:{port}/0", "SECRET_KEY": secrets.token_hex(32)}
        web_port = free_port()
        started = {}
        for name in app_json()["formation"]:
            proc_env = dict(env, DYNO=f"{name}.1", **({"PORT": str(web_port)} if name == "web" else {}))
            started[name] = Process(f"heroku-{name}", ["bash", "-c", procfile()[name]], proc_env, logdir)
            processes.append(started[name])
        url = f"http://127.0.0.1:{web_port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 60, what="the web dyno")
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).json()["workers"], 60, what="the worker dyno")
        cli_env = dict(env, DYNO="run.1")  # `heroku run flask --app web users ...`
        subprocess.run([str(BIN / "flask"), "--app", "web", "users", "add", "admin", "--role", "admin",
                        "--password-stdin"], cwd=ROOT, env=cli_env, input="a long enough password\n", check=True,
                       capture_output=True, text=True, timeout=60)
        token = subprocess.run([str(BIN / "flask"), "--app", "web", "users", "token", "admin"], cwd=ROOT, env=cli_env,
                               check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        yield {"url": url, "token": token, "client": client, "port": port, "processes": started}
    finally:
        for proc in reversed(processes):
            proc.stop()
        client.close()


def connections_by_process(port: int, client: redis.Redis) -> Counter[str]:
    """CLIENT LIST's clients, by the command line of the local process holding each one (`ss -tnp`)."""
    listed = client.client_list()
    owners: dict[str, str] = {}
    for line in subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4].endswith(f":{port}"):
            pid = re.search(r"pid=(\d+)", line)
            if pid:
                try:
                    cmdline = Path(f"/proc/{pid[1]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    cmdline = "?"
                owners[fields[3].rsplit(":", 1)[1]] = f"{pid[1]} {cmdline.strip()[:80]}"
    return Counter(owners.get(entry["addr"].rsplit(":", 1)[1], "?") for entry in listed)


def test_every_procfile_process_runs_healthy_within_twenty_redis_clients(heroku: dict[str, Any]) -> None:
    url, headers = heroku["url"], {"Authorization": f"Bearer {heroku['token']}"}
    assert set(app_json()["formation"]) == {"web", "worker"}  # Flower: /flower of the web dyno (FLOWER_EMBED)
    health = requests.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["listener"]["connected"]
    assert [w["pool"] for w in health["workers"].values()] == ["threads"]

    launched = []
    for _ in range(8):
        answer = requests.post(f"{url}/api/tasks", json={"task": "steps", "params": {"steps": 5, "delay": 0.2}},
                               headers=headers, timeout=20)
        assert answer.status_code == 202, answer.text
        launched.append(answer.json()["id"])
    long = requests.post(f"{url}/api/tasks", json={"task": "long", "params": {"seconds": 60}}, headers=headers,
                         timeout=20).json()["id"]

    def task(task_id: str) -> dict[str, Any]:
        return requests.get(f"{url}/api/tasks/{task_id}", headers=headers, timeout=20).json()

    # A threads pool stops a running task at its next progress report (cooperative cancel).
    wait_for(lambda: task(long)["state"] == "PROGRESS", 60, what="the long task to report progress")
    counts = connections_by_process(heroku["port"], heroku["client"])  # busy: 9 tasks, 4 threads
    cancel = requests.post(f"{url}/api/tasks/{long}/cancel", headers=headers, timeout=20)
    assert cancel.status_code == 202, cancel.text
    wait_for(lambda: all(task(i)["state"] == "SUCCESS" for i in launched), 90, what="every task to succeed")
    assert {task(i)["result"]["steps"] for i in launched} == {5}
    wait_for(lambda: task(long)["state"] == "REVOKED", 30, what="the cancelled task to end REVOKED")
    result = requests.get(f"{url}/api/tasks/{launched[0]}/result", headers=headers, timeout=20)
    assert result.status_code == 200 and result.json()["result"]["steps"] == 5

    held = sum(counts.values())
    (ARTIFACTS / "heroku-connections.json").write_text(json.dumps(counts, indent=1))
    print(f"\nRedis connections on a rediss:// Redis with maxclients {MAXCLIENTS}: {dict(counts)}")
    assert held <= MAXCLIENTS - HEADROOM + 1, counts  # +1: the test's own client is in the list
    web_log = heroku["processes"]["web"].output()
    assert "event listener disconnected" not in web_log  # held its subscription over TLS all along
    assert "max number of clients" not in web_log + heroku["processes"]["worker"].output()
