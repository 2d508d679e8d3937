"""The launch step's rounds (bench.launch._levels) and its report (bench.report): ours, `.delay()` and
the floor of the stack (bench/launch_floor.py) measured in the same rounds, each first in turn."""
from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import pytest

from bench import launch
from bench.report import goals, markdown
from tests.unit.threads import in_own_thread


def test_each_side_goes_first_in_turn_and_the_median_round_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    rates = iter([  # per round, in the order the sides run (bench.launch.ORDERS)
        400, 100, 200,   # round 0: .delay(), POST, floor -> POST/.delay() 0.25x
        300, 150, 400,   # round 1: floor, POST, .delay() -> 0.375x
        160, 400, 200,   # round 2: POST, .delay(), floor -> 0.4x
    ])

    def side(name: str) -> Any:
        def load(*_: Any, **__: Any) -> dict[str, Any]:
            order.append(name)
            return {"per_second": float(next(rates)), "latency_ms": {}, "statuses": {202: 10}}
        return load

    monkeypatch.setattr(launch, "delay_load", side("delay"))
    monkeypatch.setattr(launch, "post_load", lambda url, *a, **k: side("floor" if url == "floor" else "post")())
    monkeypatch.setattr(launch, "wait_idle", lambda *_, **__: None)
    monkeypatch.setattr(launch, "CpuSampler", lambda *_: nullcontext(SimpleNamespace(window=lambda *a: None)))
    run = SimpleNamespace(web_pid=1, web_url="ours", profile=False)
    cfg = {"concurrency": [1], "requests": 10, "deadline_s": 1, "rounds": 3}

    [level] = launch._levels(run, cfg, None, "", floor_url="floor")

    assert order == ["delay", "post", "floor", "floor", "post", "delay", "post", "delay", "floor"]
    assert level["ratios"] == [0.25, 0.375, 0.4] and level["ratio"] == 0.375  # the median, not the best
    assert (level["post"]["per_second"], level["floor"]["per_second"]) == (150.0, 300.0)  # that round's sides
    # The floor's ratios: each its own median over the rounds, not the POST/.delay() median round's.
    assert level["floor_ratios"] == [0.5, 0.75, 0.5] and level["floor_ratio"] == 0.5
    assert level["of_floor_ratios"] == [0.5, 0.5, 0.8] and level["of_floor"] == 0.5


def test_the_report_shows_the_floor_beside_ours_and_keeps_the_goal_s_verdict() -> None:
    level = {"concurrency": 1, "post": {"per_second": 150.0, "latency_ms": {"p50": 6, "p99": 12}},
             "delay": {"per_second": 400.0, "latency_ms": {"p50": 2, "p99": 4}}, "ratio": 0.375,
             "floor": {"per_second": 300.0, "latency_ms": {"p50": 3, "p99": 7}, "statuses": {202: 1500}},
             "floor_ratio": 0.75, "of_floor": 0.5}
    results = {"profile": "full", "launch": {"levels": [level], "signed_levels": [dict(level, floor=None)]}}
    rows = goals(results)
    verdict = next(r for r in rows if r[0].startswith("Launch throughput at concurrency 1, open"))
    assert verdict[-1].startswith("MISSED")  # the floor explains a figure; it never moves the goal
    floor = [r for r in rows if "the floor of the stack" in r[0]]
    assert len(floor) == 1 and "ours 0.5x of the floor" in floor[0][2] and "0.75x of `.delay()`" in floor[0][3]
    text = markdown(results)
    assert "300/s (p50 / p99 3 / 7 ms; 202: 1500); medians of the rounds: 0.75x; 0.5x" in text
    assert "not measured" in text  # signed in: no floor


def test_only_a_202_counts_as_a_launch() -> None:
    """A side answering errors quickly must not look fast: per_second counts 202s only (any side, the
    floor's included). The real aiohttp client against a real HTTP server answering 500 to every other."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answered = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            answered.append(1)
            status = 202 if len(answered) % 2 else 500
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # post_load runs asyncio.run: in a thread of its own (tests.unit.threads)
        result = in_own_thread(launch.post_load, f"http://127.0.0.1:{server.server_port}", 400, 1, 30)
    finally:
        server.shutdown()
    assert result["statuses"] == {202: 200, 500: 200} and (result["requests"], result["launched"]) == (400, 200)
    # launches per second: half the answers per second (the elapsed time is rounded to 10 ms in "seconds")
    assert 0.9 * 200 <= result["per_second"] * result["seconds"] <= 1.1 * 200
