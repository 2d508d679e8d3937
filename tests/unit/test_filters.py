"""The task list's filter and page: parsed from query parameters, refused with the field named."""
from __future__ import annotations

import pytest

from web import records
from web.errors import ApiError
from web.filters import Page, TaskFilter


def task(**fields: object) -> dict:
    record = records.new_record(str(fields.pop("id", "abc123")))
    record.update({"state": "SUCCESS", "name": "tasks.demo.steps", "created": records.iso(1000.0), **fields})
    return record


def test_an_empty_query_is_an_empty_filter_matching_everything() -> None:
    flt = TaskFilter.from_args({"limit": "20", "sort": "oldest", "other": "x"})
    assert flt.empty and flt.as_dict() == {} and flt.matches(task())


def test_each_field_narrows_what_matches() -> None:
    record = task(state="FAILURE", owner="alice", queue="reports", worker="celery@host1",
                  args="(42, 'customer-7')", kwargs="{'password': ********}")
    for args, expected in [({"state": "FAILURE,REVOKED"}, True), ({"state": "SUCCESS"}, False),
                           ({"name": "DEMO.steps"}, True), ({"name": "fail"}, False),
                           ({"owner": "alice"}, True), ({"owner": "bob"}, False),
                           ({"queue": "reports"}, True), ({"queue": "report"}, False),
                           ({"worker": "HOST1"}, True), ({"worker": "host2"}, False),
                           ({"q": "abc1"}, True), ({"q": "CUSTOMER-7"}, True), ({"q": "bc1"}, False),
                           ({"q": "hunter2"}, False),
                           ({"since": "999", "until": "1970-01-01T00:16:41Z"}, True), ({"since": "1001"}, False),
                           ({"until": "1970-01-01T00:16:39"}, False)]:
        assert TaskFilter.from_args(args).matches(record) is expected, args


def test_as_dict_reads_back_as_the_same_filter() -> None:
    flt = TaskFilter.from_args({"state": "SUCCESS,FAILURE", "name": "steps", "q": "ab", "since": "1000.5",
                                "until": "2030-01-01T00:00:00+00:00"})
    assert TaskFilter.from_args(flt.as_dict()) == flt and not flt.empty
    assert flt.as_dict()["state"] == "FAILURE,SUCCESS"


@pytest.mark.parametrize("args,field", [({"state": "not a state!"}, "state"), ({"state": ",".join("S" * 21)}, "state"),
                                        ({"name": "x" * 201}, "name"), ({"since": "yesterday"}, "since"),
                                        ({"until": "nan"}, "until"), ({"since": "20", "until": "10"}, "until"),
                                        ({"q": 5}, "q")])
def test_bad_values_are_422_naming_the_field(args: dict, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        TaskFilter.from_args(args)
    assert caught.value.status == 422 and caught.value.fields[0]["field"] == field


def test_a_strict_filter_refuses_unknown_fields() -> None:
    assert TaskFilter.from_args({"stat": "FAILURE"}).empty
    with pytest.raises(ApiError) as caught:
        TaskFilter.from_args({"stat": "FAILURE"}, strict=True)
    assert caught.value.fields[0]["field"] == "stat"
    assert TaskFilter.from_args({"state": ["FAILURE"], "limit": "5"}, strict=True).states == {"FAILURE"}


@pytest.mark.parametrize("args,field", [({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
                                        ({"offset": "-1"}, "offset"), ({"offset": "x"}, "offset"),
                                        ({"sort": "random"}, "sort")])
def test_bad_pages_are_422_naming_the_field(args: dict, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        Page.from_args(args)
    assert caught.value.fields[0]["field"] == field


def test_page_defaults() -> None:
    assert Page.from_args({}) == Page(50, 0, "newest")
    assert Page.from_args({"limit": "500", "offset": "10", "sort": "oldest"}) == Page(500, 10, "oldest")
