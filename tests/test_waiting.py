"""Tests wait in real time only through tests/waiting.py (issue #12 item 7).

A fixed sleep in a test is either too short on a loaded machine (a flake) or too long everywhere
(a slow suite); the helper waits for a named condition with a bound instead, and timing itself is
asserted on a FakeClock.
"""

from __future__ import annotations

import ast
import io
import itertools
from pathlib import Path

import pytest

from waiting import announced_port, let_real_time_pass, wait_until

TESTS = Path(__file__).resolve().parent
HELPER = TESTS / "waiting.py"


def sleeps_in(source: str) -> list[int]:
    """Line numbers where ``source`` reaches ``time.sleep`` (called, passed on, or imported)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "sleep"
            and isinstance(node.value, ast.Name)
            and node.value.id == "time"
        ):
            found.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [node.lineno for alias in node.names if alias.name == "sleep"]
    return sorted(found)


def test_the_checker_finds_every_way_to_reach_time_sleep() -> None:
    source = (
        "import time\n"
        "time.sleep(0.1)\n"
        "pause = time.sleep\n"
        "from time import monotonic, sleep\n"
        "clock.sleep(1.0)\n"  # a Clock's sleep is not time.sleep (a FakeClock's is virtual)
        "event.wait(0.1)\n"
    )
    assert sleeps_in(source) == [2, 3, 4]


def test_time_sleep_appears_in_tests_only_inside_the_waiting_helper() -> None:
    offenders = {
        path.relative_to(TESTS).as_posix(): lines
        for path in sorted(TESTS.rglob("*.py"))
        if path != HELPER and (lines := sleeps_in(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, "wait with waiting.wait_until (a condition and a bound) instead"
    assert len(sleeps_in(HELPER.read_text(encoding="utf-8"))) == 1  # wait_until's poll


def test_wait_until_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_until(lambda: [n] if (n := next(counter)) >= 3 else [], what="a count") == [3]


def test_wait_until_says_what_it_waited_for_and_where_things_stood() -> None:
    with pytest.raises(AssertionError) as failure:
        wait_until(lambda: False, 0.02, "the relay to wake up", state=lambda: {"held": 3})
    assert str(failure.value) == (
        "gave up waiting for the relay to wake up after 0.02 s; it stood at {'held': 3}"
    )


def test_letting_real_time_pass_needs_a_reason() -> None:
    with pytest.raises(AssertionError, match="say why"):
        let_real_time_pass(0.0, "")
    let_real_time_pass(0.0, "nothing to wait for")  # returns at once, without an error


def test_announced_port_skips_the_notices_before_the_listening_line() -> None:
    notices = "real-time priority: granted (SCHED_FIFO 6 for the timing threads)\n"
    assert announced_port(io.StringIO(notices + "listening on 127.0.0.1:53471\n")) == 53471
    assert announced_port(io.StringIO("listening on tcp://[::1]:9\n")) == 9
    assert announced_port(io.StringIO(notices + "recording on 127.0.0.1:45840\n")) == 45840
    with pytest.raises(RuntimeError, match="no port announced"):
        announced_port(io.StringIO(notices + "Error: port in use\n"))
