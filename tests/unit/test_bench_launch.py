"""The launch step's rounds (bench.launch._levels) and its report (bench.report): ours, `.delay()` and
the floor of the stack (bench/launch_floor.py) measured in the same rounds, each first in turn."""
from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import pytest

from bench import launch
from bench.report import goals, markdown


def test_each_side_goes_first_in_turn_and_the_median_round_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    rates = iter([  # per round, in the order the sides run: .delay() 400/s each round
        400, 100, 200,   # round 0: .delay(), POST, floor -> 0.25x
        150, 300, 400,   # round 1: POST, floor, .delay() -> 0.375x
        200, 400, 160,   # round 2: floor, .delay(), POST -> 0.4x
    ])

    def side(name: str) -> Any:
        def load(*_: Any, **__: Any) -> dict[str, Any]:
            order.append(name)
            return {"per_second": float(next(rates)), "latency_ms": {}}
        return load

    monkeypatch.setattr(launch, "delay_load", side("delay"))
    monkeypatch.setattr(launch, "post_load", lambda url, *a, **k: side("floor" if url == "floor" else "post")())
    monkeypatch.setattr(launch, "wait_idle", lambda *_, **__: None)
    monkeypatch.setattr(launch, "CpuSampler", lambda *_: nullcontext(SimpleNamespace(window=lambda *a: None)))
    run = SimpleNamespace(web_pid=1, web_url="ours", profile=False)
    cfg = {"concurrency": [1], "requests": 10, "deadline_s": 1, "rounds": 3}

    [level] = launch._levels(run, cfg, None, "", floor_url="floor")

    assert order == ["delay", "post", "floor", "post", "floor", "delay", "floor", "delay", "post"]
    assert level["ratios"] == [0.25, 0.375, 0.4] and level["ratio"] == 0.375  # the median, not the best
    assert (level["post"]["per_second"], level["floor"]["per_second"]) == (150.0, 300.0)  # that round's sides
    assert (level["floor_ratio"], level["of_floor"]) == (0.75, 0.5)
    assert level["floor_ratios"] == [0.5, 0.75, 0.5] and level["of_floor_ratios"] == [0.5, 0.5, 0.8]


def test_the_report_shows_the_floor_beside_ours_and_keeps_the_goal_s_verdict() -> None:
    level = {"concurrency": 1, "post": {"per_second": 150.0, "latency_ms": {"p50": 6, "p99": 12}},
             "delay": {"per_second": 400.0, "latency_ms": {"p50": 2, "p99": 4}}, "ratio": 0.375,
             "floor": {"per_second": 300.0, "latency_ms": {"p50": 3, "p99": 7}}, "floor_ratio": 0.75,
             "of_floor": 0.5}
    results = {"profile": "full", "launch": {"levels": [level], "signed_levels": [dict(level, floor=None)]}}
    rows = goals(results)
    verdict = next(r for r in rows if r[0].startswith("Launch throughput at concurrency 1, open"))
    assert verdict[-1].startswith("MISSED")  # the floor explains a figure; it never moves the goal
    floor = [r for r in rows if "the floor of the stack" in r[0]]
    assert len(floor) == 1 and "ours 0.5x of the floor" in floor[0][2] and "0.75x of `.delay()`" in floor[0][3]
    text = markdown(results)
    assert "300/s (p50 / p99 3 / 7 ms); 0.75x; 0.5x" in text and "not measured" in text  # signed in: no floor
