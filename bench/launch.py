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


def default_body(number: int) -> dict[str, Any]:
    """A launch as the dashboard's form sends it (no `duplicate`): the web first looks for an identical
    unfinished task to attach to, then claims the parameters (web.launches). The parameters differ from
    every other launch's (a step of `number` microseconds), so each one is a new task, as with BODY."""
    return {"task": "steps", "params": {"steps": 1, "delay": number * 1e-6}}
# The web as it faces the internet: sign-in required (here a Bearer token), so each POST also looks up
# the token, counts the user's unfinished tasks (MAX_ACTIVE_PER_USER) and counts both rate limits in
# Redis (LAUNCH_LIMIT, LAUNCH_LIMIT_PER_ADDRESS). The limits are set high enough never to refuse: their
# cost is measured, not their refusals. A loopback run without sign-in (`make run`) skips all of this.
SIGNED_ENV = {"AUTH_REQUIRED": "1", "LAUNCH_LIMIT": "1000000/minute", "LAUNCH_LIMIT_PER_ADDRESS": "1000000/minute",
              "MAX_ACTIVE_PER_USER": "1000000"}


async def _post_load(url: str, total: int, concurrency: int, deadline_s: float,
                     token: str | None = None, attach_check: bool = False) -> dict[str, Any]:
    import aiohttp

    first = int(time.time() * 1000) % 1_000_000 * 10  # distinct parameters from one load to the next

    def body(number: int) -> dict[str, Any]:
        return default_body(first + number) if attach_check else BODY

    headers = {"Origin": url, **({"Authorization": f"Bearer {token}"} if token else {})}

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    numbers = iter(range(total))
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one() -> None:
            for number in numbers:
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                async with session.post(f"{url}/api/tasks", json=body(number), headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append((time.perf_counter() - start) * 1000)

        for number in range(total, total + 20):  # warm-up: connections, first imports
            async with session.post(f"{url}/api/tasks", json=body(number), headers=headers) as response:
                await response.read()
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    launched = statuses.get(202, 0)  # an answer that launched nothing is not a launch, however quick
    return {"requests": len(latencies), "launched": launched, "seconds": round(elapsed, 2),
            "per_second": round(launched / elapsed, 1), "latency_ms": percentiles(latencies, 2),
            "statuses": statuses, "concurrency": concurrency}


def post_load(url: str, total: int, concurrency: int, deadline_s: float, token: str | None = None,
              attach_check: bool = False) -> dict[str, Any]:
    """`total` POST /api/tasks from `concurrency` aiohttp clients (one process), with `token` as a Bearer
    token when given; BODY (`duplicate`), or with `attach_check` `default_body`'s launches as the form
    sends them: {"requests", "launched" (202 answers), "per_second" (launched per second),
    "latency_ms", "statuses", ...}."""
    return asyncio.run(_post_load(url, total, concurrency, deadline_s, token, attach_check))


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


# The sides' order in each round, in turn. With the floor: each side first once in three rounds, each
# after a different side each time it is not first (POST after .delay(), after the floor, first), so
# what one side leaves running in the worker never always falls on the same other side.
ORDERS = (("delay", "post", "floor"), ("floor", "post", "delay"), ("post", "delay", "floor"))
ORDERS_WITHOUT_FLOOR = (("delay", "post"), ("post", "delay"))


def _levels(run: Run, cfg: dict[str, Any], token: str | None, label: str,
            floor_url: str | None = None, attach_check: bool = False) -> list[dict[str, Any]]:
    """Each concurrency of `cfg` in `rounds` rounds against the web now running (see `measure`); with
    `floor_url`, the launch floor (bench.launch_floor) in each round too; with `attach_check`, right
    after the POSTs of BODY those of `default_body` (the launch the form sends), in each round."""
    orders = ORDERS if floor_url else ORDERS_WITHOUT_FLOOR
    levels = []
    for concurrency in cfg["concurrency"]:
        rounds = []
        for number in range(cfg.get("rounds", 1)):
            measured: dict[str, dict[str, Any]] = {}
            order = orders[number % len(orders)]
            for side in order:
                if side == "delay":
                    measured[side] = delay_load(cfg["requests"], concurrency, cfg["deadline_s"])
                elif side == "floor":
                    measured[side] = post_load(floor_url, cfg["requests"], concurrency, cfg["deadline_s"])
                else:
                    profile = (Profile(run.web_pid, 3, f"web-launch{label}-{concurrency}", run.out)
                               if run.profile and number == 0 else None)
                    with CpuSampler(run.web_pid) as sampler:
                        t0 = time.time()
                        post = post_load(run.web_url, cfg["requests"], concurrency, cfg["deadline_s"], token)
                        post["web_cpu"] = sampler.window(t0, time.time())
                    if profile:
                        run.profiles[profile.name] = profile.summary()
                    measured[side] = post
                    if attach_check:  # right after, under the same load: the launch the form sends
                        wait_idle(run.web_pid, timeout=10)
                        measured["attach"] = post_load(run.web_url, cfg["requests"], concurrency, cfg["deadline_s"],
                                                       token, attach_check=True)
                wait_idle(run.web_pid, timeout=10)  # the worker's and the web's share of that side settled
            post, delay, floor = measured["post"], measured["delay"], measured.get("floor")
            rounds.append({"post": post, "delay": delay, "floor": floor, "attach": measured.get("attach"),
                           "ratio": _ratio(post, delay), "floor_ratio": _ratio(floor, delay),
                           "of_floor": _ratio(post, floor), "attach_ratio": _ratio(measured.get("attach"), delay),
                           "order": order})
        by_ratio = sorted((r for r in rounds if r["ratio"] is not None), key=lambda r: r["ratio"])
        middle = by_ratio[len(by_ratio) // 2] if by_ratio else rounds[0]
        level = {"concurrency": concurrency, "post": middle["post"], "delay": middle["delay"],
                 "ratio": middle["ratio"], "ratios": [r["ratio"] for r in rounds]}
        if attach_check:
            level.update(attach=middle["attach"], attach_ratio=_median([r["attach_ratio"] for r in rounds]),
                         attach_ratios=[r["attach_ratio"] for r in rounds])
        if floor_url:  # each ratio's own median over the rounds, as the POST/.delay() ratio's
            level.update(floor=middle["floor"], floor_ratio=_median([r["floor_ratio"] for r in rounds]),
                         of_floor=_median([r["of_floor"] for r in rounds]),
                         floor_ratios=[r["floor_ratio"] for r in rounds],
                         of_floor_ratios=[r["of_floor"] for r in rounds])
        levels.append(level)
    return levels


def _median(values: list[float | None]) -> float | None:
    """The middle of the measured values (the upper one of an even count, as for the rounds), or None."""
    measured = sorted(v for v in values if v is not None)
    return measured[len(measured) // 2] if measured else None


def _ratio(side: dict[str, Any] | None, other: dict[str, Any] | None) -> float | None:
    """side's launches per second over other's, 3 decimals; None where either has none."""
    if not side or not other or not other.get("per_second"):
        return None
    return round(side["per_second"] / other["per_second"], 3)


def measure(run: Run) -> dict[str, Any]:
    """{"levels": [...], "signed_levels": [...]}, each level {"concurrency", "post": ..., "delay": ..., "ratio":
    post/delay per second, "ratios": each round's}. "levels": the web as `make run` starts it on loopback (no
    sign-in, so no rate limit is counted), each level also with "floor" (bench.launch_floor: Flask-SocketIO on
    eventlet whose view only calls apply_async), "floor_ratio" (floor/.delay()) and "of_floor" (ours/floor), and
    "attach", "attach_ratio" (its own median over the rounds): the launch the form sends, without `duplicate`,
    which looks for an identical task and claims its parameters first (`default_body`);
    "signed_levels": the same web restarted with SIGNED_ENV, POSTing with a Bearer token (what a deployment
    facing the internet pays per launch), then restarted as before. Each level runs `rounds` rounds, the sides
    in the orders of ORDERS (without the floor: `.delay()` then POST, then POST then `.delay()`), so that each
    side goes first in turn and follows a different side each time; between two sides the web process (which
    takes in the events of what the worker runs) goes idle. `ratio` is the median round's (its sides are
    shown), not the best; "floor_ratio" and "of_floor" are each their own median over the rounds. A launch is
    a 202: "per_second" counts no other answer."""
    import redis

    from devstack.stack import add_users

    cfg = run.p["launch"]
    run.ensure_worker()
    client = redis.Redis.from_url(run.stack.redis_url)
    floor_proc, floor_url = run.start_relay("bench.launch_floor") if cfg.get("floor", True) else (None, None)
    try:
        levels = _levels(run, cfg, None, "", floor_url, attach_check=cfg.get("attach_check", True))
    finally:
        if floor_proc is not None:
            floor_proc.stop()
    signed: list[dict[str, Any]] = []
    if cfg.get("signed", True):
        # The account first (the CLI writes it to Redis): the web with sign-in on tells its listener's
        # counters only to a signed-in caller.
        token = add_users(run.stack, {"launcher": "operator"}, "launch-bench-password", tokens=True)["launcher"]
        run.restart_web(SIGNED_ENV, token)
        try:
            signed = _levels(run, {**cfg, "concurrency": cfg.get("signed_concurrency", cfg["concurrency"])},
                             token, "-signed")
        finally:
            run.restart_web()
    reset_history(client)
    return {"settings": cfg, "levels": levels, "signed_levels": signed, "signed_env": SIGNED_ENV}
