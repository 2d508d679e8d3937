"""The web's garbage-collection pauses (web.pauses) with CPython's real collector, and as /metrics shows them."""
from __future__ import annotations

import gc
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from web import pauses
from web.pauses import BUCKETS, Pauses


def test_each_collection_is_timed_from_its_start_to_its_stop() -> None:
    times = iter([10.0, 10.003, 20.0, 20.2])
    recorded = Pauses(clock=lambda: next(times))
    recorded("start", {"generation": 0})
    recorded("stop", {"generation": 0, "collected": 5})
    recorded("start", {"generation": 2})
    recorded("stop", {"generation": 2, "collected": 0})
    assert recorded.count == [1, 0, 1]
    assert round(recorded.total[2], 6) == 0.2 and round(recorded.longest[0], 6) == 0.003
    # cumulative buckets, as Prometheus reads them: 3 ms is under 5 ms and every larger bound
    assert recorded.buckets[0] == [0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert recorded.buckets[2] == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert len(recorded.buckets[2]) == len(BUCKETS)


def test_a_stop_without_its_start_counts_nothing() -> None:
    recorded = Pauses(clock=lambda: 1.0)
    recorded("stop", {"generation": 1})  # installed in the middle of a collection
    assert recorded.count == [0, 0, 0]


def test_the_real_collector_is_counted_once_installed_and_not_after() -> None:
    recorded = Pauses().install()
    try:
        recorded.install()  # twice: still one callback
        assert gc.callbacks.count(recorded) == 1
        gc.collect()
        assert recorded.count[2] == 1 and recorded.longest[2] > 0
    finally:
        recorded.uninstall()
    gc.collect()
    assert recorded.count[2] == 1 and recorded not in gc.callbacks


def test_metrics_show_the_pauses_by_generation(client: Any) -> None:
    pauses.PAUSES.install()
    try:
        before = pauses.PAUSES.count[2]
        gc.collect()
        text = client.get("/metrics").get_data(as_text=True)
    finally:
        pauses.PAUSES.uninstall()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("dashboard_gc_pause_seconds_count", (("generation", "2"),))] >= before + 1
    assert samples[("dashboard_gc_pause_seconds_bucket", (("generation", "2"), ("le", "+Inf")))] >= before + 1
    assert samples[("dashboard_gc_longest_pause_seconds", (("generation", "2"),))] > 0
    assert ("dashboard_gc_frozen_objects", ()) in samples
