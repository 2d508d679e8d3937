"""Acting on tasks (web/actions.py, web/bulk.py, web/audit.py, web/launches.py): retry, re-run
arguments, bulk cancel and retry with a pinned preview, the audit log, attach instead of launch,
and one task per Idempotency-Key."""
from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from celery_dashboard import index, settings
from tests.unit.conftest import make_app

PASSWORD = "correct horse battery"


def launch(client: Any, task: str = "fail", headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    response = client.post("/api/tasks", json={"task": task, "params": params, "duplicate": True}, headers=headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def end(dash: Any, task_id: str, state: str) -> None:
    dash.store.merge({task_id: {"id": task_id, "state": state}})


@pytest.fixture
def roles(redis_server: Any, results: Any, sent: list) -> Any:
    """The app with sign-in on, and a viewer, two operators and an admin with API tokens."""
    app = make_app(redis_server, results, AUTH_REQUIRED=True, MAX_ACTIVE_PER_USER=50, BULK_MAX=3)
    users = app.extensions["dashboard"].users
    app.tokens = {}
    for name, role in (("vera", "viewer"), ("olga", "operator"), ("otto", "operator"), ("ada", "admin")):
        users.add(name, PASSWORD, role)
        app.tokens[name] = {"Authorization": f"Bearer {users.new_token(name)}"}
    return app


# ---- retry ----------------------------------------------------------------------------------------

def test_retry_of_a_failed_launch_sends_the_same_params_again_and_links_back(client: Any, dash: Any,
                                                                             sent: list) -> None:
    first = launch(client, "fail", steps=2, message="boom")
    end(dash, first["id"], "FAILURE")
    response = client.post(f"/api/tasks/{first['id']}/retry")
    assert response.status_code == 202, response.get_json()
    again = response.get_json()
    assert again["id"] != first["id"] and again["retry_of"] == first["id"] and again["state"] == "PENDING"
    assert response.headers["Location"] == f"/api/tasks/{again['id']}"
    assert sent[-1]["kwargs"] == sent[0]["kwargs"] == {"steps": 2, "delay": 0.3, "message": "boom"}
    dash.pusher.flush()
    assert client.get(f"/api/tasks/{again['id']}").get_json()["retry_of"] == first["id"]


def test_a_retry_attaches_to_an_identical_task_queued_or_running_as_a_launch_does(client: Any, dash: Any,
                                                                                 sent: list) -> None:
    """A fresh user's review: retrying one failed task twice in a row ran two identical tasks, and
    8 retries at once 8, while a launch with the same parameters got 409 with `attach`."""
    failed = launch(client, "fail", steps=2, message="boom")
    end(dash, failed["id"], "FAILURE")
    first = client.post(f"/api/tasks/{failed['id']}/retry")
    assert first.status_code == 202
    again = client.post(f"/api/tasks/{failed['id']}/retry")
    assert again.status_code == 409 and again.get_json()["attach"]["id"] == first.get_json()["id"]
    assert again.get_json()["error"] == "An identical task is already queued"
    launched = client.post("/api/tasks", json={"task": "fail", "params": {"steps": 2, "message": "boom"}})
    assert launched.status_code == 409 and launched.get_json()["attach"]["id"] == first.get_json()["id"]
    assert len(sent) == 2  # the launch and one retry
    end(dash, first.get_json()["id"], "FAILURE")
    assert client.post(f"/api/tasks/{failed['id']}/retry").status_code == 202  # once it ended, again


def test_a_cancelled_task_can_be_retried_a_running_or_successful_one_cannot(client: Any, dash: Any) -> None:
    cancelled, running, done = (launch(client, "steps", steps=n) for n in (1, 2, 3))
    end(dash, cancelled["id"], "REVOKED")
    end(dash, done["id"], "SUCCESS")
    assert client.post(f"/api/tasks/{cancelled['id']}/retry").status_code == 202
    for task, state in ((running, "PENDING"), (done, "SUCCESS")):
        response = client.post(f"/api/tasks/{task['id']}/retry")
        assert response.status_code == 409
        assert response.get_json()["error"] == f"Only a failed or cancelled task can be retried; this one is {state}"


def test_a_task_sent_by_other_code_is_not_retried_and_the_answer_says_why(client: Any, dash: Any,
                                                                          sent: list) -> None:
    index.register(dash.store.client, "from-a-shell", "tasks.demo.fail")  # .delay() elsewhere: no params
    end(dash, "from-a-shell", "FAILURE")
    response = client.post("/api/tasks/from-a-shell/retry")
    assert response.status_code == 409 and ".delay()" in response.get_json()["error"]
    assert client.get("/api/tasks/from-a-shell/params").status_code == 409
    assert sent == []


def test_retry_is_owned_by_who_retries_and_needs_to_see_the_task(roles: Any) -> None:
    client, dash = roles.test_client(), roles.extensions["dashboard"]
    olgas = launch(client, "fail", headers=roles.tokens["olga"])
    end(dash, olgas["id"], "FAILURE")
    assert client.post(f"/api/tasks/{olgas['id']}/retry", headers=roles.tokens["otto"]).status_code == 404
    assert client.post(f"/api/tasks/{olgas['id']}/retry", headers=roles.tokens["vera"]).status_code == 403
    response = client.post(f"/api/tasks/{olgas['id']}/retry", headers=roles.tokens["ada"])
    assert response.status_code == 202 and response.get_json()["owner"] == "ada"


# ---- re-run with edited arguments -----------------------------------------------------------------

def test_params_for_a_rerun_leave_sensitive_values_out(client: Any, dash: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    task = launch(client, "fail", steps=4, message="the secret is 42")
    monkeypatch.setattr(settings, "MASKED_ARGUMENTS", ("message",))
    body = client.get(f"/api/tasks/{task['id']}/params").get_json()
    assert body == {"task": "fail", "params": {"steps": 4, "delay": 0.3}, "masked": ["message"]}
    assert "42" not in json.dumps(body)


def test_params_of_another_users_task_are_404(roles: Any) -> None:
    client = roles.test_client()
    task = launch(client, "steps", headers=roles.tokens["olga"])
    assert client.get(f"/api/tasks/{task['id']}/params", headers=roles.tokens["otto"]).status_code == 404
    assert client.get(f"/api/tasks/{task['id']}/params", headers=roles.tokens["ada"]).get_json()["task"] == "steps"


# ---- attach instead of launch ---------------------------------------------------------------------

def test_an_identical_running_launch_is_offered_to_attach_unless_duplicate(client: Any, dash: Any,
                                                                           sent: list) -> None:
    first = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 5}}).get_json()
    # The same parameters written otherwise (a default spelt out, another key order) are the same launch.
    response = client.post("/api/tasks", json={"task": "steps", "params": {"delay": 0.5, "steps": 5}})
    assert response.status_code == 409
    assert response.get_json()["error"] == "An identical task is already queued"  # no worker took it yet
    assert response.get_json()["attach"]["id"] == first["id"]
    dash.store.merge({first["id"]: {"id": first["id"], "state": "STARTED", "source": "event"}})
    response = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 5}})
    assert (response.status_code, response.get_json()["error"]) == (409, "An identical task is already running")
    assert len(sent) == 1
    assert client.post("/api/tasks", json={"task": "steps", "params": {"steps": 6}}).status_code == 202
    duplicate = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 5}, "duplicate": True})
    assert duplicate.status_code == 202 and len(sent) == 3
    end(dash, first["id"], "SUCCESS")  # the duplicate still runs: it is the one offered now
    assert client.post("/api/tasks", json={"task": "steps", "params": {"steps": 5}}).get_json()["attach"]["id"] \
        == duplicate.get_json()["id"]
    end(dash, duplicate.get_json()["id"], "FAILURE")
    assert client.post("/api/tasks", json={"task": "steps", "params": {"steps": 5}}).status_code == 202
    assert client.post("/api/tasks", json={"task": "steps", "duplicate": "yes"}).status_code == 422


def test_many_identical_launches_keep_a_bounded_list_and_attach_to_the_newest_running(client: Any, dash: Any,
                                                                                     sent: list) -> None:
    from web import launches

    ids = [launch(client, "steps", steps=5)["id"] for _ in range(launches.IDENTICAL_MAX + 30)]
    assert not dash.store.client.keys(launches.IDENTICAL_PREFIX + "*")  # noted here; written by the next tick
    dash.pusher.flush()
    keys = dash.store.client.keys(launches.IDENTICAL_PREFIX + "*")
    assert len(keys) == 1 and dash.store.client.llen(keys[0]) == launches.IDENTICAL_MAX  # bounded
    attach = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 5}})
    assert attach.status_code == 409 and attach.get_json()["attach"]["id"] == ids[-1]
    for task_id in ids[-launches.IDENTICAL_CHUNK - 5:]:  # the newest ended: past the first chunk read
        end(dash, task_id, "SUCCESS")
    attach = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 5}})
    assert attach.status_code == 409 and attach.get_json()["attach"]["id"] == ids[-launches.IDENTICAL_CHUNK - 6]


def test_an_identical_launch_attaches_before_the_next_tick_has_written_the_first(client: Any, dash: Any,
                                                                                  sent: list) -> None:
    from web import launches

    first = launch(client, "steps", steps=6)["id"]
    assert not dash.store.client.keys(launches.IDENTICAL_PREFIX + "*")
    attach = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 6}})
    assert attach.status_code == 409 and attach.get_json()["attach"]["id"] == first
    dash.pusher.flush()
    assert client.post("/api/tasks", json={"task": "steps", "params": {"steps": 6}}).get_json()["attach"]["id"] == first


def test_launches_noted_while_redis_is_away_are_written_by_a_later_tick(client: Any, dash: Any, sent: list,
                                                                       monkeypatch: Any) -> None:
    from web import launches

    ids = [launch(client, "steps", steps=7)["id"] for _ in range(3)]
    noted = client.application.extensions["launches_remembered"]
    real = dash.store.client.pipeline

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis is away")

    monkeypatch.setattr(dash.store.client, "pipeline", failing)
    with pytest.raises(redis.ConnectionError):
        noted.flush(dash.store.client, 60)
    monkeypatch.setattr(dash.store.client, "pipeline", real)
    dash.pusher.flush()
    [key] = dash.store.client.keys(launches.IDENTICAL_PREFIX + "*")
    assert [i.decode() for i in dash.store.client.lrange(key, 0, -1)] == ids[::-1]  # newest first


def claim_keys(dash: Any) -> list[bytes]:
    from web import launches

    return dash.store.client.keys(launches.CLAIM_PREFIX + "*")


def test_a_launch_that_could_not_be_sent_releases_its_claim(client: Any, dash: Any, sent: list,
                                                            monkeypatch: Any) -> None:
    from celery.app.task import Task
    from kombu.exceptions import OperationalError

    working = Task.apply_async

    def broker_away(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to the broker")

    monkeypatch.setattr(Task, "apply_async", broker_away)
    body = {"task": "steps", "params": {"steps": 8}}
    assert client.post("/api/tasks", json=body).status_code == 503
    assert claim_keys(dash) == []  # an identical launch is not held up by the one that failed
    monkeypatch.setattr(Task, "apply_async", working)
    first = client.post("/api/tasks", json=body)
    assert first.status_code == 202 and len(sent) == 1
    [key] = claim_keys(dash)
    assert dash.store.client.get(key).decode() == "sent:" + first.get_json()["id"]
    assert 0 < dash.store.client.ttl(key) <= client.application.config["ATTACH_SECONDS"]


def test_a_launch_attaches_to_an_identical_one_another_web_process_is_sending(client: Any, dash: Any,
                                                                              sent: list, monkeypatch: Any) -> None:
    """The claim decides between launches that both found no identical task: the second one waits
    for the first one's task and attaches to it; while the first one's send has not come, 409 with no
    task to attach to."""
    from celery_dashboard import index
    from web import api, launches
    from web.users import LOCAL_ADMIN  # who launches when sign-in is off

    monkeypatch.setattr(launches, "identical", lambda *args: None)  # both read before either was written
    monkeypatch.setattr(launches, "WAIT_FOR_FIRST", 0.2)
    params = {"delay": 0.5, "steps": 9}
    with client.application.test_request_context():
        taken = launches.claim("steps", params, api.attach_scope(LOCAL_ADMIN))
        assert isinstance(taken, launches.Claim)
        waiting = client.post("/api/tasks", json={"task": "steps", "params": params})
        assert waiting.status_code == 409 and "attach" not in waiting.get_json()
        assert waiting.get_json()["error"].endswith("is still being sent; try again in a moment")
        index.register(index.client(), taken.task_id, "tasks.demo.steps", owner=LOCAL_ADMIN.name)  # published
        taken.sent()
    attach = client.post("/api/tasks", json={"task": "steps", "params": params})
    assert attach.status_code == 409 and attach.get_json()["attach"]["id"] == taken.task_id
    assert sent == []  # the first launch's send is the only one
    end(dash, taken.task_id, "REVOKED")  # the claim ends with its task
    launched = client.post("/api/tasks", json={"task": "steps", "params": params})
    assert launched.status_code == 202 and len(sent) == 1
    assert client.post("/api/tasks", json={"task": "steps", "params": params}).get_json()["attach"]["id"] \
        == launched.get_json()["id"]


def test_attach_offers_only_a_task_the_user_may_see(roles: Any) -> None:
    client = roles.test_client()
    olgas = client.post("/api/tasks", json={"task": "long"}, headers=roles.tokens["olga"]).get_json()
    assert client.post("/api/tasks", json={"task": "long"}, headers=roles.tokens["otto"]).status_code == 202
    admin = client.post("/api/tasks", json={"task": "long"}, headers=roles.tokens["ada"])
    assert admin.status_code == 409 and admin.get_json()["attach"]["owner"] in ("olga", "otto")
    again = client.post("/api/tasks", json={"task": "long"}, headers=roles.tokens["olga"])
    assert again.status_code == 409 and again.get_json()["attach"]["id"] == olgas["id"]


# ---- one task per click ---------------------------------------------------------------------------

def test_the_same_idempotency_key_launches_once_and_answers_the_same(client: Any, sent: list) -> None:
    body = {"task": "steps", "params": {"steps": 7}}
    first = client.post("/api/tasks", json=body, headers={"Idempotency-Key": "click-1"})
    second = client.post("/api/tasks", json=body, headers={"Idempotency-Key": "click-1"})
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] == second.get_json()["id"] and len(sent) == 1
    assert second.headers["Idempotent-Replayed"] == "true" and second.headers["Location"] == first.headers["Location"]
    other = client.post("/api/tasks", json={**body, "duplicate": True}, headers={"Idempotency-Key": "click-1"})
    assert other.status_code == 422 and "different request" in other.get_json()["error"]
    assert client.post("/api/tasks", json=body, headers={"Idempotency-Key": "bad key\u00e9"}).status_code == 422


def test_a_failed_request_frees_its_idempotency_key(client: Any, sent: list) -> None:
    bad = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 0}}, headers={"Idempotency-Key": "k"})
    assert bad.status_code == 422
    good = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 1}}, headers={"Idempotency-Key": "k"})
    assert good.status_code == 202 and len(sent) == 1


def test_idempotency_keys_are_per_user(roles: Any) -> None:
    client = roles.test_client()
    body = {"task": "steps", "duplicate": True}
    olgas = client.post("/api/tasks", json=body, headers={**roles.tokens["olga"], "Idempotency-Key": "same"})
    ottos = client.post("/api/tasks", json=body, headers={**roles.tokens["otto"], "Idempotency-Key": "same"})
    assert olgas.get_json()["id"] != ottos.get_json()["id"] and ottos.get_json()["owner"] == "otto"


def test_a_double_retry_with_one_key_retries_once(client: Any, dash: Any, sent: list) -> None:
    task = launch(client, "fail")
    end(dash, task["id"], "FAILURE")
    answers = [client.post(f"/api/tasks/{task['id']}/retry", headers={"Idempotency-Key": "r1"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202] and len(sent) == 2
    assert answers[0].get_json()["id"] == answers[1].get_json()["id"]


# ---- the audit log ------------------------------------------------------------------------------

def test_cancels_and_retries_are_audited_newest_first_for_admins_only(roles: Any) -> None:
    client, dash = roles.test_client(), roles.extensions["dashboard"]
    task = launch(client, "long", headers=roles.tokens["olga"])
    assert client.post(f"/api/tasks/{task['id']}/cancel", headers=roles.tokens["olga"]).status_code == 202
    end(dash, task["id"], "REVOKED")
    retried = client.post(f"/api/tasks/{task['id']}/retry", headers=roles.tokens["olga"]).get_json()
    entries = client.get("/api/audit", headers=roles.tokens["ada"]).get_json()["entries"]
    assert [(e["who"], e["action"], e["task"]) for e in entries] == [("olga", "retry", task["id"]),
                                                                     ("olga", "cancel", task["id"])]
    assert entries[0]["new_task"] == retried["id"] and entries[0]["when"] >= entries[1]["when"]
    for name in ("olga", "vera"):
        response = client.get("/api/audit", headers=roles.tokens[name])
        assert response.status_code == 403 and response.get_json()["error"] == "The audit log is for admins"


def test_the_audit_log_is_capped_and_paged(redis_server: Any, results: Any, sent: list) -> None:
    app = make_app(redis_server, results, AUDIT_LIMIT=5)
    client, dash = app.test_client(), app.extensions["dashboard"]
    tasks = [launch(client, "long") for _ in range(7)]
    for task in tasks:
        client.post(f"/api/tasks/{task['id']}/cancel")
    page = client.get("/api/audit?limit=2&offset=1").get_json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [e["task"] for e in page["entries"]] == [tasks[5]["id"], tasks[4]["id"]]
    assert client.get("/api/audit?limit=0").status_code == 422
    assert dash.store.client.llen("dashboard:audit") == 5


# ---- roles --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/tasks/{id}/retry", None),
    ("POST", "/api/bulk/preview", {"action": "cancel", "filter": {}}),
    ("POST", "/api/bulk", {"action": "cancel", "filter": {}, "token": "x"}),
    ("GET", "/api/audit", None),
])
def test_a_viewer_may_not_act(roles: Any, method: str, path: str, body: Any) -> None:
    client, dash = roles.test_client(), roles.extensions["dashboard"]
    task = launch(client, "fail", headers=roles.tokens["ada"])
    end(dash, task["id"], "FAILURE")
    response = client.open(path.format(id=task["id"]), method=method, json=body, headers=roles.tokens["vera"])
    assert response.status_code == 403 and "operator or admin" in response.get_json()["error"] or path == "/api/audit"
    assert response.status_code == 403


# ---- bulk actions ---------------------------------------------------------------------------------

def preview(client: Any, action: str, flt: dict[str, str], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.post("/api/bulk/preview", json={"action": action, "filter": flt}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def confirm(client: Any, action: str, flt: dict[str, str], token: str, headers: dict[str, str] | None = None) -> Any:
    return client.post("/api/bulk", json={"action": action, "filter": flt, "token": token}, headers=headers)


def revoked(sent: list) -> set[str]:
    return {call["revoke"] for call in sent if "revoke" in call}


def test_bulk_cancel_acts_on_exactly_what_the_preview_counted(client: Any, dash: Any, sent: list) -> None:
    longs = [launch(client, "long") for _ in range(3)]
    launch(client, "steps")
    end(dash, longs[0]["id"], "SUCCESS")
    shown = preview(client, "cancel", {"name": "long"})
    assert (shown["count"], shown["total"], shown["capped"]) == (2, 2, False)
    later = launch(client, "long")  # a live update after the preview does not change what is cancelled
    answer = confirm(client, "cancel", {"name": "long"}, shown["token"])
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"action": "cancel", "count": 2, "done": 2, "skipped": 0, "reasons": []}
    assert revoked(sent) == {longs[1]["id"], longs[2]["id"]} and later["id"] not in revoked(sent)
    again = confirm(client, "cancel", {"name": "long"}, shown["token"])  # a token is used once
    assert again.status_code == 409 and "preview the action again" in again.get_json()["error"]
    entry = client.get("/api/audit").get_json()["entries"][0]
    assert entry["action"] == "bulk-cancel" and entry["filter"] == {"name": "long"}
    assert (entry["who"], entry["count"], entry["done"], entry["skipped"]) == ("local", 2, 2, 0)


def test_a_task_that_ended_after_the_preview_is_skipped_and_counted(client: Any, dash: Any) -> None:
    first, second = launch(client, "long"), launch(client, "long")
    shown = preview(client, "cancel", {})
    end(dash, first["id"], "SUCCESS")
    body = confirm(client, "cancel", {}, shown["token"]).get_json()
    assert (body["count"], body["done"], body["skipped"]) == (2, 1, 1)
    assert body["reasons"] == [{"reason": "The task has already ended: it succeeded", "count": 1}]
    assert client.get(f"/api/tasks/{second['id']}").status_code == 200


def test_bulk_retry_takes_failed_and_cancelled_dashboard_launches_only(client: Any, dash: Any, sent: list) -> None:
    failed, cancelled, succeeded, running = (launch(client, "fail", steps=n) for n in (1, 2, 3, 4))
    end(dash, failed["id"], "FAILURE")
    end(dash, cancelled["id"], "REVOKED")
    end(dash, succeeded["id"], "SUCCESS")
    index.register(dash.store.client, "from-a-shell", "tasks.demo.fail")
    end(dash, "from-a-shell", "FAILURE")
    shown = preview(client, "retry", {})
    assert shown["count"] == 2
    assert preview(client, "retry", {"state": "FAILURE"})["count"] == 1
    assert preview(client, "retry", {"state": "SUCCESS"})["count"] == 0
    body = confirm(client, "retry", {}, shown["token"]).get_json()
    assert (body["done"], body["skipped"]) == (2, 0)
    dash.pusher.flush()
    again = client.get("/api/tasks?limit=2").get_json()["tasks"]
    assert {t["retry_of"] for t in again} == {failed["id"], cancelled["id"]}
    assert [call["kwargs"]["steps"] for call in sent[-2:]] in ([2, 1], [1, 2])


def test_bulk_is_capped_and_sees_only_the_users_own_tasks(roles: Any, sent: list) -> None:
    client = roles.test_client()
    olgas = [launch(client, "long", headers=roles.tokens["olga"]) for _ in range(5)]
    launch(client, "long", headers=roles.tokens["otto"])
    shown = preview(client, "cancel", {}, roles.tokens["olga"])
    assert (shown["count"], shown["total"], shown["capped"], shown["cap"]) == (3, 5, True, 3)
    assert preview(client, "cancel", {}, roles.tokens["ada"])["total"] == 6
    stolen = confirm(client, "cancel", {}, shown["token"], roles.tokens["otto"])
    assert stolen.status_code == 409
    shown = preview(client, "cancel", {}, roles.tokens["olga"])
    changed = confirm(client, "cancel", {"name": "long"}, shown["token"], roles.tokens["olga"])
    assert changed.status_code == 409 and "not the one previewed" in changed.get_json()["error"]
    shown = preview(client, "cancel", {}, roles.tokens["olga"])
    assert confirm(client, "cancel", {}, shown["token"], roles.tokens["olga"]).get_json()["done"] == 3
    assert revoked(sent) == {t["id"] for t in olgas[2:]}  # the newest BULK_MAX of olga's own


@pytest.mark.parametrize(("body", "field"), [
    ({"action": "delete", "filter": {}}, "action"),
    ({"action": "cancel", "filter": {"colour": "red"}}, "colour"),
    ({"action": "cancel", "filter": {"since": "yesterday"}}, "since"),
    ({"action": "cancel", "filter": []}, "filter"),
    ({"action": "cancel", "filter": {}, "extra": 1}, "extra"),
])
def test_bad_bulk_requests_say_which_field(client: Any, body: dict, field: str) -> None:
    response = client.post("/api/bulk/preview", json=body)
    assert response.status_code == 422 and field in [f["field"] for f in response.get_json()["fields"]]


def test_bulk_confirmations_are_rate_limited_like_launches(redis_server: Any, results: Any, sent: list) -> None:
    app = make_app(redis_server, results, AUTH_REQUIRED=True, LAUNCH_LIMIT="1/minute")
    users = app.extensions["dashboard"].users
    users.add("olga", PASSWORD, "operator")
    headers = {"Authorization": f"Bearer {users.new_token('olga')}"}
    client = app.test_client()
    statuses = [confirm(client, "cancel", {}, preview(client, "cancel", {}, headers)["token"], headers).status_code
                for _ in range(2)]
    assert statuses == [200, 429]


def test_cookie_authenticated_actions_need_the_csrf_token(roles: Any) -> None:
    from tests.unit.test_auth import signed_in  # the sign-in form, as a browser fills it

    roles.extensions["dashboard"].users.add("operator", PASSWORD, "operator")
    client, token = signed_in(roles, "operator")
    body = {"action": "cancel", "filter": {}}
    assert client.post("/api/bulk/preview", json=body).status_code == 400
    shown = client.post("/api/bulk/preview", json=body, headers={"X-CSRFToken": token}).get_json()
    assert client.post("/api/bulk", json={**body, "token": shown["token"]}).status_code == 400
    confirmed = client.post("/api/bulk", json={**body, "token": shown["token"]}, headers={"X-CSRFToken": token})
    assert confirmed.status_code == 200
    assert client.post("/api/tasks/any/retry").status_code == 400


def test_answers_match_the_openapi_description(client: Any, dash: Any) -> None:
    import jsonschema

    from web.api import OPENAPI

    spec = json.loads(OPENAPI.read_text())

    def check(response: Any, path: str, method: str) -> None:
        described = spec["paths"][path][method]["responses"][str(response.status_code)]
        if "$ref" in described:
            described = spec["components"]["responses"][described["$ref"].rsplit("/", 1)[1]]
        schema = {**described["content"]["application/json"]["schema"], "components": spec["components"]}
        jsonschema.validate(response.get_json(), schema, cls=jsonschema.Draft202012Validator)

    task = launch(client, "fail")
    check(client.post("/api/tasks", json={"task": "fail"}), "/api/tasks", "post")  # 409 with attach
    check(client.post(f"/api/tasks/{task['id']}/retry"), "/api/tasks/{task_id}/retry", "post")  # 409
    end(dash, task["id"], "FAILURE")
    check(client.post(f"/api/tasks/{task['id']}/retry"), "/api/tasks/{task_id}/retry", "post")  # 202
    check(client.get(f"/api/tasks/{task['id']}/params"), "/api/tasks/{task_id}/params", "get")
    shown = client.post("/api/bulk/preview", json={"action": "retry", "filter": {"state": "FAILURE"}})
    check(shown, "/api/bulk/preview", "post")
    done = client.post("/api/bulk", json={"action": "retry", "filter": {"state": "FAILURE"},
                                          "token": shown.get_json()["token"]})
    check(done, "/api/bulk", "post")
    check(client.get("/api/audit"), "/api/audit", "get")
    check(client.get("/api/audit?limit=x"), "/api/audit", "get")  # 422


def test_a_second_click_while_the_first_is_in_flight_launches_nothing(client: Any, dash: Any, sent: list,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from web import launches

    monkeypatch.setattr(launches, "WAIT_FOR_FIRST", 0.2)
    body = {"task": "steps", "params": {"steps": 9}}
    # The first request with this key is still being answered (another web process, say).
    pending = json.dumps({"state": launches.PENDING, "request": launches.hashlib.sha256(
        json.dumps(body).encode()).hexdigest()})
    dash.store.client.set(launches.idempotency_key("local", "/api/tasks", "in-flight"), pending)
    response = client.post("/api/tasks", data=json.dumps(body), content_type="application/json",
                           headers={"Idempotency-Key": "in-flight"})
    assert response.status_code == 409 and "still being answered" in response.get_json()["error"]
    assert sent == []
