"""A task's result on the real stack: values of sensitive dict keys (MASKED_ARGUMENTS) read
******** in the task object's preview and in the whole result, as arguments do."""
from __future__ import annotations

import uuid

from tests.integration.conftest import Api
from tests.support import Stack, wait_for

RESULT = {"report": "ok", "password": "hunter2", "rows": [{"api_key": "k-123", "n": 1}]}


def test_a_results_secret_keys_are_masked_in_the_preview_and_the_whole_result(stack: Stack, api: Api) -> None:
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    # Sent by another process to a queue no worker consumes (the dashboard registers it as it is
    # published); its outcome then lands in the result backend as a worker would store it.
    task_id = stack.python(
        "from tasks.celery_app import celery_app\n"
        f"r = celery_app.send_task('tasks.demo.steps', kwargs={{'steps': 1}}, queue={queue!r})\n"
        f"celery_app.backend.store_result(r.id, {RESULT!r}, 'SUCCESS')\n"
        "print(r.id)").stdout.strip()
    task = wait_for(lambda: (lambda t: t if t.get("state") == "SUCCESS" else None)(
        api.get(f"/api/tasks/{task_id}").json()), 60, what="the stored result to be read")
    assert task["result"] == {"report": "ok", "password": "********", "rows": [{"api_key": "********", "n": 1}]}
    whole = api.get(f"/api/tasks/{task_id}/result")
    assert whole.status_code == 200, whole.text
    assert whole.json()["result"] == task["result"]
    assert "hunter2" not in whole.text and "k-123" not in whole.text
