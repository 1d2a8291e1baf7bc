"""``_wording``: every sentence frame asyncguard writes lives there, and user text in it is
never formatted."""

from __future__ import annotations

import re
from pathlib import Path

from asyncguard import _wording

SRC = Path(_wording.__file__).parent

# phrases of the frames: they must not be spelled again anywhere else in src
FRAMES = (
    "would block the event loop",
    "blocked the event loop for",
    "the event loop was blocked for",
    "calls so far",
    "blocking calls at",
    "internal error in",
    "ran on an event-loop thread during",
    "You cannot call this from an async context",
    "is not valid:",
)


def _strings_outside_wording() -> list[tuple[Path, str]]:
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "_wording.py":
            continue
        text = path.read_text()
        # docstrings and comments may quote a message; code may not build one
        code = re.sub(r'"""(?:.|\n)*?"""', "", text)
        code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
        for phrase in FRAMES:
            if phrase in code:
                found.append((path.relative_to(SRC), phrase))
    return found


def test_sentence_frames_are_only_in_wording() -> None:
    assert _strings_outside_wording() == []


def test_user_text_with_braces_is_kept_as_it_is() -> None:
    text = _wording.violation(
        "f('{x}')", _wording.call_verb(None, offloaded=False), "a.py:1 (g)", "thread 'T'", "{y}"
    )
    assert text == "f('{x}') would block the event loop in a.py:1 (g), thread 'T' — {y}"


def test_durations() -> None:
    assert _wording.call_verb(0.0123, offloaded=False) == "blocked the event loop for 12.3 ms"
    assert _wording.call_verb(0.5, offloaded=True).startswith(
        "ran in a worker thread for 500.0 ms (offload mode)"
    )
    assert _wording.seconds(1.5) == "1.50 s"
    assert _wording.seconds(0.0015) == "1.5 ms"


def test_context_lists_what_is_known() -> None:
    assert _wording.context(None, "MainThread", None, None) == "thread 'MainThread'"
    assert _wording.context("Task-1", "T", "GET /a", "v.f") == (
        "task 'Task-1', thread 'T', request 'GET /a', view v.f"
    )


def test_stall() -> None:
    text = _wording.stall(
        0.18,
        ongoing=False,
        where="a.py:3 (f)",
        code="x()",
        samples=[("a.py:3 (f)", 5), ("a.py:4 (f)", 2)],
        sample_count=9,
        context="thread 'T'",
        hint=_wording.STALL,
    )
    assert text.startswith(
        "stall: the event loop was blocked for 180 ms in a.py:3 (f) at `x()` "
        "(5 of 9 samples; a.py:4 (f) 2), thread 'T' — move the CPU-bound"
    )


def test_test_failure_names_each_key_once() -> None:
    text = _wording.test_failure("call", 2, ["one", "two"], ["time.sleep", "time.sleep"])
    assert text.splitlines() == [
        "asyncguard: 2 blocking call(s) ran on an event-loop thread during call:",
        "  1. one",
        "  2. two",
        'Fix each call, or allow it in this test: @pytest.mark.allow_blocking("time.sleep", '
        "reason=...), or in every test: ini asyncguard_allow.",
    ]


def test_bad_value() -> None:
    assert (
        _wording.bad_value(
            "ASYNC_GUARD_MODE", "loud", "choose one of " + _wording.listed(["raise", "off"])
        )
        == "ASYNC_GUARD_MODE = 'loud' is not valid: choose one of 'raise', 'off'"
    )
