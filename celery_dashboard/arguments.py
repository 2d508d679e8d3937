"""A task's arguments as the task object shows them: a bounded preview, sensitive values masked.

Masking happens where a task is first seen (the publishing process, the web's listener), before
anything is stored: a secret never reaches the index in Redis nor a browser. A value is masked when
its keyword argument's name, or its key in a dict at any depth, contains one of MASKED_ARGUMENTS
(case-insensitive; `-` counts as `_`). Positional values have no name and are shown as they are.
"""
from __future__ import annotations

import ast
import functools
import itertools
import re
from collections.abc import Mapping
from typing import Any

from celery_dashboard import settings

MASK = "********"
# Items of one list, tuple or dict and levels of nesting walked; beyond, the preview says "…".
MAX_ITEMS = 100
MAX_DEPTH = 10
# Longest repr string (from a Celery event) parsed back into values to mask them (Celery cuts its
# argsrepr and kwargsrepr at 1024 characters); a longer one is masked in its text.
MAX_PARSE = 8192


class _Raw(str):
    """A string shown without quotes (the mask, the ellipsis)."""

    def __repr__(self) -> str:
        return str(self)


def sensitive(name: Any, words: tuple[str, ...] | None = None) -> bool:
    """Whether a value named `name` is masked (its text holds one of `words`, default
    MASKED_ARGUMENTS, case-insensitive, `-` counting as `_`). A result's rows repeat their keys:
    the answer for a short name is remembered (`_named`)."""
    words = settings.MASKED_ARGUMENTS if words is None else words
    text = name if isinstance(name, str) else str(name)
    if len(text) <= CACHED_NAME:
        return _named(text, words)
    return _holds(text, words)


CACHED_NAME = 200  # characters: a longer name is looked at each time, never kept


def _holds(text: str, words: tuple[str, ...]) -> bool:
    lowered = text.lower().replace("-", "_")
    return any(word in lowered for word in words)


_named = functools.lru_cache(maxsize=4096)(_holds)


def masked(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with the values of sensitive dict keys replaced by the mask, strings cut
    to ARGUMENT_PREVIEW characters, and collections to MAX_ITEMS items (the cut said by "…")."""
    limit = settings.ARGUMENT_PREVIEW
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:limit])
    if depth >= MAX_DEPTH and isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return _Raw("…")
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for count, (key, item) in enumerate(value.items()):
            if count >= MAX_ITEMS:
                out[_Raw("…")] = _Raw("…")
                break
            out[key] = _Raw(MASK) if sensitive(key) else masked(item, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [masked(item, depth + 1) for item in itertools.islice(value, MAX_ITEMS)]
        if len(value) > MAX_ITEMS:
            items.append(_Raw("…"))
        return tuple(items) if isinstance(value, tuple) else items
    return value


# Levels of a result walked to mask its keys; a container deeper than this is replaced by "…" (it
# could hide a secret the walk did not reach).
RESULT_DEPTH = 50


def mask_keys(value: Any, depth: int = 0) -> Any:
    """A copy of a task's result with the values of sensitive dict keys (at any depth, up to
    RESULT_DEPTH levels) replaced by the mask, as for arguments, and every string masked as text
    (`mask_text`: a result may be a repr or a message that repeats its arguments); nothing else is
    cut (the caller bounds the size). Values of other types are returned as they are."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        if depth >= RESULT_DEPTH:
            return "…"
        return {key: MASK if sensitive(key) else mask_keys(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if depth >= RESULT_DEPTH:
            return "…"
        items = [mask_keys(item, depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def mask_text(text: str) -> str:
    """`text` (the start of a result's JSON text, an error's message or traceback, a progress
    message: any text that may repeat a task's arguments or result) with the value after every
    sensitive name masked: `'api_token': 'x'`, `"password": "x"`, `token=x`, `secret: x` (a value
    ends at its closing quote, else at the next `,)}]` or line end); not cut."""
    words = settings.MASKED_ARGUMENTS
    if not mentions(words).search(text):
        return text
    return _mask_names(text, words)


def _cut(text: str) -> str:
    limit = settings.ARGUMENT_PREVIEW
    return text if len(text) <= limit else text[:limit - 1] + "…"


def preview(args: Any, kwargs: Any) -> tuple[str | None, str | None]:
    """The previews of a task's real arguments (a message body's args and kwargs): Python reprs,
    as Celery's `argsrepr` and `kwargsrepr` read, masked, at most ARGUMENT_PREVIEW characters each."""
    shown_args = None if args is None else _cut(_safe_repr(masked(tuple(args) if isinstance(args, list) else args)))
    shown_kwargs = None if kwargs is None else _cut(_safe_repr(masked(kwargs)))
    return shown_args, shown_kwargs


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a user's object whose __repr__ raises
        return f"<{type(value).__name__}>"


# A name (a quoted dict key or a keyword: a whole run of word characters and `-`, not inside one)
# then `:` or `=`. The run is taken whole (possessive): the single pattern that also required a
# sensitive word inside it backtracked through the run once per word found, quadratic in its length
# ("token" * 4000 took 2 s, a fresh user's review; the listener and every web process stopped).
# Its quotes may be escaped, as in a repr or JSON text inside a string (`\'secret\'`, `\"token\"`).
NAME = re.compile(r"""(?<![\w-])(?:\\*+['"])?([\w-]++)(?:\\*+['"])?[ \t]*[:=][ \t]*""")
# A value: a quoted string (a bytes or raw one too) to its closing quote, a value in brackets (a
# list, tuple, set or dict, as a repr or JSON writes it) to its closing bracket, else anything up to
# the next separator (PLAIN). None crosses a line: a traceback's next line is not the value.
PLAIN = re.compile(r"""[^,)}\]\n]*+""")
QUOTED = re.compile(r"""[bBrRuU]{0,2}+\\*+['"]""")
# What the scan of a quoted or bracketed value stops at: a quote with the backslashes before it,
# a bracket, a line's end.
TOKEN = re.compile(r"""(\\*+)(['"])|[\n()\[\]{}]""")
OPENERS = "([{"


def _value_end(text: str, start: int) -> int:
    """Where the value starting at `start` ends (see PLAIN and QUOTED). A string inside a string (a
    repr or JSON text in a message) has its backslashes doubled and its quotes escaped once more
    each time: a quote opened with n backslashes before it (0, 1, 3, 7: `'S1'`, `\\'S1\\'`) closes at
    the same quote with n + k * 2(n + 1) of them (0 or 2 or 4 for n = 0; 1 or 5 for n = 1), the
    others being quotes or backslashes inside it. Brackets inside quotes do not count. A value not
    closed on its line ends there: more masked, never less. One pass, the characters that matter
    found in C."""
    if text[start:start + 1] not in OPENERS or start >= len(text):
        if not QUOTED.match(text, start):
            return PLAIN.match(text, start).end()
    depth, quote, level = 0, "", 0
    for token in TOKEN.finditer(text, start):
        found = token.group()
        if found == "\n":
            return token.start()
        if token.group(2):
            slashes, char = len(token.group(1)), token.group(2)
            if not quote:
                quote, level = char, slashes
            elif char == quote and slashes >= level and (slashes - level) % (2 * level + 2) == 0:
                quote = ""
                if depth == 0:
                    return token.end()
        elif not quote:
            depth += 1 if found in OPENERS else -1
            if depth == 0:
                return token.end()
    return len(text)


def _mask_names(text: str, words: tuple[str, ...]) -> str:
    """`text` with the value after every name holding one of `words` replaced by MASK (names and
    values as NAME and `_value_end` say; a name inside a value already masked is part of it).
    Linear in the text's length."""
    holds = mentions(words).search
    out: list[str] = []
    done = 0  # text[:done] is in `out`
    for name in NAME.finditer(text):
        if name.start() < done or not holds(name.group(1)):
            continue
        out += (text[done:name.end()], MASK)
        done = _value_end(text, name.end())
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


@functools.lru_cache(maxsize=8)
def mentions(words: tuple[str, ...]) -> re.Pattern[str]:
    """A pattern found in a text when it holds one of `words` (case-insensitive, `-` as `_`): one
    search in C where lowering and scanning the text once per word took 4 passes in Python."""
    return re.compile("|".join(re.escape(word).replace("_", "[_-]") for word in words) or "(?!)", re.IGNORECASE)


def mask_repr(text: Any) -> str | None:
    """A repr string of arguments (a Celery event's `args`/`kwargs`, a message's `argsrepr`) masked
    and cut: parsed back into values where it is made of literals, else every value after a
    sensitive name is masked in the text itself."""
    if text is None:
        return None
    text = str(text)
    words = settings.MASKED_ARGUMENTS
    if not mentions(words).search(text):
        return _cut(text)  # nothing to mask (the listener's usual case: no parsing per event)
    if len(text) <= MAX_PARSE:
        try:
            return _cut(_safe_repr(masked(ast.literal_eval(text))))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return _cut(_mask_names(text[:settings.ARGUMENT_PREVIEW * 4], words))
