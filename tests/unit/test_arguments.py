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


def test_text_is_masked_line_by_line() -> None:
    """mask_text (errors, tracebacks, progress messages): a value ends at its line's end, so the
    next line of a traceback is kept; quoted values, keywords and `name: value` are all masked."""
    text = ("File \"x.py\", line 3, in f\n    token = current\n"
            "KeyError: {'API-Key': 'k1', \"secret\": \"s\\\"2\", 'n': 1}\nok")
    masked = arguments.mask_text(text)
    assert masked == ("File \"x.py\", line 3, in f\n    token = ********\nKeyError: {'API-Key': ********, "
                      "\"secret\": ********, 'n': 1}\nok"), masked
    assert arguments.mask_text("nothing to hide: 1, 2") == "nothing to hide: 1, 2"
