"""Argument previews: bounded, with the values of sensitive names masked at any depth."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

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


def old_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """The single pattern masking used before, right but quadratic: the reference."""
    names = "|".join(re.escape(word) for word in words) or "(?!)"
    name = r"""((?<![\w-])(?i:['"]?[\w-]*(?:""" + names.replace("_", "[_-]") + r""")[\w-]*['"]?)[ \t]*[:=][ \t]*)"""
    return re.compile(name + r"""('(?:[^'\\\n]|\\.)*'?|"(?:[^"\\\n]|\\.)*"?|[^,)}\]\n]*)""")


# Texts without an opening bracket or a backslash: where the single pattern's masking was whole.
PIECES = st.sampled_from(["password", "Api-Key", "api_key", "token", "x", "é", "=", ":", " ", "\t", "\n", "'",
                          '"', ",", ")", "}", "]", "-", "_", "secret", "1"])


@hypothesis_settings(max_examples=500, deadline=None, derandomize=True)
@given(pieces=st.lists(PIECES, max_size=30))
def test_masking_in_linear_time_masks_what_the_single_pattern_did(pieces: list[str]) -> None:
    text = "".join(pieces)
    words = settings.MASKED_ARGUMENTS
    assert arguments._mask_names(text, words) == old_pattern(words).sub(lambda m: m.group(1) + arguments.MASK, text)


@pytest.mark.parametrize("text,masked", [
    ("token" * 20_000, "token" * 20_000),  # 2 s per 20,000 characters before; quadratic
    ("token" * 20_000 + "=s3cret, rest", "token" * 20_000 + "=" + arguments.MASK + ", rest"),
    ("a=" * 20_000 + "password=x", "a=" * 20_000 + "password=" + arguments.MASK),
    ("note=password=hunter2, ok", "note=password=" + arguments.MASK + ", ok"),
])
def test_long_texts_are_masked_whole(text: str, masked: str) -> None:
    assert arguments.mask_text(text) == masked


SECRETS = st.text(alphabet="ab,()[]{} :'\"=\\", max_size=6).map(lambda junk: f"SECRET{junk}")
SECRET_VALUES = st.recursive(
    SECRETS | st.binary(max_size=4).map(lambda b: b"SECRET" + b),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)),
    max_leaves=6)


class Odd:
    """An object whose repr is not a literal: its container's repr is masked as text."""

    def __repr__(self) -> str:
        return "Odd()"


@hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
@given(key=st.sampled_from(["password", "api_key", "Secret", "token", "X-Auth-Token"]), value=SECRET_VALUES,
       how=st.sampled_from(["repr", "in a message", "json", "json twice", "kwargs repr"]))
def test_no_part_of_a_sensitive_value_survives_in_text(key: str, value: Any, how: str) -> None:
    """A fresh user's review: a list or tuple value kept all but its first item (`'password':
    ['PW1', 'PW2']`), and escaped quotes (a repr or JSON inside a string) kept everything."""
    shown = {"n": 1, key: value, "when": Odd()}
    if how == "repr":
        text = repr(shown)
    elif how == "in a message":
        text = repr(ValueError(f"bad input {shown!r}, try again"))
    elif how == "kwargs repr":
        text = arguments.mask_repr(repr(shown)) or ""
    else:
        plain = json.loads(json.dumps(shown, default=lambda o: o.hex() if isinstance(o, bytes) else repr(o)))
        text = json.dumps(plain) if how == "json" else json.dumps(json.dumps(plain))
    masked = text if how == "kwargs repr" else arguments.mask_text(text)
    assert "SECRET" not in masked and "534543524554" not in masked, (text, masked)
