from __future__ import annotations

from typing import Any

import pytest


def test_catalog_lists_tasks_with_schemas(client: Any) -> None:
    body = client.get("/api/catalog").get_json()
    names = {t["name"] for t in body["tasks"]}
    assert {"steps", "primes", "fail", "flaky", "long", "fanout"} <= names
    steps = next(t for t in body["tasks"] if t["name"] == "steps")
    assert steps["title"] == "Stepped job" and steps["params"]["properties"]["steps"]["default"] == 10


def test_launch_answers_202_with_the_task_and_its_location(client: Any, sent: list) -> None:
    response = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 3}})
    assert response.status_code == 202
    task = response.get_json()
    assert task["state"] == "PENDING" and task["name"] == "tasks.demo.steps" and task["created"]
    assert response.headers["Location"] == f"/api/tasks/{task['id']}"
    assert sent == [{"task": "tasks.demo.steps", "kwargs": {"steps": 3, "delay": 0.5}, "task_id": task["id"],
                     "headers": {"owner": "local"}}]
    assert client.get(response.headers["Location"]).get_json()["id"] == task["id"]


def test_launch_is_pushed_to_dashboards(client: Any, dash: Any) -> None:
    task = client.post("/api/tasks", json={"task": "primes"}).get_json()
    assert [t["id"] for t in dash.pusher.flush()] == [task["id"]]


@pytest.mark.parametrize("body,status,field", [
    ({"task": "nope"}, 404, "task"),
    ({"params": {}}, 422, "task"),
    ({"task": 7}, 422, "task"),
    ({"task": "steps", "params": {"steps": 0}}, 422, "params.steps"),
    ({"task": "steps", "params": {"steps": "ten"}}, 422, "params.steps"),
    ({"task": "steps", "params": {"delay": 1e9}}, 422, "params.delay"),
    ({"task": "steps", "params": {"evil": 1}}, 422, "params.evil"),
    ({"task": "steps", "params": "x"}, 422, "params"),
    ({"task": "steps", "extra": 1}, 422, "extra"),
])
def test_bad_launches_say_which_field(client: Any, sent: list, body: dict, status: int, field: str) -> None:
    response = client.post("/api/tasks", json=body)
    assert response.status_code == status
    payload = response.get_json()
    assert payload["error"]
    assert field in [f["field"] for f in payload["fields"]]
    assert sent == []


@pytest.mark.parametrize("data,content_type", [
    ("{not json", "application/json"),
    ("[1, 2]", "application/json"),
    ("task=steps", "application/x-www-form-urlencoded"),
    ("", "application/json"),
])
def test_a_body_that_is_not_a_json_object_is_400(client: Any, data: str, content_type: str) -> None:
    response = client.post("/api/tasks", data=data, content_type=content_type)
    assert response.status_code == 400
    assert "JSON" in response.get_json()["error"]


def test_an_oversized_body_is_413(client: Any, sent: list) -> None:
    big = '{"task": "steps", "params": {"pad": "' + "x" * 70_000 + '"}}'
    response = client.post("/api/tasks", data=big, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]
    assert sent == []


def test_unknown_task_id_is_404(client: Any) -> None:
    response = client.get("/api/tasks/does-not-exist")
    assert response.status_code == 404 and response.get_json()["error"]
    assert client.post("/api/tasks/does-not-exist/cancel").status_code == 404


def test_a_task_only_the_result_backend_knows_is_found(client: Any, results: Any) -> None:
    results.metas["old"] = {"status": "SUCCESS", "result": 5, "name": "tasks.demo.steps"}
    task = client.get("/api/tasks/old").get_json()
    assert task["state"] == "SUCCESS" and task["result"] == 5


def test_list_is_newest_first_and_filters_by_state(client: Any, dash: Any) -> None:
    ids = [client.post("/api/tasks", json={"task": "steps", "duplicate": True}).get_json()["id"] for _ in range(3)]
    dash.store.merge({ids[0]: {"id": ids[0], "state": "SUCCESS"}})
    listed = client.get("/api/tasks").get_json()["tasks"]
    assert [t["id"] for t in listed] == ids[::-1]
    assert [t["id"] for t in client.get("/api/tasks?state=SUCCESS").get_json()["tasks"]] == [ids[0]]
    assert len(client.get("/api/tasks?limit=2").get_json()["tasks"]) == 2
    assert [t["id"] for t in client.get("/api/tasks?limit=2&offset=1").get_json()["tasks"]] == ids[1::-1]


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=abc", "limit"),
                                         ("limit=100000", "limit"), ("state=not%20a%20state!", "state"),
                                         ("offset=-1", "offset")])
def test_bad_list_queries_are_422(client: Any, query: str, field: str) -> None:
    response = client.get(f"/api/tasks?{query}")
    assert response.status_code == 422
    assert response.get_json()["fields"][0]["field"] == field


def test_cancel_revokes_and_terminates(client: Any, sent: list) -> None:
    task = client.post("/api/tasks", json={"task": "long"}).get_json()
    response = client.post(f"/api/tasks/{task['id']}/cancel")
    assert response.status_code == 202
    assert sent[-1] == {"revoke": task["id"], "terminate": True, "signal": "SIGTERM"}


def test_cancel_of_a_finished_task_is_409(client: Any, dash: Any) -> None:
    task = client.post("/api/tasks", json={"task": "steps"}).get_json()
    dash.store.merge({task["id"]: {"id": task["id"], "state": "SUCCESS"}})
    response = client.post(f"/api/tasks/{task['id']}/cancel")
    assert response.status_code == 409 and response.get_json()["error"] == "The task has already ended: it succeeded"


def test_unknown_route_and_method_are_json(client: Any) -> None:
    assert client.get("/api/nothing").get_json()["error"]
    response = client.delete("/api/tasks")
    assert response.status_code == 405 and response.get_json()["error"]


def test_health_is_200_when_redis_answers(client: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_redis_down_is_503_never_500(client: Any, redis_server: Any) -> None:
    redis_server.connected = False
    health = client.get("/healthz")
    assert health.status_code == 503 and "redis" in health.get_json()
    launch = client.post("/api/tasks", json={"task": "steps"})
    assert launch.status_code == 503 and launch.get_json()["error"]
    assert client.get("/api/tasks").status_code == 503


def test_the_dashboard_page_loads_its_script_and_styles(client: Any) -> None:
    html = client.get("/").get_data(as_text=True)
    assert "/static/js/main.js" in html and "/static/css/base.css" in html and "/static/vendor/socket.io.min.js" in html
    assert "<script>" not in html  # no inline script


def test_the_list_answers_a_page_with_total_counts_and_its_paging(client: Any, dash: Any) -> None:
    from web import records

    dash.store.merge({f"t{i}": {"id": f"t{i}", "state": "FAILURE" if i % 2 else "SUCCESS", "name": "tasks.demo.fail",
                                "queue": "celery", "created": records.iso(1000.0 + i)} for i in range(7)})
    body = client.get("/api/tasks?state=FAILURE,SUCCESS&name=fail&queue=celery&limit=2&offset=2&sort=oldest").get_json()
    assert [t["id"] for t in body["tasks"]] == ["t2", "t3"]
    assert body["total"] == 7 and body["counts"] == {"FAILURE": 3, "SUCCESS": 4}
    assert (body["truncated"], body["limit"], body["offset"]) == (False, 2, 2)
    assert client.get("/api/tasks?q=t6&since=1970-01-01T00:16:45Z").get_json()["total"] == 1


@pytest.mark.parametrize("query,field", [("sort=up", "sort"), ("since=tomorrow", "since"),
                                         ("since=20&until=10", "until"), ("name=" + "x" * 300, "name")])
def test_bad_filters_are_422_naming_the_field(client: Any, query: str, field: str) -> None:
    response = client.get(f"/api/tasks?{query}")
    assert response.status_code == 422 and response.get_json()["fields"][0]["field"] == field


def test_a_user_finds_only_their_own_tasks_whatever_the_owner_asked(redis_server: Any, results: Any,
                                                                   sent: list) -> None:
    from tests.unit.conftest import make_app

    app = make_app(redis_server, results, AUTH_REQUIRED=True)
    dash = app.extensions["dashboard"]
    token = {}
    for name, role in (("alice", "operator"), ("bob", "operator"), ("root", "admin")):
        dash.users.add(name, "correct horse battery", role)
        token[name] = {"Authorization": f"Bearer {dash.users.new_token(name)}"}
    dash.store.merge({"a1": {"id": "a1", "state": "SUCCESS", "owner": "alice"},
                      "b1": {"id": "b1", "state": "SUCCESS", "owner": "bob"}, "x1": {"id": "x1", "state": "SUCCESS"}})
    client = app.test_client()
    assert [t["id"] for t in client.get("/api/tasks", headers=token["alice"]).get_json()["tasks"]] == ["a1"]
    assert client.get("/api/tasks?owner=bob", headers=token["alice"]).get_json()["total"] == 0
    assert client.get("/api/tasks", headers=token["root"]).get_json()["total"] == 3
    assert [t["id"] for t in client.get("/api/tasks?owner=bob", headers=token["root"]).get_json()["tasks"]] == ["b1"]


def test_a_task_detail_lists_its_children_with_their_states(client: Any, dash: Any) -> None:
    from celery_dashboard import index

    parent = client.post("/api/tasks", json={"task": "fanout"}).get_json()
    for i in range(3):
        index.register(dash.store.client, f"c{i}", "tasks.demo.steps", parent=parent["id"], now=2e9 + i)
    dash.store.merge({"c1": {"id": "c1", "state": "FAILURE"}})
    body = client.get(f"/api/tasks/{parent['id']}").get_json()
    assert body["children"] == [{"id": "c0", "name": "tasks.demo.steps", "state": "PENDING"},
                                {"id": "c1", "name": "tasks.demo.steps", "state": "FAILURE"},
                                {"id": "c2", "name": "tasks.demo.steps", "state": "PENDING"}]
    assert body["children_total"] == 3
    assert body["args"] == "()" and body["kwargs"] == "{'children': 4, 'steps': 5, 'delay': 0.3}"
    assert body["attempts"] == [] and body["retry_of"] is None and dash.store.params(parent["id"]) is not None


# ---- text that is not Unicode (a lone surrogate) in a JSON body -------------------------------------

# A JSON escape can write half of a UTF-16 surrogate pair alone; Redis, hashes and logs cannot
# encode it. Each JSON body of the API, at any depth, in a value or a key: 422 naming the field.
# `@` in a body below stands for the JSON string "\ud800".
LONE = '"\\ud800"'


@pytest.mark.parametrize("url,data,field", [
    ("/api/tasks", '{"task": "fail", "params": {"message": @}}', "params.message"),
    ("/api/tasks", '{"task": @}', "task"),
    ("/api/tasks", '{"task": "steps", "params": {"steps": 2, "tags": [1, {"x": @}]}}', "params.tags[1].x"),
    ("/api/tasks", '{"task": "steps", "params": {@: 1}}', "params"),
    ("/api/tasks", '{@: 1}', "body"),
    ("/api/tasks", '{"task": "fail", "params": {"message": "\\udc80 low half"}}', "params.message"),
    ("/api/bulk/preview", '{"action": "cancel", "filter": {"name": @}}', "filter.name"),
    ("/api/bulk/preview", '{"action": "retry", "filter": {"state": ["FAILURE", @]}}', "filter.state[1]"),
    ("/api/bulk", '{"action": "cancel", "filter": {}, "token": @}', "token"),
])
def test_text_that_is_not_unicode_in_a_json_body_is_422_naming_the_field(client: Any, sent: list, url: str,
                                                                        data: str, field: str) -> None:
    data = data.replace("@", LONE)
    for headers in ({}, {"Idempotency-Key": "surrogate-1"}):
        response = client.post(url, data=data, content_type="application/json", headers=headers)
        assert response.status_code == 422, response.get_data(as_text=True)
        body = response.get_json()
        assert body["fields"][0]["field"] == field and "Unicode" in body["error"]
    assert sent == []
    # The key was not spent on the refusal: the same key with a good body launches.
    good = client.post("/api/tasks", json={"task": "fail", "params": {"message": "\U0001f600 a whole pair"}},
                       headers={"Idempotency-Key": "surrogate-1"})
    assert good.status_code == 202 and len(sent) == 1


def test_a_body_nested_deeper_than_the_json_reader_goes_is_400(client: Any, sent: list) -> None:
    response = client.post("/api/tasks", data="[" * 60_000, content_type="application/json")
    assert response.status_code == 400 and "JSON" in response.get_json()["error"]


@pytest.mark.parametrize("url", ["/api/tasks?name=%ED%A0%80&q=%ED%A0%80&state=SUCCESS", "/api/tasks/%ED%A0%80",
                                 "/api/tasks/%ED%A0%80/result", "/api/tasks/%ED%A0%80/params",
                                 "/api/audit?limit=%ED%A0%80"])
def test_undecodable_bytes_in_a_url_are_never_a_500(client: Any, url: str) -> None:
    for method in ("GET", "POST"):
        base = url.split("?")[0].removesuffix("/result").removesuffix("/params")
        target = url if method == "GET" else base + "/cancel"
        response = client.open(target, method=method, headers={"Idempotency-Key": "k"})
        assert response.status_code < 500 and response.get_json() is not None, (target, response.status_code)


# ---- the state filter: a state Celery, the dashboard or a task uses -----------------------------------

def test_a_state_nobody_uses_is_422_with_a_hint_for_a_slip_of_case(client: Any, dash: Any) -> None:
    done = client.post("/api/tasks", json={"task": "steps", "duplicate": True}).get_json()["id"]
    dash.store.merge({done: {"id": done, "state": "SUCCESS"}})
    assert client.get("/api/tasks?state=SUCCESS").get_json()["total"] == 1
    for query, hint in (("state=success", "did you mean SUCCESS?"), ("state=Progress", "did you mean PROGRESS?"),
                        ("state=SUCESS", "did you mean SUCCESS?"), ("state=FOO", None),
                        ("state=FAILURE,success", "did you mean SUCCESS?")):
        response = client.get(f"/api/tasks?{query}")
        body = response.get_json()
        assert response.status_code == 422 and body["fields"][0]["field"] == "state", query
        if hint:
            assert body["error"].endswith(hint) and body["fields"][0]["message"].endswith(hint), body
        else:
            assert "did you mean" not in body["error"]


def test_every_state_celery_or_the_dashboard_knows_is_accepted_with_no_task_in_it(client: Any) -> None:
    for state in ("PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED",
                  "REJECTED", "IGNORED", "LOST", "UNKNOWN"):
        response = client.get(f"/api/tasks?state={state}")
        assert (response.status_code, response.get_json()["total"]) == (200, 0), state


def test_a_custom_state_a_task_holds_is_accepted_even_when_the_other_filters_match_nothing(client: Any,
                                                                                         dash: Any) -> None:
    task = client.post("/api/tasks", json={"task": "steps", "duplicate": True}).get_json()["id"]
    assert client.get("/api/tasks?state=DOWNLOADING").status_code == 422
    dash.store.merge({task: {"id": task, "state": "DOWNLOADING", "source": "event"}})
    assert [t["id"] for t in client.get("/api/tasks?state=DOWNLOADING").get_json()["tasks"]] == [task]
    found = client.get("/api/tasks?state=DOWNLOADING&name=primes")
    assert (found.status_code, found.get_json()["total"]) == (200, 0)


def test_a_custom_state_only_another_users_task_holds_is_422(redis_server: Any, results: Any, sent: list) -> None:
    from tests.unit.conftest import make_app

    app = make_app(redis_server, results, AUTH_REQUIRED=True)
    dash = app.extensions["dashboard"]
    for name in ("alice", "bob"):
        dash.users.add(name, "correct horse battery", "operator")
    alice = {"Authorization": f"Bearer {dash.users.new_token('alice')}"}
    bob = {"Authorization": f"Bearer {dash.users.new_token('bob')}"}
    dash.store.merge({"b1": {"id": "b1", "state": "DOWNLOADING", "owner": "bob"}})
    client = app.test_client()
    assert client.get("/api/tasks?state=DOWNLOADING", headers=bob).get_json()["total"] == 1
    assert client.get("/api/tasks?state=DOWNLOADING", headers=alice).status_code == 422


def test_a_bulk_preview_of_a_state_nobody_uses_is_422(client: Any) -> None:
    response = client.post("/api/bulk/preview", json={"action": "cancel", "filter": {"state": "success"}})
    assert response.status_code == 422 and response.get_json()["fields"][0]["field"] == "state"
    known = client.post("/api/bulk/preview", json={"action": "cancel", "filter": {"state": "SUCCESS"}})
    assert known.status_code == 200


def test_each_bad_launch_s_message_says_what_is_wrong_with_it(client: Any, sent: list) -> None:
    """A fresh user's review: a task given as a number was told "task is required", JSON sent as
    text/plain "must be a JSON object", and a list where text goes "Enter at most 200 characters"."""
    answer = client.post("/api/tasks", json={"task": 5}).get_json()
    assert answer["error"] == "Task must be a catalog name, as text"
    plain = client.post("/api/tasks", data='{"task": "steps"}', content_type="text/plain").get_json()
    assert "Content-Type: application/json" in plain["error"] and "text/plain" in plain["error"]
    listed = client.post("/api/tasks", json={"task": "fail", "params": {"message": [[1]]}}).get_json()
    assert listed["fields"][0]["message"] == "Enter text of at most 200 characters"
    assert sent == []
