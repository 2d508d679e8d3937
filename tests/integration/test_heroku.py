"""The Procfile as Heroku runs it (app.json's formation and settings, PORT, DYNO, a rediss:// REDIS_URL)
against a TLS Redis that allows 20 clients, as heroku-redis:mini does: every process healthy, and
the Redis connections each holds counted (the budget: README, "Redis connections")."""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import ARTIFACTS
from tests.support import BIN, ROOT, Process, free_port, wait_for

MAXCLIENTS = 20
# Connections left for everything but the dynos: the test's client, a developer's shell
# (`heroku run python`: .delay() and .get() hold 3 or 4), `heroku redis:cli`.
HEADROOM = 5


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
        cli_env = dict(env, DYNO="run.1")  # `heroku run flask --app web users ...`
        subprocess.run([str(BIN / "flask"), "--app", "web", "users", "add", "admin", "--role", "admin",
                        "--password-stdin"], cwd=ROOT, env=cli_env, input="a long enough password\n", check=True,
                       capture_output=True, text=True, timeout=60)
        token = subprocess.run([str(BIN / "flask"), "--app", "web", "users", "token", "admin"], cwd=ROOT, env=cli_env,
                               check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        signed = {"Authorization": f"Bearer {token}"}  # only a signed-in caller gets /healthz's details
        # The worker is seen at its first heartbeat; its pool is known once it answers the web's `stats`.
        wait_for(lambda: [w["pool"] for w in requests.get(f"{url}/healthz", headers=signed,
                                                          timeout=2).json()["workers"].values()] == ["threads"],
                 60, what="the worker dyno, its pool known")
        yield {"url": url, "token": token, "client": client, "port": port, "processes": started, "env": cli_env}
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
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok", "redis": "ok"}  # anyone
    health = requests.get(f"{url}/healthz", headers=headers, timeout=10).json()
    assert health["status"] == "ok" and health["listener"]["connected"]
    assert [w["pool"] for w in health["workers"].values()] == ["threads"]

    peak: Counter[str] = Counter()
    sampling = threading.Event()

    def sample() -> None:  # the most connections each process held at any moment of the run
        while not sampling.is_set():
            try:
                for owner, held in connections_by_process(heroku["port"], heroku["client"]).items():
                    peak[owner] = max(peak[owner], held)
            except redis.RedisError:
                pass
            (ARTIFACTS / "heroku-connections.json").write_text(json.dumps({"peak": peak}, indent=1))
            sampling.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def launch(task: str, **params: Any) -> str:
        answer = requests.post(f"{url}/api/tasks", json={"task": task, "params": params, "duplicate": True},
                               headers=headers,
                               timeout=20)
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(8) as pool:  # launches at once, as several browsers would
        launched = list(pool.map(lambda _: launch("steps", steps=5, delay=0.2), range(8)))
    fanout = launch("fanout", children=2, steps=3, delay=0.2)  # a task that sends tasks and reads results
    long = launch("long", seconds=60)

    def task(task_id: str) -> dict[str, Any]:
        return requests.get(f"{url}/api/tasks/{task_id}", headers=headers, timeout=20).json()

    # A developer's shell on the same Redis (`heroku run python`): .delay() and .get() work too.
    shell = subprocess.run([str(BIN / "python"), "-c", "from tasks.demo import steps; "
                            "print(steps.delay(steps=2, delay=0.1).get(timeout=60)['steps'])"],
                           cwd=ROOT, env=heroku["env"], capture_output=True, text=True, timeout=90)
    assert shell.returncode == 0 and shell.stdout.strip() == "2", shell.stdout + shell.stderr
    # A threads pool stops a running task at its next progress report (cooperative cancel).
    wait_for(lambda: task(long)["state"] == "PROGRESS", 60, what="the long task to report progress")
    cancel = requests.post(f"{url}/api/tasks/{long}/cancel", headers=headers, timeout=20)
    assert cancel.status_code == 202, cancel.text
    wait_for(lambda: all(task(i)["state"] == "SUCCESS" for i in [*launched, fanout]), 90,
             what="every task to succeed")
    assert {task(i)["result"]["steps"] for i in launched} == {5} and task(fanout)["result"]["steps"] == 6
    wait_for(lambda: task(long)["state"] == "REVOKED", 30, what="the cancelled task to end REVOKED")
    result = requests.get(f"{url}/api/tasks/{launched[0]}/result", headers=headers, timeout=20)
    assert result.status_code == 200 and result.json()["result"]["steps"] == 5
    sampling.set()
    sampler.join(5)

    dynos = {owner: held for owner, held in peak.items() if "serve.py" in owner or "celery" in owner}
    (ARTIFACTS / "heroku-connections.json").write_text(json.dumps({"peak": peak}, indent=1))
    print(f"\nRedis connections at their peak, maxclients {MAXCLIENTS}: {dict(peak)}")
    assert len(dynos) == 2 and sum(dynos.values()) <= MAXCLIENTS - HEADROOM, peak
    logs = "".join(proc.output() for proc in heroku["processes"].values())
    assert "event listener disconnected" not in logs  # held its subscription over TLS all along
    assert "max number of clients" not in logs and "No connection available" not in logs
