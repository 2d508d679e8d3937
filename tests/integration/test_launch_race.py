"""Identical launches at the same instant (web/launches.py claim, web/api.py launch): one task is sent
and every other launch is offered to attach to it (409), on one web process and across two."""
from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import ARTIFACTS
from tests.integration.conftest import TERMINAL, TIMEOUT, Api
from tests.support import Stack, wait_for

LAUNCHES = 8


@pytest.fixture(scope="module")
def webs() -> Iterator[tuple[Stack, list[str]]]:
    """Redis, the demo worker and two web processes on it (sign-in off: every launch is one user's)."""
    stack = Stack(logdir=ARTIFACTS / "logs-launch-race")
    try:
        stack.start_redis()
        stack.start_worker(concurrency=2)
        yield stack, [stack.start_web(), stack.start_web()]
    finally:
        stack.stop()


def at_once(urls: list[str], body: dict[str, Any] | None, path: str = "/api/tasks") -> list[requests.Response]:
    """POST `path` with `body` LAUNCHES times, from as many threads released together, spread
    over `urls` in turn; the answers in thread order."""
    gate = threading.Barrier(LAUNCHES)
    answers: list[requests.Response | BaseException | None] = [None] * LAUNCHES
    sessions = [requests.Session() for _ in range(LAUNCHES)]
    for number, session in enumerate(sessions):  # connected beforehand: the gate releases requests, not handshakes
        session.get(f"{urls[number % len(urls)]}/healthz", timeout=10)

    def one(number: int) -> None:
        gate.wait(timeout=30)
        try:
            answers[number] = sessions[number].post(f"{urls[number % len(urls)]}{path}", json=body, timeout=30)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            answers[number] = exc

    threads = [threading.Thread(target=one, args=(number,)) for number in range(LAUNCHES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(answer, requests.Response) for answer in answers), answers
    return answers  # type: ignore[return-value]


def received(stack: Stack, task_name: str) -> set[str]:
    """The ids of `task_name` tasks the worker received (its log), in this module's stack."""
    assert stack.worker is not None
    return set(re.findall(rf"Task {re.escape(task_name)}\[([0-9a-f-]+)\] received", stack.worker.output()))


def check_one_task_and_attaches(stack: Stack, urls: list[str], body: dict[str, Any], task_name: str) -> None:
    before = received(stack, task_name)
    answers = at_once(urls, body)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202] + [409] * (LAUNCHES - 1), [(a.status_code, a.text[:200]) for a in answers]
    [launched] = [answer.json() for answer in answers if answer.status_code == 202]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"].startswith("An identical task is already"), answer.text
            assert answer.json()["attach"]["id"] == launched["id"], answer.text
    api = Api(urls[0])
    api.wait(launched["id"], lambda t: t["state"] == "SUCCESS", timeout=TIMEOUT)
    # Exactly one task was sent and run: the worker received no other, and the dashboard lists no other.
    wait_for(lambda: launched["id"] in received(stack, task_name), 10, what="the worker's log of the task")
    assert received(stack, task_name) - before == {launched["id"]}
    listed = [t for t in api.tasks(name=task_name, limit=500) if t["id"] not in before]
    assert [t["id"] for t in listed] == [launched["id"]]
    # The claim ended with the task: the same launch now starts a new one, once.
    again = at_once(urls, body)
    assert sorted(answer.status_code for answer in again) == [202] + [409] * (LAUNCHES - 1)
    [second] = [answer.json() for answer in again if answer.status_code == 202]
    assert second["id"] != launched["id"]
    api.wait(second["id"], lambda t: t["state"] in TERMINAL, timeout=TIMEOUT)


def test_identical_launches_at_once_to_one_web_process_send_one_task(webs: tuple[Stack, list[str]]) -> None:
    stack, urls = webs
    check_one_task_and_attaches(stack, urls[:1], {"task": "steps", "params": {"steps": 2, "delay": 0.4}},
                                "tasks.demo.steps")


def test_identical_launches_at_once_to_two_web_processes_send_one_task(webs: tuple[Stack, list[str]]) -> None:
    stack, urls = webs
    check_one_task_and_attaches(stack, urls, {"task": "long", "params": {"seconds": 2}}, "tasks.demo.long")


def test_retries_of_one_task_at_once_on_two_web_processes_send_one_task(webs: tuple[Stack, list[str]]) -> None:
    """A fresh user's review: 8 retries at once of one failed task across two webs gave 8 tasks."""
    stack, urls = webs
    api = Api(urls[0])
    failed = api.launch("fail", steps=1, delay=0.1, message="retried at once")
    api.wait(failed["id"], lambda t: t["state"] == "FAILURE", timeout=TIMEOUT)
    before = received(stack, "tasks.demo.fail")
    answers = at_once(urls, None, f"/api/tasks/{failed['id']}/retry")
    assert sorted(a.status_code for a in answers) == [202] + [409] * (LAUNCHES - 1), [a.text[:200] for a in answers]
    [again] = [a.json() for a in answers if a.status_code == 202]
    assert again["retry_of"] == failed["id"]
    assert all(a.json()["attach"]["id"] == again["id"] for a in answers if a.status_code == 409)
    api.wait(again["id"], lambda t: t["state"] == "FAILURE", timeout=TIMEOUT)
    wait_for(lambda: again["id"] in received(stack, "tasks.demo.fail"), 10, what="the worker's log of the retry")
    assert received(stack, "tasks.demo.fail") - before == {again["id"]}
