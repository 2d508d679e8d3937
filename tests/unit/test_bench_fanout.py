"""The fan-out benchmark's split of each lag (bench.fanout.lag_split) and its percentiles."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from bench.common import histogram_percentiles
from bench.fanout import lag_split
from tests.unit.test_bench_ingest import goal
from tests.unit.threads import in_own_thread


def _run(coroutine: Any) -> Any:
    return in_own_thread(asyncio.run, coroutine)


def watcher(ended: dict[str, tuple[float, float]]) -> SimpleNamespace:
    """A client that got each task's terminal state at (epoch s, lag ms)."""
    return SimpleNamespace(ended={k: lag for k, (_, lag) in ended.items()},
                           ended_at={k: at for k, (at, _) in ended.items()})


def test_a_lag_splits_at_the_first_client_that_had_the_task_s_end() -> None:
    # Task a: client 1 had its end first (lag 50 ms), client 2 0.125 s later; task b: client 2 first.
    one = watcher({"a": (100.0, 50.0), "b": (200.25, 350.0)})
    two = watcher({"a": (100.125, 175.0), "b": (200.0, 100.0), "other": (300.0, 5.0)})
    first, after = lag_split([one, two], {"a", "b"})
    assert (first["n"], first["p50"], first["max"]) == (2, 100, 100)  # a: 50 ms, b: 100 ms
    assert after["n"] == 4  # one value per client and expected task: 0, 125 (a), 0, 250 (b)
    assert (after["p50"], after["max"]) == (125, 250)


def test_a_task_no_client_got_is_left_out_and_a_snapshot_end_counts_as_none() -> None:
    early = watcher({"a": (10.0, -1.0)})  # ended before the storm (seen in a snapshot): lag -1
    late = watcher({"a": (10.5, 40.0)})
    first, after = lag_split([early, late], {"a", "never"})
    assert (first["n"], first["max"]) == (1, 40)  # the snapshot's receipt is no earlier "first"
    assert (after["n"], after["max"]) == (1, 0)


def test_percentiles_by_name() -> None:
    found = histogram_percentiles({10: 1, 20: 8, 95: 1}, ("p1", "p10", "p50", "p99"))
    assert (found["p1"], found["p10"], found["p50"], found["p99"], found["max"]) == (10, 20, 20, 95, 95)


def test_per_tick_windows_count_each_client_s_messages_in_fixed_windows_from_the_start() -> None:
    """Two messages sent a tick apart land in one window when the first is late (receive jitter)."""
    from bench.common import per_tick_windows

    times = [[10.01, 10.06, 10.09], [10.02, 10.07], [10.2]]  # receive times, s; windows of 0.05 s from 10.0
    assert per_tick_windows(times, 10.0, 0.05) == {1: 4, 2: 1}
    assert per_tick_windows([], 10.0, 0.05) == {}
    assert per_tick_windows([[9.97, 10.01]], 10.0, 0.05) == {1: 2}  # a message before the start: a window of its own


def test_the_first_object_a_client_gets_of_a_task_is_not_counted_as_an_update_that_could_be_a_delta() -> None:
    """Run K showed every sampled progress update at 500 and 1,000 clients whole: each was the first
    object those clients got of its task (its launch and its progress in one stretched tick), which
    no delta can serve. Those are counted apart; an update to a task the client held is measured."""
    from bench.fanout import Run, Watcher

    run = Run()
    run.expected = {"a"}
    watcher = Watcher(run, sampled=True)
    progress = {"current": 1, "total": 250, "percent": 0.4, "message": "1 of 250 steps"}
    whole = {"id": "a", "name": "tasks.demo.steps", "state": "PROGRESS", "version": 3, "progress": progress,
             "worker": "worker@vm", "args": "()", "kwargs": "{'steps': 250}", "queue": "celery"}
    _run(watcher.on_tasks({"tasks": [whole]}))
    assert (run.first_sightings, run.update_bytes) == (1, [])
    change = {"id": "a", "version": 4, "base": 3, "state": "PROGRESS", "progress": dict(progress, current=2)}
    _run(watcher.on_tasks({"changes": [change]}))
    assert len(run.update_bytes) == 1 and run.update_bytes[0] < run.update_full_bytes[0]
    _run(watcher.on_tasks({"tasks": [dict(whole, version=5)]}))  # held, and sent whole: counted whole
    assert run.update_bytes[1] == run.update_full_bytes[1]


def _storm_round(**fields: Any) -> dict[str, Any]:
    return {"relay": "ours", "clients": 500, "delivered_pct": 100.0, "lag_ms": {"p50": 90, "p99": 150},
            "last_joiner_lag_ms": {"p99": 160}, **fields}


def test_a_last_joiner_served_in_turn_does_not_hide_the_worst_client() -> None:
    """Our server takes turns in its send order, so the client that joined last is an average
    client: a worst client at 260 ms misses the 200 ms goal even when the last joiner meets it."""
    from bench.report import goals

    row = goal(goals({"profile": "full", "fanout": {"rounds": [_storm_round(worst_client_p99_ms=260.0)]}}),
               "Fan-out, 500 clients: lag p99 of the client that joined LAST")
    assert row[2] == "160 ms" and "260 ms" in row[4]
    assert row[-1].startswith("MISSED by 60.0 ms") and "on the worst client" in row[-1]


def test_one_message_per_batch_is_not_one_per_tick_when_batches_come_faster_than_the_tick() -> None:
    from bench.report import goals

    ticks = {"messages_per_client_per_tick": {"max": 1, "p99": 1, "tick_s": 0.05},
             "messages_per_client_per_batch_max": 1}
    on_time = goals({"profile": "full", "fanout": {"rounds": [_storm_round(batches_per_second=19.0, **ticks)]}})
    assert goal(on_time, "Under a storm: messages per client per server batch")[-1] == "met"
    fast = goals({"profile": "full", "fanout": {"rounds": [_storm_round(batches_per_second=30.0, **ticks)]}})
    assert goal(fast, "Under a storm: messages per client per server batch")[-1].startswith("MISSED by 0.5")


def test_the_bytes_row_shows_every_progress_update_as_sent_first_sightings_included() -> None:
    from bench.report import goals

    sizes = {"mean": 400.0, "full_mean": 830.0, "n": 50, "first_sightings": 30, "all_mean": 560.0, "all_n": 80}
    row = goal(goals({"profile": "full", "fanout": {"rounds": [_storm_round(bytes_per_progress_update=sizes)]}}),
               "Bytes per progress update")
    assert "500 clients 560 B (80 updates)" in row[4]


def test_the_server_cpu_window_gives_its_busiest_sampling_interval() -> None:
    from bench.harness import CpuSampler

    sampler = CpuSampler(pid=1)
    sampler.samples = [(0.0, 0.0, 0.0), (0.1, 0.05, 0.0), (0.2, 0.15, 0.0), (0.3, 0.16, 0.0)]
    window = sampler.window(0.0, 0.3)
    assert window["percent_of_core"] == 53.3 and window["peak_percent_of_core"] == 100.0


def test_the_batch_rate_counts_the_ticks_between_the_first_and_the_last_batch() -> None:
    """Four batches 50 ms apart are 20 per second (three ticks in 0.15 s), not 4 over a storm of
    0.15 s (26.7): a short storm's count over its length said more batches than ticks."""
    from bench.fanout import batch_rate

    client = SimpleNamespace(batch_numbers=[7, 8, 8, 9, 10], numbered_times=[1.0, 1.05, 1.06, 1.10, 1.15])
    assert batch_rate(client) == 20.0
    assert batch_rate(SimpleNamespace(batch_numbers=[7], numbered_times=[1.0])) is None
