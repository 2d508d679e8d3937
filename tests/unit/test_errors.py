"""The error sentences a person reads: rate limits and parameters named by their labels."""
from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import make_app
from web.errors import rate_limit_sentence


@pytest.fixture
def limited(redis_server: Any, results: Any, sent: list) -> Any:
    """Sign-in on (so limits apply), three launches a minute, one account with a token."""
    app = make_app(redis_server, results, AUTH_REQUIRED=True, LAUNCH_LIMIT="3/minute",
                   LAUNCH_LIMIT_PER_ADDRESS="100/minute", MAX_ACTIVE_PER_USER=100)
    users = app.extensions["dashboard"].users
    users.add("op", "correct horse battery", "operator")
    app.token = users.new_token("op")
    return app


def test_the_rate_limit_is_a_sentence_with_the_wait_in_retry_after(limited: Any) -> None:
    client = limited.test_client()
    headers = {"Authorization": f"Bearer {limited.token}"}
    # Different parameters each time: an identical task still queued would be offered to attach to.
    statuses = [client.post("/api/tasks", json={"task": "steps", "params": {"steps": n}}, headers=headers).status_code
                for n in (1, 2, 3)]
    response = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 4}}, headers=headers)
    assert statuses == [202] * 3 and response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert 0 < wait <= 60
    message = response.get_json()["error"]
    assert message.startswith("You can launch at most 3 tasks a minute; try again in ")
    assert message.endswith(" s") and abs(int(message.split()[-2]) - wait) <= 1


@pytest.mark.parametrize("endpoint,amount,multiples,granularity,expected", [
    ("api.launch", 30, 1, "minute", "You can launch at most 30 tasks a minute; try again in 12 s"),
    ("api.launch", 1, 1, "second", "You can launch at most 1 task a second; try again in 12 s"),
    ("auth.login", 10, 5, "minute", "You can try to sign in at most 10 times every 5 minutes; try again in 12 s"),
    ("api.other", 2, 1, "hour", "You can send at most 2 requests an hour; try again in 12 s"),
    ("auth.login:failures-new", 100, 1, "day",
     "You can fail to sign in as one user from new browsers at most 100 times a day; try again in 12 s"),
])
def test_rate_limit_sentences(endpoint: str, amount: int, multiples: int, granularity: str, expected: str) -> None:
    assert rate_limit_sentence(endpoint, amount, multiples, granularity, 12) == expected


def test_a_launch_with_bad_parameters_names_each_field_by_its_label(client: Any, sent: list) -> None:
    response = client.post("/api/tasks", json={"task": "steps", "params": {"steps": 0, "delay": 11}})
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "Seconds per step: Enter a number from 0 to 10; Steps: Enter a whole number from 1 to 1000."
    assert body["fields"] == [
        {"field": "params.delay", "param": "delay", "label": "Seconds per step",
         "message": "Enter a number from 0 to 10"},
        {"field": "params.steps", "param": "steps", "label": "Steps", "message": "Enter a whole number from 1 to 1000"},
    ]
    assert sent == []


def test_a_loopback_run_counts_no_limit_while_a_signed_in_app_beside_it_still_does(
        redis_server: Any, results: Any, sent: list, limited: Any) -> None:
    """Without sign-in every request is the local admin: the launch limits are not counted (one
    Flask-Limiter serves every app of the process, so the choice is made per request)."""
    loopback = make_app(redis_server, results, AUTH_REQUIRED=False, LAUNCH_LIMIT="2/minute",
                        LAUNCH_LIMIT_PER_ADDRESS="2/minute", MAX_ACTIVE_PER_USER=100)
    open_client = loopback.test_client()
    statuses = [open_client.post("/api/tasks", json={"task": "steps", "params": {"steps": n}},
                                 headers={"Origin": "http://localhost"}).status_code for n in range(1, 6)]
    assert statuses == [202] * 5
    assert "X-RateLimit-Limit" not in open_client.post(
        "/api/tasks", json={"task": "steps", "params": {"steps": 9}}, headers={"Origin": "http://localhost"}).headers
    signed = limited.test_client()
    headers = {"Authorization": f"Bearer {limited.token}"}
    statuses = [signed.post("/api/tasks", json={"task": "steps", "params": {"steps": n}}, headers=headers).status_code
                for n in range(1, 5)]
    assert statuses == [202] * 3 + [429]
