"""Error texts cut to their bounds (web/tracebacks.py): what was cut is said, frames stay, the bound holds."""
from __future__ import annotations

import re

import pytest

from web import tracebacks
from web.results import BackendReader

MARKER = re.compile(r"… \[([\d,]+) characters cut\] …")
TRACEBACK = ('Traceback (most recent call last):\n'
             '  File "/app/tasks/sync.py", line 30, in sync\n    push(batch)\n'
             '  File "/app/tasks/sync.py", line 12, in push\n    raise SyncError(answer)\n'
             '    ^^^^^^^^^^^^^^^^^^^^^^^\n')


def said(text: str) -> int:
    """The characters the markers in `text` say were cut, in all."""
    return sum(int(count.replace(",", "")) for count in MARKER.findall(text))


def kept(text: str) -> int:
    """The characters of `text` that are not markers (nor the line break a marker on a line of its own ends with)."""
    return len(re.sub(MARKER.pattern + r"\n?", "", text))


@pytest.mark.parametrize("length", [0, 1, 299, 300, 301, 340, 1_000, 25_000, 1_000_000])
def test_a_message_keeps_its_start_and_end_and_says_how_much_of_its_middle_was_cut(length: int) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(length))
    shown = tracebacks.cut_message(text, 300)
    if length <= 300:
        assert shown == text and not MARKER.search(shown)
        return
    assert len(shown) <= 300
    head, tail = MARKER.split(shown)[0], MARKER.split(shown)[-1]
    assert text.startswith(head) and text.endswith(tail) and len(head) > 100 and len(tail) > 100
    assert said(shown) == length - len(head) - len(tail)


@pytest.mark.parametrize("message_length", [100, 5_000, 19_000, 20_000, 40_000, 2_000_000])
def test_a_traceback_keeps_every_frame_whatever_its_message_s_length(message_length: int) -> None:
    message = "m" * (message_length - 4) + " END"
    text = TRACEBACK + f"tasks.sync.SyncError: {message}\n"
    shown = tracebacks.cut_traceback(text, 20_000)
    assert len(shown) <= 20_000
    assert shown.startswith(TRACEBACK + "tasks.sync.SyncError: mmm")  # the frames, the raise, the exception
    assert shown.endswith(" END\n")
    if len(text) <= 20_000:
        assert shown == text
    else:
        assert said(shown) == len(text) - kept(shown)


def test_the_frames_cut_in_the_middle_stay_whole_lines_and_the_message_keeps_a_quarter() -> None:
    frames = "".join(f'  File "/app/tasks/tree.py", line 5, in visit\n    visit(child_{i})\n' for i in range(2_000))
    raised_in = '  File "/app/tasks/sync.py", line 12'
    text = TRACEBACK.replace(raised_in, frames + raised_in) + "tasks.sync.SyncError: " + "x" * 50_000 + "\n"
    shown = tracebacks.cut_traceback(text, 2_000)
    assert len(shown) <= 2_000
    frames_shown, _, raised = shown.partition("tasks.sync.SyncError: ")
    assert frames_shown.startswith(TRACEBACK.partition("    push")[0])  # the head, the outermost frame
    assert frames_shown.endswith('  File "/app/tasks/sync.py", line 12, in push\n    raise SyncError(answer)\n'
                                 '    ^^^^^^^^^^^^^^^^^^^^^^^\n')
    assert all(line.startswith(("Traceback", "  File ", "    ", "…")) for line in frames_shown.splitlines())
    assert len(raised) >= 2_000 // 4 - 30 and MARKER.search(raised)
    assert said(shown) == len(text) - kept(shown)


def test_text_without_frames_is_cut_in_the_middle() -> None:
    text = "worker lost: " + "w" * 10_000
    shown = tracebacks.cut_traceback(text, 500)
    assert len(shown) <= 500 and shown.startswith("worker lost: www") and MARKER.search(shown)


def test_masking_never_takes_a_text_past_its_bound() -> None:
    """A short secret masked reads longer (********): the masked text is cut, and says so."""
    text = "token=a, " * 33  # 297 characters; 528 masked
    shown = tracebacks.cut_message(text, 300)
    assert len(shown) <= 300 and "token=a" not in shown and MARKER.search(shown)


def test_an_undecodable_result_s_reason_is_cut_saying_so() -> None:
    class Backend:
        def decode(self, raw: bytes) -> None:
            raise ValueError("cannot unpickle " + "q" * 2_000)

    reason = BackendReader(Backend()).decode(b"...")["undecodable"]
    assert len(reason) <= 300 and reason.startswith("ValueError: cannot unpickle qqq") and MARKER.search(reason)
