"""Demo tasks that together show every state the dashboard knows."""
from __future__ import annotations

import math
import time
from typing import Any

from celery import Task, group

from celery_dashboard.catalog import launchable, schema
from celery_dashboard.reporting import Progress, progress
from tasks.celery_app import celery_app


class FlakyError(RuntimeError):
    """The failure the flaky task recovers from."""


@launchable(
    "steps",
    "Stepped job",
    "Works through a number of steps, pausing between them, and reports each one.",
    schema(
        steps={"type": "integer", "title": "Steps", "minimum": 1, "maximum": 1000, "default": 10},
        delay={"type": "number", "title": "Seconds per step", "minimum": 0, "maximum": 10, "default": 0.5},
    ),
)
@celery_app.task(bind=True, name="tasks.demo.steps")
def steps(self: Task, steps: int = 10, delay: float = 0.5) -> dict[str, Any]:
    for step in range(1, steps + 1):
        time.sleep(delay)
        progress(self, step, steps, f"step {step} of {steps}")
    return {"steps": steps}


stepped = steps  # the fan-out's child; its own parameter is also called `steps`


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    for d in range(3, math.isqrt(n) + 1, 2):
        if n % d == 0:
            return False
    return True


@launchable(
    "primes",
    "Count primes",
    "CPU-bound: tests every number up to a limit by trial division and counts the primes.",
    schema(limit={"type": "integer", "title": "Up to", "minimum": 2, "maximum": 5_000_000, "default": 1_500_000}),
)
@celery_app.task(bind=True, name="tasks.demo.primes")
def primes(self: Task, limit: int = 1_500_000) -> dict[str, Any]:
    count, largest = 0, None
    report = Progress(self, limit)
    for n in range(2, limit + 1):
        if _is_prime(n):
            count, largest = count + 1, n
        # Called for every number: the throttle keeps this nearly free, and the message is
        # formatted only for the few reports actually sent.
        report(n, "{} primes up to {:,}", count, n)
    return {"limit": limit, "count": count, "largest": largest}


@launchable(
    "fail",
    "Failing job",
    "Runs a few steps and then raises an error, so you can see a failure and its traceback.",
    schema(
        steps={"type": "integer", "title": "Steps before failing", "minimum": 0, "maximum": 100, "default": 3},
        delay={"type": "number", "title": "Seconds per step", "minimum": 0, "maximum": 10, "default": 0.3},
        message={"type": "string", "title": "Error message", "maxLength": 200, "default": "the job broke on purpose"},
    ),
)
@celery_app.task(bind=True, name="tasks.demo.fail")
def fail(self: Task, steps: int = 3, delay: float = 0.3, message: str = "the job broke on purpose") -> None:
    for step in range(1, steps + 1):
        time.sleep(delay)
        progress(self, step, steps + 1, f"step {step} of {steps + 1}")
    raise ValueError(message)


@launchable(
    "flaky",
    "Flaky job",
    "Fails a given number of times, is retried after each failure, and then succeeds.",
    schema(
        failures={"type": "integer", "title": "Failures before success", "minimum": 0, "maximum": 5, "default": 2},
        countdown={"type": "number", "title": "Seconds before a retry", "minimum": 0, "maximum": 30, "default": 1},
    ),
)
@celery_app.task(bind=True, name="tasks.demo.flaky", max_retries=5)
def flaky(self: Task, failures: int = 2, countdown: float = 1) -> dict[str, Any]:
    attempt = self.request.retries + 1
    progress(self, attempt, failures + 1, f"attempt {attempt} of {failures + 1}")
    if self.request.retries < failures:
        exc = FlakyError(f"attempt {attempt} failed")
        raise self.retry(exc=exc, countdown=countdown, max_retries=failures)
    return {"attempts": attempt}


@launchable(
    "long",
    "Long job",
    "Runs for a long time with slow progress: the one to cancel.",
    schema(seconds={"type": "integer", "title": "Seconds", "minimum": 1, "maximum": 3600, "default": 120}),
)
@celery_app.task(bind=True, name="tasks.demo.long")
def long(self: Task, seconds: int = 120) -> dict[str, Any]:
    for second in range(1, seconds + 1):
        time.sleep(1)
        progress(self, second, seconds, f"{second} s of {seconds} s")
    return {"seconds": seconds}


@launchable(
    "fanout",
    "Fan-out",
    "Starts a group of stepped child tasks and reports their combined progress.",
    schema(
        children={"type": "integer", "title": "Children", "minimum": 1, "maximum": 20, "default": 4},
        steps={"type": "integer", "title": "Steps per child", "minimum": 1, "maximum": 100, "default": 5},
        delay={"type": "number", "title": "Seconds per step", "minimum": 0, "maximum": 5, "default": 0.3},
    ),
)
@celery_app.task(bind=True, name="tasks.demo.fanout")
def fanout(self: Task, children: int = 4, steps: int = 5, delay: float = 0.3) -> dict[str, Any]:
    # Polls its children rather than blocking on them, so it reports combined progress;
    # the worker needs more processes than fan-outs running at once (WORKER_CONCURRENCY).
    results = group(stepped.s(steps=steps, delay=delay) for _ in range(children)).apply_async()
    total = children * steps
    while True:
        done, current, failed = 0, 0, None
        for child in results.results:
            state, info = child.state, child.info
            if state == "SUCCESS":
                done, current = done + 1, current + steps
            elif state in ("FAILURE", "REVOKED"):
                failed = failed or f"child {child.id} ended {state}"
            elif isinstance(info, dict):
                current += int(info.get("current", 0))
        progress(self, current, total, f"{done} of {children} children done")
        if failed:
            raise RuntimeError(failed)
        if done == children:
            return {"children": children, "steps": total}
        time.sleep(0.2)
