"""Argument previews: bounded, with the values of sensitive names masked at any depth."""
from __future__ import annotations

from celery_dashboard import arguments, settings


def test_values_under_sensitive_names_are_masked_at_any_depth() -> None:
    args, kwargs = arguments.preview([{"user": "ann", "Secret": "s1"}],
                                     {"db_password": "p1", "cfg": {"a": [{"X-API-Key": "k1"}]}, "n": 1})
    assert args == "({'user': 'ann', 'Secret': ********},)"
    assert kwargs == "{'db_password': ********, 'cfg': {'a': [{'X-API-Key': ********}]}, 'n': 1}"


def test_previews_are_bounded() -> None:
    args, kwargs = arguments.preview(list(range(100_000)), {"text": "x" * 100_000})
    assert len(args) <= settings.ARGUMENT_PREVIEW and args.endswith(", …)")  # the cut says so
    assert len(kwargs) <= settings.ARGUMENT_PREVIEW


def test_repr_strings_are_masked_whether_or_not_they_parse() -> None:
    assert arguments.mask_repr("{'token': 'abc', 'n': 2}") == "{'token': ********, 'n': 2}"
    assert arguments.mask_repr("{'when': datetime.datetime(2026, 1, 1), 'Authorization': 'Bearer xyz'}") \
        == "{'when': datetime.datetime(2026, 1, 1), 'Authorization': ********}"
    assert arguments.mask_repr("(1, 'plain')") == "(1, 'plain')" and arguments.mask_repr(None) is None
