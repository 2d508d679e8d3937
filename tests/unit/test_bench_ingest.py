"""The ingest benchmark's finer rungs: where each side's sustained rate is looked for next."""
from __future__ import annotations

from typing import Any

from bench.ingest import next_rate


def rung(rate: int | str, **sustained: bool) -> dict[str, Any]:
    return {"target_rate": rate, **{side: {"sustained": held} for side, held in sustained.items()}}


def test_the_next_rate_is_between_the_highest_sustained_and_the_lowest_missed_above_it() -> None:
    rungs = [rung(10_000, web=True, flower=True), rung(12_500, web=True, flower=False),
             rung(15_000, web=True, flower=False), rung(20_000, web=False, flower=False), rung("max", web=False)]
    assert next_rate(rungs, "web", 1000) == 17_500
    assert next_rate(rungs, "flower", 1000) == 11_250
    rungs.append(rung(11_250, web=True, flower=True))
    assert next_rate(rungs, "flower", 1000) == 11_875
    assert next_rate(rungs, "flower", 1250) is None  # close enough


def test_a_side_that_sustained_every_rate_is_tried_higher_and_one_that_sustained_none_is_not() -> None:
    rungs = [rung(5_000, web=True, flower=False), rung(20_000, web=True, flower=False)]
    assert next_rate(rungs, "web", 1000) == 25_000
    assert next_rate(rungs, "flower", 1000) is None
    # A missed rung below a sustained one (noise) does not pull the search down.
    rungs = [rung(10_000, web=False), rung(12_500, web=True), rung(15_000, web=False)]
    assert next_rate(rungs, "web", 1000) == 13_750


def test_ours_counts_as_applied_no_more_events_than_it_decoded() -> None:
    """A listener cut off reconciles as it reconnects: the store then holds endings read from the
    result backend, which are not events applied (a rung with 52% of its events lost once showed
    every task ended)."""
    from bench.ingest import _at

    points = [(1.0, 500, 560), (2.0, 900, 1400), (3.0, 900, 1400)]  # (time, decoded, stored endings x per task)
    assert _at(points, 2.5) == 900
    assert _at(points, 1.5) == 500
    assert _at([(1.0, 800, 700)], 2.0) == 700


def test_the_sustained_figure_is_the_rate_applied_not_the_rate_published() -> None:
    from bench.ingest import sustained_applied

    rungs = [
        {"achieved_rate": 10_000.0, "web": {"sustained": True, "applied_per_s": 9_800.0},
         "flower": {"sustained": True, "applied_per_s": 7_000.0}},
        {"achieved_rate": 17_579.1, "web": {"sustained": True, "applied_per_s": 16_427.1},
         "flower": {"sustained": False, "applied_per_s": 8_100.0}},
        {"achieved_rate": 20_000.0, "web": {"sustained": False, "applied_per_s": 18_000.0}},
    ]
    assert sustained_applied(rungs, "web") == 16_427.1  # not 17,579.1 (published), not 18,000 (not sustained)
    assert sustained_applied(rungs, "flower") == 7_000.0
    assert sustained_applied(rungs[2:], "web") is None
