"""Access that ends, ends everywhere: web/users.py (server-side sessions), web/auth.py, and
web/sockets.py (watch_access) on two real web processes; and no string in the repository signs a
session (web/config.py shared_secret_key)."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
import socketio
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from tests.conftest import ARTIFACTS
from tests.support import ROOT, Stack, add_users, sign_in, users_cli, wait_for

PASSWORD = "a long enough password"
USERS = {"ada": "admin", "otto": "operator"}



@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    """Redis and two web processes with sign-in on and no SECRET_KEY (as docker compose runs it)."""
    stack = Stack(logdir=ARTIFACTS / "logs-access",
                  env={"SECRET_KEY": "", "AUTH_REQUIRED": "1", "LOGIN_LIMIT": "1000/minute",
                       "LOGIN_LIMIT_PER_ADDRESS": "1000/minute", "SESSION_RECHECK": "2"})
    try:
        stack.start_redis()
        add_users(stack, USERS, PASSWORD)
        urls = [stack.start_web(), stack.start_web()]
        yield {"stack": stack, "urls": urls}
    finally:
        stack.stop()



def sign_out(http: requests.Session, url: str) -> None:
    page = http.get(url, timeout=10)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text) or \
        re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    answer = http.post(f"{url}/logout", data={"csrf_token": token[1]}, headers={"Origin": url},
                       allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


class Live:
    """A Socket.IO client as a browser tab holds it (no reconnection: an ended connection stays ended)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.client = socketio.Client(reconnection=False)
        self.snapshots = 0
        self.shown: set[str] = set()  # the ids of the tasks its last snapshot held
        self.client.on("snapshot", self._snapshot)
        self.client.connect(url, headers=headers, transports=["websocket"], wait_timeout=20)

    def _snapshot(self, data: Any) -> None:
        self.shown = {task["id"] for task in data["tasks"]}
        self.snapshots += 1

    @property
    def connected(self) -> bool:
        return self.client.connected

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


def refused(url: str, headers: dict[str, str]) -> bool:
    try:
        Live(url, headers).close()
    except socketio.exceptions.ConnectionError:
        return True
    return False


def test_signing_out_ends_the_session_everywhere_and_a_copied_cookie_no_longer_works(site: dict[str, Any]) -> None:
    one, two = site["urls"]
    http = sign_in(one, "otto", PASSWORD)
    copied = dict(http.cookies)  # what another tab (or someone who copied the cookie) holds
    headers = {"Cookie": cookie_header(copied)}
    # The generated key is shared through Redis: the cookie from web one works on web two.
    assert requests.get(f"{two}/api/tasks", headers=headers, timeout=10).status_code == 200
    tabs = [Live(one, headers), Live(two, headers)]
    other = Live(two, {"Cookie": cookie_header(dict(sign_in(two, "otto", PASSWORD).cookies))})  # a second sign-in
    wait_for(lambda: all(tab.snapshots for tab in [*tabs, other]), 10, what="the snapshots")

    sign_out(http, one)
    wait_for(lambda: not any(tab.connected for tab in tabs), 10, what="both tabs' live connections to end")
    for url in (one, two):
        assert requests.get(f"{url}/api/tasks", headers=headers, timeout=10).status_code == 401
        assert refused(url, headers)
    assert other.connected  # only the session that signed out ended
    other.close()


def launch_as(url: str, name: str) -> str:
    """A task launched by `name` through a signed-in page (its CSRF token); its id. Queued only:
    the launch records it in the task index (celery_dashboard.index), no worker needed."""
    http = sign_in(url, name, PASSWORD)
    token = re.search(r'name="csrf-token" content="([^"]+)"', http.get(url, timeout=10).text)[1]
    body = {"task": "steps", "params": {"steps": 1, "delay": 0}, "duplicate": True}
    answer = http.post(f"{url}/api/tasks", json=body, headers={"X-CSRFToken": token, "Origin": url}, timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


# README: a change ends the connections within about a second of being stored, which is before the
# CLI returns; waited for generously, on a machine busy with other tests.
ENDS_WITHIN = 10


@pytest.mark.parametrize("change", ["remove", "role", "revoke-tokens", "sign-out"])
def test_an_ended_account_role_or_token_ends_its_live_connections(site: dict[str, Any], change: str) -> None:
    stack, (one, two) = site["stack"], site["urls"]
    name = f"temp-{change}"
    token = add_users(stack, {name: "admin"}, PASSWORD, tokens=True)[name]
    session = {"Cookie": cookie_header(dict(sign_in(one, name, PASSWORD).cookies))}
    bearer = {"Authorization": f"Bearer {token}"}
    others = launch_as(one, "otto")  # another user's task: an admin sees it, a viewer must not
    bystander = Live(two, {"Cookie": cookie_header(dict(sign_in(two, "ada", PASSWORD).cookies))})
    by_session, by_token = Live(two, session), Live(one, bearer)
    wait_for(lambda: by_session.snapshots and by_token.snapshots, 10, what="the snapshots")
    assert others in by_session.shown and others in by_token.shown

    if change == "remove":
        users_cli(stack, "remove", name)
    elif change == "role":
        users_cli(stack, "role", name, "viewer")  # admins see every task; a viewer must not keep that room
    elif change == "revoke-tokens":
        users_cli(stack, "revoke-tokens", name)
    else:
        users_cli(stack, "sign-out", name)
    session_ends = change in ("remove", "role", "sign-out")
    token_ends = change in ("remove", "role", "revoke-tokens")
    wait_for(lambda: by_session.connected != session_ends and by_token.connected != token_ends, ENDS_WITHIN,
             what=f"the connections {change} ends to end")
    assert (by_session.connected, by_token.connected) == (not session_ends, not token_ends)
    assert (requests.get(f"{two}/api/tasks", headers=session, timeout=10).status_code == 401) == session_ends
    after = requests.get(f"{one}/api/tasks", headers=bearer, timeout=10).status_code
    assert after == (401 if change in ("remove", "revoke-tokens") else 200)
    assert bystander.connected and others in bystander.shown
    if change == "role":  # the script reconnects with its token, as the viewer it now is: no admin's view
        again = Live(two, bearer)
        wait_for(lambda: again.snapshots, 10, what="the new role's snapshot")
        assert others not in again.shown
        assert requests.get(f"{two}/api/tasks/{others}", headers=bearer, timeout=10).status_code == 404
        again.close()
    for live in (bystander, by_session, by_token):
        live.close()


def test_a_session_that_expires_ends_its_live_connection(site: dict[str, Any]) -> None:
    stack, (one, _) = site["stack"], site["urls"]
    http = sign_in(one, "otto", PASSWORD)
    headers = {"Cookie": cookie_header(dict(http.cookies))}
    tab = Live(one, headers)
    wait_for(lambda: tab.snapshots, 10, what="the snapshot")
    session_id = payload_of(http.cookies["session"])["sid"]
    key = "dashboard:session:" + hashlib.sha256(session_id.encode()).hexdigest()
    client = redis.Redis(port=stack.redis_port)
    assert client.ttl(key) > 0  # kept for SESSION_HOURS
    client.pexpire(key, 1)  # as if SESSION_HOURS had passed: no sign-out, no access epoch change
    wait_for(lambda: not tab.connected, 15, what="the expired session's connection to end (SESSION_RECHECK=2)")
    assert requests.get(f"{one}/api/tasks", headers=headers, timeout=10).status_code == 401


def repository_literals() -> set[str]:
    """Every quoted string and every assigned or defaulted value in the repository's tracked files."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found: set[str] = set()
    for name in files:
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        for match in re.finditer(r'"([^"\n]{1,300})"|\'([^\'\n]{1,300})\'', text):
            found.add(match.group(1) or match.group(2))
        for match in re.finditer(r'(?:=|:-|: )([^\s"\'${}]{1,300})', text):
            found.add(match.group(1))
    return found


FORGER = Flask("forger")


def forge(secret: str, payload: dict[str, Any]) -> str:
    """A session cookie for `payload` signed with `secret`, exactly as Flask signs its own."""
    FORGER.secret_key = secret
    serializer = SecureCookieSessionInterface().get_signing_serializer(FORGER)
    assert serializer is not None
    return serializer.dumps(payload)


def payload_of(cookie: str) -> dict[str, Any]:
    """The (signed, not encrypted) content of a Flask session cookie."""
    data = cookie.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return json.loads(zlib.decompress(raw) if cookie.startswith(".") else raw)


def test_no_string_in_the_repository_signs_a_session(site: dict[str, Any]) -> None:
    stack, (one, _) = site["stack"], site["urls"]
    real = sign_in(one, "ada", PASSWORD).cookies["session"]
    payload = payload_of(real)  # the admin's real, live session id: only the signature is forged
    assert payload["user"] == "ada" and payload["sid"]
    key = redis.Redis(port=stack.redis_port).get("dashboard:secret-key").decode()
    literals = repository_literals()
    assert len(literals) > 1000
    assert key not in literals
    # The control: the same payload signed with the server's key is a working session.
    control = requests.get(f"{one}/api/tasks", cookies={"session": forge(key, payload)}, timeout=10)
    assert control.status_code == 200
    cookies = [(literal, forge(literal, payload)) for literal in sorted(literals)]

    def accepted_of(chunk: list[tuple[str, str]]) -> list[str]:
        # http.client on one kept-alive connection: requests spent 2.4 ms of CPU per request here,
        # more than the server's answer, and 10,000 of them took 77 s in a loaded `make test`.
        where = urlsplit(one)
        http = HTTPConnection(where.hostname, where.port, timeout=10)
        accepted = []
        try:
            for literal, cookie in chunk:
                http.request("GET", "/api/tasks", headers={"Cookie": f"session={cookie}"})
                answer = http.getresponse()
                answer.read()
                if answer.status != 401:
                    accepted.append(literal)
        finally:
            http.close()
        return accepted

    assert accepted_of([("the server's key", forge(key, payload))]) == ["the server's key"]  # it can see one
    # Four connections at once: the server answers them together.
    with ThreadPoolExecutor(4) as pool:
        accepted = [literal for found in pool.map(accepted_of, [cookies[i::4] for i in range(4)]) for literal in found]
    assert accepted == []
    (ARTIFACTS / "forged-cookies.json").write_text(json.dumps({"literals_tried": len(literals), "accepted": 0}))
