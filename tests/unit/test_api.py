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
    assert response.status_code == 409 and response.get_json()["error"] == "the task has already ended: it succeeded"


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
