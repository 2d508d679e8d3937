"""Error texts within their bounds: a traceback that keeps its frames, a message cut in the middle,
each saying in the text how many characters were cut ("… [12,345 characters cut] …").

A traceback is cut as two parts: its frames (from "Traceback (most recent call last):" to the last
frame, the place it was raised) and the raised exception's own line with its message. A long
message takes at most what the frames leave, and never less than a quarter of the bound; each part
too long for its share keeps its start and its end, and says how much of its middle was cut.

Texts are masked as arguments are (MASKED_ARGUMENTS) as they are cut: each kept piece is masked
reading back to its line's start, at most CONTEXT characters, so that a value whose name was cut
off is still masked. A piece never grows by masking: the bound holds for the masked text.
"""
from __future__ import annotations

from collections.abc import Callable

from celery_dashboard.arguments import mask_text

CUT = "… [{:,} characters cut] …"
# How far back masking reads for the name of a value a kept piece starts inside (characters): at
# 0.3 µs a character, a text of any length costs at most about (bound + 2 * CONTEXT) * 0.3 µs.
CONTEXT = 10_000
# A frame's first line in Python's traceback text: `  File "/app/tasks.py", line 8, in run`.
FRAME = '\n  File "'

Piece = tuple[int, int] | str  # a span of the text kept, or a marker saying what was cut
Pieces = Callable[[str, int], list[Piece]]


def cut_message(text: str, limit: int, mask: bool = True) -> str:
    """`text` in at most `limit` characters (at least 40): the whole of it, or its start and its end
    around CUT saying how many characters were cut; masked (MASKED_ARGUMENTS) unless `mask` is False
    (a text masked already)."""
    return _bounded(text, limit, mask, _message_pieces)


def cut_traceback(text: str, limit: int, mask: bool = True) -> str:
    """A Python traceback's text in at most `limit` characters (at least 160): the whole of it, or
    its frames and the raised exception's line each kept whole or cut in the middle with CUT (see
    the module's docstring); masked unless `mask` is False."""
    return _bounded(text, limit, mask, _traceback_pieces)


def _bounded(text: str, limit: int, mask: bool, pieces: Pieces) -> str:
    if len(text) <= limit:
        if not mask:
            return text
        masked = mask_text(text)
        # A short value masked reads longer (********): cut the masked text, which needs no masking.
        return masked if len(masked) <= limit else _bounded(masked, limit, False, pieces)
    return "".join(piece if isinstance(piece, str) else _masked(text, *piece, mask)
                   for piece in pieces(text, limit))


def _message_pieces(text: str, limit: int) -> list[Piece]:
    return _middle(text, 0, len(text), limit)


def _traceback_pieces(text: str, limit: int) -> list[Piece]:
    raised = raised_at(text)
    own = len(text) - raised  # the exception's line, its message and anything after it
    share = min(own, max(limit - raised, limit // 4))
    return [*_middle(text, 0, raised, limit - share), *_middle(text, raised, len(text), share)]


def raised_at(text: str) -> int:
    """Where the raised exception's own line starts in a traceback's `text`: after its last frame
    line and that frame's indented lines (source, ^^^ markers); 0 when it shows no frame."""
    last = text.rfind(FRAME)
    if last < 0:
        return 0
    end = text.find("\n", last + 1)
    while end >= 0 and text.startswith(" ", end + 1):
        end = text.find("\n", end + 1)
    return len(text) if end < 0 else end + 1


def _middle(text: str, start: int, end: int, budget: int) -> list[Piece]:
    """text[start:end] in `budget` characters: the whole span, or its start and end with a marker
    saying how many characters between them were cut. The cut falls on line breaks when one is near,
    the marker then on a line of its own, so that frames stay whole lines."""
    if end - start <= budget:
        return [(start, end)] if end > start else []
    room = max(0, budget - len(CUT.format(end - start)) - 1)  # the marker's longest form, and a line break
    head, tail = start + room // 2, end - (room - room // 2)
    near = room // 4
    newline = text.rfind("\n", max(start, head - near), head)
    if newline >= start:
        head = newline + 1
    newline = text.find("\n", tail, tail + near)
    if 0 <= newline < end:
        tail = newline + 1
    marker = CUT.format(tail - head) + ("\n" if text[tail - 1] == "\n" else "")
    return [(start, head), marker, (tail, end)]


def _masked(text: str, start: int, end: int, mask: bool) -> str:
    """text[start:end], masked as it reads in `text` when `mask` (see the module's docstring); never
    longer than the span."""
    if not mask or start == end:
        return text[start:end]
    context = max(text.rfind("\n", 0, start) + 1, start - CONTEXT)
    masked = mask_text(text[context:end])
    return masked[:end - start] if context == start else masked[-(end - start):]
