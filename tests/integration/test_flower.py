"""Flower through the dashboard: /flower for admins only, its control endpoints too, and Flower embedded on Heroku."""
from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ARTIFACTS
from tests.support import BIN, ROOT, Process, Stack, add_users, free_port, sign_in, wait_for

PASSWORD = "a long enough password"
USERS = {"root": "admin", "olga": "operator", "vic": "viewer"}



def start_flower(stack: Stack, credentials: str) -> tuple[Process, int]:
    """The Procfile's `flower` line, bound to loopback with basic auth, as `make run` starts it."""
    port = free_port()
    env = dict(stack.env, FLOWER_ADDRESS="127.0.0.1", FLOWER_PORT=str(port), FLOWER_BASIC_AUTH=credentials)
    proc = Process("flower", [str(BIN / "python"), "-m", "tasks.flower"], env, stack.logdir)
    stack.processes.append(proc)
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/flower/healthcheck", timeout=2).ok, 30, what="Flower")
    return proc, port


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    """Redis, a worker, Flower and the web (sign-in required) proxying /flower to it; accounts from the CLI."""
    stack = Stack(logdir=ARTIFACTS / "logs-flower")
    try:
        stack.start_redis()
        worker = stack.start_worker(concurrency=2)
        tokens = add_users(stack, USERS, PASSWORD, tokens=True)
        credentials = f"flower:{secrets.token_urlsafe(12)}"
        flower, port = start_flower(stack, credentials)
        url = stack.start_web(env={"AUTH_REQUIRED": "1", "FLOWER_UPSTREAM": f"http://127.0.0.1:{port}",
                                   "FLOWER_BASIC_AUTH": credentials})
        yield {"stack": stack, "url": url, "tokens": tokens, "flower": flower, "worker": worker}
    finally:
        stack.stop()



def bearer(site: dict[str, Any], name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {site['tokens'][name]}"}


def worker_name(site: dict[str, Any]) -> str:
    return re.search(r"(worker@\S+) ready", site["worker"].output())[1]


def pool_size(http: requests.Session, url: str, worker: str) -> int:
    workers = http.get(f"{url}/flower/api/workers", params={"refresh": 1, "workername": worker}, timeout=20).json()
    return len(workers[worker]["stats"]["pool"]["processes"])


def test_an_admin_gets_flowers_dashboard_and_workers_api_through_the_dashboard(site: dict[str, Any]) -> None:
    url, http = site["url"], sign_in(site["url"], "root", PASSWORD)
    assert 'href="/flower/"' in http.get(url, timeout=10).text  # the dashboard links admins to it
    page = http.get(f"{url}/flower", timeout=20)  # redirected to /flower/
    assert page.status_code == 200 and page.url == f"{url}/flower/", page.text[:500]
    assert re.search(r"<title>[^<]*Flower", page.text) and re.search(r'href="/flower/tasks"', page.text)
    # Flower lists a worker once its events or its first inspect told it (seconds after Flower starts).
    worker = worker_name(site)
    page = wait_for(lambda: [answer for answer in [http.get(f"{url}/flower/", timeout=20)]
                             if worker in answer.text], 30, what="Flower to list the worker")[0]
    # Flower's own inline script runs under the page's Content-Security-Policy, and no other would.
    policy = page.headers["Content-Security-Policy"]
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", page.text, re.S)
    assert inline and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy, script
    assert http.get(f"{url}/flower/static/js/flower.js", timeout=10).status_code == 200
    workers = http.get(f"{url}/flower/api/workers", params={"refresh": 1}, timeout=20)
    assert workers.status_code == 200 and worker_name(site) in workers.json(), workers.text[:500]
    # An admin's API token works as well (a script, no cookie).
    assert requests.get(f"{url}/flower/api/workers", headers=bearer(site, "root"), timeout=20).status_code == 200


@pytest.mark.parametrize("name", ["olga", "vic"])
def test_operators_and_viewers_are_refused_flower(site: dict[str, Any], name: str) -> None:
    url, http = site["url"], sign_in(site["url"], name, PASSWORD)
    assert "/flower" not in http.get(url, timeout=10).text  # no link for them
    for path in ("/flower/", "/flower/api/workers", "/flower/tasks"):
        for answer in (http.get(f"{url}{path}", timeout=10),
                       requests.get(f"{url}{path}", headers=bearer(site, name), timeout=10)):
            assert answer.status_code == 403 and answer.json() == {"error": "Flower is for admins only"}, path


def test_signed_out_visitors_are_sent_to_sign_in_or_get_401(site: dict[str, Any]) -> None:
    url = site["url"]
    page = requests.get(f"{url}/flower/tasks", allow_redirects=False, timeout=10)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/flower/tasks")
    for path in ("/flower/api/workers", "/flower/api/task/revoke/x"):
        answer = requests.get(f"{url}{path}", timeout=10)
        assert answer.status_code == 401 and "Sign-in required" in answer.json()["error"]
    assert requests.get(f"{url}/flower/api/workers", headers={"Authorization": "Bearer nope"},
                        timeout=10).status_code == 401


def test_flowers_control_endpoints_work_for_admins_only(site: dict[str, Any]) -> None:
    url, worker = site["url"], worker_name(site)
    admin = sign_in(url, "root", PASSWORD)
    admin.get(f"{url}/flower/", timeout=20)  # Flower's page sets its _xsrf cookie, as in a browser
    xsrf = admin.cookies.get("_xsrf")
    assert xsrf
    grow = f"{url}/flower/api/worker/pool/grow/{worker}"
    before = pool_size(admin, url, worker)
    # What Flower's own page sends (flower.js): same origin, X-XSRFToken from the cookie.
    done = admin.post(grow, params={"n": 1}, headers={"Origin": url, "X-XSRFToken": xsrf}, timeout=20)
    assert done.status_code == 200 and "Growing" in done.json()["message"], done.text
    wait_for(lambda: pool_size(admin, url, worker) == before + 1, 20, what="the pool grown by one")
    # Refused: another site (its page cannot send the token either), and a POST without the token.
    for headers in ({"Origin": "https://evil.example", "X-XSRFToken": xsrf}, {"Origin": url}):
        refused = admin.post(grow, params={"n": 1}, headers=headers, timeout=10)
        assert refused.status_code == 403, (headers, refused.text)
    # A script with an admin's token needs no cookie or XSRF token.
    revoke = requests.post(f"{url}/flower/api/task/revoke/not-a-task", headers=bearer(site, "root"), timeout=20)
    assert revoke.status_code == 200 and "Revoked" in revoke.text
    for name in ("olga", "vic"):
        operator = sign_in(url, name, PASSWORD)
        for answer in (operator.post(grow, headers={"Origin": url, "X-XSRFToken": xsrf}, cookies={"_xsrf": xsrf},
                                     timeout=10),
                       requests.post(grow, headers=bearer(site, name), timeout=10)):
            assert answer.status_code == 403, (name, answer.text)
    assert requests.post(grow, headers={"Origin": url}, timeout=10).status_code == 401
    wait_for(lambda: pool_size(admin, url, worker) == before + 1, 5, what="the pool unchanged by the refusals")


def redis_clients_of(stack: Stack, pid: int) -> int:
    """How many of Redis' clients (CLIENT LIST) are sockets of process `pid` (`ss -tnp`)."""
    import redis

    ports = {c["addr"].rsplit(":", 1)[1] for c in redis.Redis(port=stack.redis_port).client_list()}
    lines = subprocess.run(["ss", "-tnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    return sum(1 for line in lines if f":{stack.redis_port} " in line + " " and f"pid={pid}," in line
               and line.split()[3].rsplit(":", 1)[1] in ports)


def test_flower_holds_a_bounded_number_of_redis_connections(site: dict[str, Any]) -> None:
    # After the pages, the API and control commands of the tests above (FLOWER_THREADS=1).
    url, admin = site["url"], sign_in(site["url"], "root", PASSWORD)
    for path in ("/flower/", "/flower/tasks", "/flower/broker", f"/flower/worker/{worker_name(site)}"):
        assert admin.get(f"{url}{path}", timeout=20).status_code == 200, path
    held = redis_clients_of(site["stack"], site["flower"].pid)
    assert 0 < held <= 8, held  # 21 with Flower's own defaults (measured: README)


def test_flower_down_gives_502_with_a_sentence(site: dict[str, Any]) -> None:
    stack, port = site["stack"], free_port()  # nothing listens there
    url = stack.start_web(env={"AUTH_REQUIRED": "1", "FLOWER_UPSTREAM": f"http://127.0.0.1:{port}"})
    try:
        admin = sign_in(url, "root", PASSWORD)
        page = admin.get(f"{url}/flower/", timeout=10)
        assert page.status_code == 502 and f"Flower is not reachable at http://127.0.0.1:{port}" in page.text
        assert "text/html" in page.headers["Content-Type"]
        api = admin.get(f"{url}/flower/api/workers", timeout=10)
        assert api.status_code == 502 and "Flower is not reachable" in api.json()["error"]
    finally:
        stack.kill_web(url, signal.SIGTERM)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_on_heroku_the_web_process_runs_flower_and_takes_it_down_with_it(site: dict[str, Any],
                                                                        stop: signal.Signals) -> None:
    stack = site["stack"]
    # As Heroku starts `web` with FLOWER_EMBED=1: DYNO set, production; no FLOWER_UPSTREAM, no FLOWER_BASIC_AUTH.
    env = {"DYNO": "web.1", "FLOWER_EMBED": "1", "SECRET_KEY": secrets.token_hex(16), "AUTH_REQUIRED": "1"}
    url = stack.start_web(env={k: v for k, v in env.items()})
    web = stack.web(url)
    flowers = [pid for pid in children(web.pid) if b"tasks.flower" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(flowers) == 1, children(web.pid)
    workers = wait_for(lambda: requests.get(f"{url}/flower/api/workers", headers=bearer(site, "root"),
                                            timeout=10).json(), 30, what="embedded Flower answering")
    assert isinstance(workers, dict)
    assert requests.get(f"{url}/flower/", headers=bearer(site, "vic"), timeout=10).status_code == 403
    os.kill(web.pid, stop)  # the web process alone, not its process group
    web.proc.wait(10)
    wait_for(lambda: gone(flowers[0]), 15, what="embedded Flower stopped with the web process")
    stack.kill_web(url)


def test_flower_on_a_taken_port_ends_with_one_sentence() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = dict(os.environ, FLOWER_ADDRESS="127.0.0.1", FLOWER_PORT=str(port))
        done = subprocess.run([str(BIN / "python"), "-m", "tasks.flower"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert f"flower: port {port} on 127.0.0.1 is already in use" in done.stderr and "FLOWER_PORT" in done.stderr
