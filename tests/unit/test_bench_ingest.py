"""The ingest benchmark: where each side's sustained rate is looked for next, what counts as
applied, and how its tasks are read back."""
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


class _Served:
    """`requests.get` answered by the app's test client (the same view, no socket)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, url: str, params: dict[str, Any], timeout: float) -> Any:
        path = url.split("://", 1)[1].split("/", 1)[1]
        response = self.client.get(f"/{path}", query_string=params)

        class Answer:
            def json(self) -> Any:
                return response.get_json()

        return Answer()


def test_tasks_the_api_cannot_list_past_its_search_bound_are_not_counted_lost(
        redis_server: Any, results: Any, sent: list, monkeypatch: Any) -> None:
    """Run J's flood of 11,429 tasks read back 10,000 SUCCESS: GET /api/tasks searched only the newest
    QUERY_SCAN_LIMIT (10,000) entries, and the benchmark called the rest lost. A task the API lists
    in another state is still counted wrong; one it cannot list is counted apart."""
    from bench import ingest
    from tests.unit.conftest import make_app
    from web import records

    app = make_app(redis_server, results, QUERY_SCAN_LIMIT=5)
    dash = app.extensions["dashboard"]
    dash.store.merge({f"t{i}": {"id": f"t{i}", "state": "STARTED" if i == 7 else "SUCCESS", "name": "x",
                                "created": records.iso(1000.0 + i)} for i in range(8)})
    monkeypatch.setattr(ingest, "requests", _Served(app.test_client()))
    ids = [f"t{i}" for i in range(8)]
    got = ingest.tasks_right("http://web", ids, cap=0)
    # Newest first: t7 (STARTED), t6..t3 listed; t2, t1, t0 past the bound.
    assert (got["success_in_api"], got["wrong_or_missing"], got["unlisted"]) == (4, 1, 3)
    # With the rung's start as `since`, the search covers the rung alone: nothing unlisted.
    got = ingest.tasks_right("http://web", ids[5:], cap=0, since=1004.5)
    assert (got["success_in_api"], got["wrong_or_missing"], got["unlisted"]) == (2, 1, 0)
