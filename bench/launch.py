"""Launch throughput at equal concurrency: POST /api/tasks from C concurrent clients against Celery's
own `.delay()` from C threads, for each C. The real worker runs, as in production, and runs what
either side sends (`steps` with one step and no delay): both pay the same for it. (With the worker
stopped, the tasks stay unsettled and the web's reconciler asks the workers about them over the
connection launches share: launches then wait up to a second each; measured here, not what users see.)"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bench.common import percentiles, reset_history, wait_idle
from bench.harness import CpuSampler, Profile, Run

BODY = {"task": "steps", "params": {"steps": 1, "delay": 0}, "duplicate": True}  # each one a new task
# The web as it faces the internet: sign-in required (here a Bearer token), so each POST also looks up
# the token, counts the user's unfinished tasks (MAX_ACTIVE_PER_USER) and counts both rate limits in
# Redis (LAUNCH_LIMIT, LAUNCH_LIMIT_PER_ADDRESS). The limits are set high enough never to refuse: their
# cost is measured, not their refusals. A loopback run without sign-in (`make run`) skips all of this.
SIGNED_ENV = {"AUTH_REQUIRED": "1", "LAUNCH_LIMIT": "1000000/minute", "LAUNCH_LIMIT_PER_ADDRESS": "1000000/minute",
              "MAX_ACTIVE_PER_USER": "1000000"}


async def _post_load(url: str, total: int, concurrency: int, deadline_s: float,
                     token: str | None = None) -> dict[str, Any]:
    import aiohttp

    headers = {"Origin": url, **({"Authorization": f"Bearer {token}"} if token else {})}

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    numbers = iter(range(total))
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one() -> None:
            for _ in numbers:
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                async with session.post(f"{url}/api/tasks", json=BODY, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append((time.perf_counter() - start) * 1000)

        for _ in range(20):  # warm-up: connections, first imports
            async with session.post(f"{url}/api/tasks", json=BODY, headers=headers) as response:
                await response.read()
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "seconds": round(elapsed, 2), "per_second": round(len(latencies) / elapsed, 1),
            "latency_ms": percentiles(latencies, 2), "statuses": statuses, "concurrency": concurrency}


def post_load(url: str, total: int, concurrency: int, deadline_s: float, token: str | None = None) -> dict[str, Any]:
    """`total` POST /api/tasks from `concurrency` aiohttp clients (one process), with `token` as a Bearer
    token when given: {"requests", "per_second", "latency_ms", "statuses", ...}."""
    return asyncio.run(_post_load(url, total, concurrency, deadline_s, token))


def delay_load(total: int, concurrency: int, deadline_s: float) -> dict[str, Any]:
    """`total` `steps.delay()` calls from `concurrency` threads of this process (Celery's producer pool)."""
    from tasks.demo import steps

    for _ in range(20):
        steps.delay(steps=1, delay=0)
    latencies: list[float] = []
    numbers = iter(range(total))
    lock = threading.Lock()
    deadline = time.monotonic() + deadline_s

    def one() -> None:
        while time.monotonic() < deadline:
            with lock:
                if next(numbers, None) is None:
                    return
            t0 = time.perf_counter()
            steps.delay(steps=1, delay=0)
            latencies.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=one) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {"calls": len(latencies), "seconds": round(elapsed, 2), "per_second": round(len(latencies) / elapsed, 1),
            "latency_ms": percentiles(latencies, 2), "concurrency": concurrency}


def _levels(run: Run, cfg: dict[str, Any], token: str | None, label: str) -> list[dict[str, Any]]:
    """Each concurrency of `cfg` in `rounds` rounds against the web now running (see `measure`)."""
    levels = []
    for concurrency in cfg["concurrency"]:
        rounds = []
        for number in range(cfg.get("rounds", 1)):
            post_first = number % 2 == 1  # odd rounds: POST, then .delay()
            if not post_first:
                delay = delay_load(cfg["requests"], concurrency, cfg["deadline_s"])
                wait_idle(run.web_pid, timeout=10)
            profile = (Profile(run.web_pid, 3, f"web-launch{label}-{concurrency}", run.out)
                       if run.profile and number == 0 else None)
            with CpuSampler(run.web_pid) as sampler:
                t0 = time.time()
                post = post_load(run.web_url, cfg["requests"], concurrency, cfg["deadline_s"], token)
                post["web_cpu"] = sampler.window(t0, time.time())
            if profile:
                run.profiles[profile.name] = profile.summary()
            if post_first:
                wait_idle(run.web_pid, timeout=10)
                delay = delay_load(cfg["requests"], concurrency, cfg["deadline_s"])
            ratio = round(post["per_second"] / delay["per_second"], 3) if delay["per_second"] else None
            rounds.append({"post": post, "delay": delay, "ratio": ratio})
            wait_idle(run.web_pid, timeout=10)
        measured = sorted((r for r in rounds if r["ratio"] is not None), key=lambda r: r["ratio"])
        middle = measured[len(measured) // 2] if measured else rounds[0]
        levels.append({"concurrency": concurrency, "post": middle["post"], "delay": middle["delay"],
                       "ratio": middle["ratio"], "ratios": [r["ratio"] for r in rounds]})
    return levels


def measure(run: Run) -> dict[str, Any]:
    """{"levels": [...], "signed_levels": [...]}, each level {"concurrency", "post": ..., "delay": ..., "ratio":
    post/delay per second, "ratios": each round's}. "levels": the web as `make run` starts it on loopback (no
    sign-in, so no rate limit is counted); "signed_levels": the same web restarted with SIGNED_ENV, POSTing
    with a Bearer token (what a deployment facing the internet pays per launch), then restarted as before.
    Each level runs `rounds` rounds, `.delay()` then POST in even rounds and POST then `.delay()` in odd ones
    (the side that goes second shares the machine with the worker still running what the first sent), so
    that both sides see the same drift of a shared machine; `ratio` is the median round's (its `post` and
    `delay` are shown), not the best."""
    import redis

    from devstack.stack import add_users

    cfg = run.p["launch"]
    run.ensure_worker()
    client = redis.Redis.from_url(run.stack.redis_url)
    levels = _levels(run, cfg, None, "")
    signed: list[dict[str, Any]] = []
    if cfg.get("signed", True):
        run.restart_web(SIGNED_ENV)
        try:
            token = add_users(run.stack, {"launcher": "operator"}, "launch-bench-password", tokens=True)["launcher"]
            signed = _levels(run, {**cfg, "concurrency": cfg.get("signed_concurrency", cfg["concurrency"])},
                             token, "-signed")
        finally:
            run.restart_web()
    reset_history(client)
    return {"settings": cfg, "levels": levels, "signed_levels": signed, "signed_env": SIGNED_ENV}
