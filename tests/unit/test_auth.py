"""Accounts, sign-in, roles, per-user visibility, CSRF, rate limits and headers, in the app alone."""
from __future__ import annotations

import html
import re
from typing import Any

import pytest
from click.testing import CliRunner

from tests.unit.conftest import make_app
from web.extensions import socketio
from web.headers import HEADERS
from web.users import TOKENS_KEY, USERS_KEY

PASSWORD = "correct horse battery"
ROLES = ("viewer", "operator", "admin")


@pytest.fixture
def secure_app(redis_server: Any, results: Any, sent: list) -> Any:
    """AUTH_REQUIRED on, with one account per role (and a second operator), each with a token."""
    app = make_app(redis_server, results, AUTH_REQUIRED=True, LAUNCH_LIMIT="5/minute",
                   LAUNCH_LIMIT_PER_ADDRESS="100/minute", LOGIN_LIMIT="3/minute", LOGIN_LIMIT_PER_ADDRESS="100/minute",
                   LOGIN_FAILURE_LIMIT_PER_NAME="6/hour", MAX_ACTIVE_PER_USER=3)
    users = app.extensions["dashboard"].users
    app.tokens = {}
    for name in (*ROLES, "other"):
        users.add(name, PASSWORD, "operator" if name == "other" else name)
        app.tokens[name] = users.new_token(name)
    return app


def bearer(app: Any, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.tokens[name]}"}


def signed_in(app: Any, name: str) -> tuple[Any, str]:
    """A test client signed in through the form; returns it and the page's CSRF token."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get("/").get_data(as_text=True)
    return client, re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def launch(app: Any, name: str) -> dict[str, Any]:
    response = app.test_client().post("/api/tasks", json={"task": "steps", "duplicate": True},
                                      headers=bearer(app, name))
    assert response.status_code == 202, response.get_json()
    return response.get_json()


# ---- accounts ------------------------------------------------------------------------------------

def test_passwords_and_tokens_are_stored_only_as_hashes(secure_app: Any, redis_server: Any) -> None:
    import fakeredis

    raw = fakeredis.FakeRedis(server=redis_server)
    stored = b"".join(raw.hvals(USERS_KEY)) + b"".join(raw.hkeys(TOKENS_KEY))
    assert PASSWORD.encode() not in stored and b"scrypt:" in stored
    for token in secure_app.tokens.values():
        assert token.encode() not in stored


def test_the_cli_adds_lists_issues_tokens_and_removes(secure_app: Any) -> None:
    runner = secure_app.test_cli_runner()
    result = runner.invoke(args=["users", "add", "carol", "--role", "viewer", "--password-stdin"],
                           input="a long password\n")
    assert result.exit_code == 0, result.output
    assert "carol\tviewer" in runner.invoke(args=["users", "list"]).output
    token = runner.invoke(args=["users", "token", "carol"]).output.strip()
    client = secure_app.test_client()
    assert client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert runner.invoke(args=["users", "add", "x", "--password-stdin"], input="short\n").exit_code != 0
    assert runner.invoke(args=["users", "remove", "carol"]).exit_code == 0
    assert client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert isinstance(runner, CliRunner)


# ---- sign-in -------------------------------------------------------------------------------------

def test_anonymous_gets_the_login_page_or_401_and_no_socket(secure_app: Any) -> None:
    client = secure_app.test_client()
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    for method, path in [("get", "/api/catalog"), ("get", "/api/tasks"), ("get", "/api/tasks/x"),
                         ("post", "/api/tasks"), ("post", "/api/tasks/x/cancel"), ("get", "/api/openapi.json")]:
        response = getattr(client, method)(path, json={})
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.get_json()["error"]
    assert client.get("/api/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    sio = socketio.test_client(secure_app, flask_test_client=client)
    assert not sio.is_connected()


def test_wrong_password_is_refused_and_the_session_cookie_is_locked_down(secure_app: Any) -> None:
    client = secure_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": "admin", "password": "wrong", "csrf_token": token})
    assert response.status_code == 401 and "Wrong user name or password" in response.get_data(as_text=True)
    response = client.post("/login?next=//evil.example/", data={"username": "admin", "password": PASSWORD,
                                                                 "csrf_token": token})
    assert response.headers["Location"] == "/"  # never an open redirect
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_login_without_csrf_token_is_refused(secure_app: Any) -> None:
    response = secure_app.test_client().post("/login", data={"username": "admin", "password": PASSWORD})
    assert response.status_code == 400


def attempt(app: Any, name: str, password: str, address: str, client: Any = None) -> Any:
    """One sign-in through the form from `address` (a new browser unless `client` is given)."""
    client = client or app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": address})


def refusal(response: Any) -> str:
    """The sign-in page's alert, as the person at the form reads it."""
    assert response.mimetype == "text/html"
    return html.unescape(re.search(r'role="alert">([^<]*)<', response.get_data(as_text=True)).group(1))


def test_a_sign_in_that_fails_for_any_reason_shows_the_sign_in_page_saying_why(secure_app: Any,
                                                                            redis_server: Any) -> None:
    """A fresh user's review: with Redis away the browser showed {"error": ...} as the page."""
    client = secure_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    redis_server.connected = False
    down = client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    assert down.status_code == 503 and refusal(down) == "Redis is unavailable; try again shortly."
    redis_server.connected = True
    stale = client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": "stale"})
    assert stale.status_code == 400 and "CSRF" in refusal(stale) and 'name="password"' in stale.get_data(as_text=True)
    api = client.post("/api/tasks", json={"task": "steps"})  # a program still gets JSON
    assert api.status_code == 401 and api.get_json()["error"]


def test_login_attempts_are_rate_limited_per_address_and_user_name(secure_app: Any) -> None:
    statuses = [attempt(secure_app, "admin", "guess", "10.0.0.1").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]  # LOGIN_LIMIT=3/minute
    response = attempt(secure_app, "admin", "guess", "10.0.0.1")
    assert int(response.headers["Retry-After"]) > 0 and refusal(response).startswith("You can try to")
    assert 'name="password"' in response.get_data(as_text=True)  # the form again, to try later
    # Another address is not held back by this one's attempts: the owner signs in.
    assert attempt(secure_app, "admin", PASSWORD, "10.0.0.2").status_code == 302


def test_wrong_passwords_from_many_addresses_hold_back_only_browsers_new_to_the_name(secure_app: Any) -> None:
    owner = secure_app.test_client()  # the owner's browser: it signed in as admin before
    assert attempt(secure_app, "admin", PASSWORD, "10.1.0.1", owner).status_code == 302
    # A stranger on other addresses, each under the per-address limits: wrong passwords are
    # answered until LOGIN_FAILURE_LIMIT_PER_NAME (6/hour) failures, then new browsers wait.
    statuses = [attempt(secure_app, "admin", "guess", f"10.2.0.{i}").status_code for i in range(8)]
    assert statuses == [401] * 6 + [429] * 2
    refused = attempt(secure_app, "admin", PASSWORD, "10.1.0.1")  # even the right password, from a new browser
    assert refused.status_code == 429
    assert refusal(refused).startswith("You can fail to sign in as one user from new browsers at most 6")
    # The owner's own browser is not held back, from any address.
    assert attempt(secure_app, "admin", PASSWORD, "10.1.0.9", owner).status_code == 302
    # Its mistakes are its own count: at the limit it waits, alone.
    assert [attempt(secure_app, "admin", "typo", f"10.1.1.{i}", owner).status_code for i in range(7)] == \
        [401] * 6 + [429]
    assert "from this browser" in refusal(attempt(secure_app, "admin", PASSWORD, "10.1.2.0", owner))
    # The other accounts are not held back at all.
    assert attempt(secure_app, "viewer", PASSWORD, "10.2.0.1").status_code == 302


def test_a_device_cookie_counts_only_for_the_names_that_signed_in_with_it(secure_app: Any) -> None:
    from web import devices

    browser = secure_app.test_client()
    assert attempt(secure_app, "viewer", PASSWORD, "10.3.0.1", browser).status_code == 302
    cookie = browser.get_cookie(devices.COOKIE, path="/login")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    secure_app.config["SESSION_COOKIE_SECURE"] = True  # production: Secure, like the session cookie
    https = secure_app.test_client()
    page = https.get("/login", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = https.post("/login", base_url="https://localhost", headers={"Referer": "https://localhost/login"},
                        data={"username": "viewer", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302 and https.get_cookie(devices.COOKIE, domain="localhost", path="/login").secure
    secure_app.config["SESSION_COOKIE_SECURE"] = False
    for i in range(6):  # new browsers' failures for admin
        attempt(secure_app, "admin", "guess", f"10.3.1.{i}")
    # A browser known to viewer is new to admin; a forged or altered cookie is no cookie.
    assert attempt(secure_app, "admin", PASSWORD, "10.3.0.1", browser).status_code == 429
    forged = secure_app.test_client()
    forged.set_cookie(devices.COOKIE, cookie.value[:-2] + "xx", path="/login")
    assert attempt(secure_app, "admin", PASSWORD, "10.3.0.2", forged).status_code == 429
    with secure_app.test_request_context():
        other_key = devices.URLSafeTimedSerializer("not the key", salt=devices.SALT)
        forged.set_cookie(devices.COOKIE, other_key.dumps({"id": "x", "users": ["admin"]}), path="/login")
    assert attempt(secure_app, "admin", PASSWORD, "10.3.0.2", forged).status_code == 429


# ---- roles and visibility ------------------------------------------------------------------------

# (role, method, path) -> expected status; {own}/{other} are task ids of the operator and "other".
MATRIX = {
    ("viewer", "GET", "/api/catalog"): 200, ("operator", "GET", "/api/catalog"): 200,
    ("admin", "GET", "/api/catalog"): 200,
    ("viewer", "POST", "/api/tasks"): 403, ("operator", "POST", "/api/tasks"): 202,
    ("admin", "POST", "/api/tasks"): 202,
    ("viewer", "GET", "/api/tasks/{own}"): 404, ("operator", "GET", "/api/tasks/{own}"): 200,
    ("admin", "GET", "/api/tasks/{own}"): 200,
    ("operator", "GET", "/api/tasks/{other}"): 404, ("admin", "GET", "/api/tasks/{other}"): 200,
    ("viewer", "POST", "/api/tasks/{own}/cancel"): 403, ("operator", "POST", "/api/tasks/{other}/cancel"): 404,
    ("operator", "POST", "/api/tasks/{own}/cancel"): 202, ("admin", "POST", "/api/tasks/{other}/cancel"): 202,
    ("viewer", "GET", "/"): 200, ("operator", "GET", "/"): 200, ("admin", "GET", "/"): 200,
}


@pytest.mark.parametrize(("role", "method", "path"), list(MATRIX))
def test_authorization_matrix(secure_app: Any, role: str, method: str, path: str) -> None:
    ids = {"own": launch(secure_app, "operator")["id"], "other": launch(secure_app, "other")["id"]}
    client = secure_app.test_client()
    body = {"task": "steps", "duplicate": True} if path == "/api/tasks" else None
    response = client.open(path.format(**ids), method=method, json=body, headers=bearer(secure_app, role))
    assert response.status_code == MATRIX[(role, method, path)], response.get_data(as_text=True)


def test_lists_and_snapshots_show_only_your_own_tasks_admins_all(secure_app: Any, dash: Any) -> None:
    own, other = launch(secure_app, "operator"), launch(secure_app, "other")
    dash.coalescer.add({"id": "from-a-shell", "state": "PENDING", "name": "tasks.demo.steps"})  # no owner
    dash.pusher.flush()
    client = secure_app.test_client()
    seen = {name: {t["id"] for t in client.get("/api/tasks", headers=bearer(secure_app, name)).get_json()["tasks"]}
            for name in ROLES}
    assert seen["operator"] == {own["id"]}
    assert seen["viewer"] == set()
    assert seen["admin"] == {own["id"], other["id"], "from-a-shell"}
    for name, expected in seen.items():
        sio = socketio.test_client(secure_app, headers=bearer(secure_app, name))
        snapshot = [m["args"][0] for m in sio.get_received() if m["name"] == "snapshot"][0]
        assert {t["id"] for t in snapshot["tasks"]} == expected, name


def test_pushes_reach_only_the_owner_and_the_admins(secure_app: Any, dash: Any) -> None:
    own, other = launch(secure_app, "operator"), launch(secure_app, "other")
    clients = {name: socketio.test_client(secure_app, headers=bearer(secure_app, name))
               for name in (*ROLES, "other")}
    for sio in clients.values():
        sio.get_received()
    for task in (own, other):
        dash.coalescer.add({"id": task["id"], "state": "STARTED"})
    dash.coalescer.add({"id": "from-a-shell", "state": "STARTED", "name": "tasks.demo.steps"})
    dash.pusher.flush()
    got = {name: [t["id"] for m in sio.get_received() if m["name"] == "tasks" for t in m["args"][0]["tasks"]]
           for name, sio in clients.items()}
    assert got["operator"] == [own["id"]] and got["other"] == [other["id"]] and got["viewer"] == []
    assert sorted(got["admin"]) == sorted([own["id"], other["id"], "from-a-shell"])


def test_a_session_sees_the_same_as_its_token(secure_app: Any) -> None:
    own = launch(secure_app, "operator")
    client, _ = signed_in(secure_app, "operator")
    assert [t["id"] for t in client.get("/api/tasks").get_json()["tasks"]] == [own["id"]]
    sio = socketio.test_client(secure_app, flask_test_client=client)
    assert sio.is_connected()


# ---- CSRF, cross-site, limits --------------------------------------------------------------------

def test_cookie_authenticated_changes_need_the_csrf_token(secure_app: Any) -> None:
    client, token = signed_in(secure_app, "operator")
    assert client.post("/api/tasks", json={"task": "steps"}).status_code == 400
    response = client.post("/api/tasks", json={"task": "steps"}, headers={"X-CSRFToken": token})
    assert response.status_code == 202
    task_id = response.get_json()["id"]
    assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 400
    assert client.post(f"/api/tasks/{task_id}/cancel", headers={"X-CSRFToken": token}).status_code == 202
    assert client.post("/logout").status_code == 400


def test_cross_site_posts_are_refused_even_on_a_local_run(client: Any) -> None:
    response = client.post("/api/tasks", json={"task": "steps"}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403


def test_launches_are_rate_limited_per_user_with_retry_after(secure_app: Any, dash: Any) -> None:
    client = secure_app.test_client()
    statuses = []
    for _ in range(6):
        response = client.post("/api/tasks", json={"task": "steps"}, headers=bearer(secure_app, "admin"))
        statuses.append(response.status_code)
        if response.status_code == 202:  # end it, so the running cap is not what answers
            dash.coalescer.add({"id": response.get_json()["id"], "state": "SUCCESS"})
            dash.pusher.flush()
    assert statuses == [202] * 5 + [429]
    assert int(response.headers["Retry-After"]) > 0 and response.get_json()["error"]


def test_a_user_may_have_only_so_many_unfinished_tasks(secure_app: Any) -> None:
    for _ in range(3):
        launch(secure_app, "operator")
    response = secure_app.test_client().post("/api/tasks", json={"task": "steps", "duplicate": True},
                                             headers=bearer(secure_app, "operator"))
    assert response.status_code == 429 and "unfinished" in response.get_json()["error"]
    launch(secure_app, "other")  # others are not affected


# ---- headers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/login", "/api/tasks", "/api/catalog", "/healthz", "/static/js/main.js",
                                  "/api/tasks/unknown", "/nowhere"])
def test_security_headers_on_every_response(secure_app: Any, path: str) -> None:
    response = secure_app.test_client().get(path, headers=bearer(secure_app, "admin"))
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (path, name)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp


def test_production_cookies_are_secure(monkeypatch: pytest.MonkeyPatch) -> None:
    from web.config import ConfigError, from_env

    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    assert from_env()["SESSION_COOKIE_SECURE"] is True and from_env()["AUTH_REQUIRED"] is True
    monkeypatch.setenv("AUTH_REQUIRED", "0")
    with pytest.raises(ConfigError):
        from_env()


@pytest.mark.parametrize(("host", "required"), [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                                ("0.0.0.0", True), ("10.1.2.3", True)])
def test_auth_is_required_unless_the_server_listens_on_loopback(monkeypatch: pytest.MonkeyPatch, host: str,
                                                                 required: bool) -> None:
    from web.config import from_env

    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.delenv("DYNO", raising=False)
    monkeypatch.delenv("AUTH_REQUIRED", raising=False)
    monkeypatch.setenv("HOST", host)
    assert from_env()["AUTH_REQUIRED"] is required


def test_a_viewer_gets_no_launch_section_only_a_line_saying_why(secure_app: Any) -> None:
    viewer, _ = signed_in(secure_app, "viewer")
    page = viewer.get("/").get_data(as_text=True)
    assert "Launch a task" not in page and 'id="launch-box"' not in page
    assert "signed in as a viewer" in page
    operator, _ = signed_in(secure_app, "operator")
    page = operator.get("/").get_data(as_text=True)
    assert "Launch a task" in page and "signed in as a viewer" not in page
