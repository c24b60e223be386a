"""The one place the tests wait in real time (issue #12 item 7; tests/test_waiting.py checks it).

A test that needs something from another thread or process to happen (a datagram received, a
process listening, a thread blocked on a fake clock) says what it waits for and how long it may
take at most; it never sleeps a fixed time and hopes. The timeout is a bound for a machine under
load, not a measurement: a wait returns as soon as its predicate holds, so a generous bound costs
nothing when all is well. Timing itself is asserted on a FakeClock, or as figures in benchmarks/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")

POLL = 0.005
"""Real seconds between looks at a predicate: short next to any bound below, long enough that
polling does not steal the core the awaited thread needs (2 cores, shared)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    state: Callable[[], object] | None = None,
) -> T:
    """The first truthy value of ``predicate()``; AssertionError after ``timeout`` seconds.

    ``what`` names the awaited thing in the failure ("3 datagrams at the relay"), and ``state``,
    if given, is called at the failure to show where things stood (a count, the last lines).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            where = "" if state is None else f"; it stood at {state()!r}"
            raise AssertionError(f"gave up waiting for {what} after {timeout} s{where}")
        time.sleep(POLL)


def let_real_time_pass(seconds: float, why: str) -> None:
    """Let ``seconds`` of real time pass, for a peer that runs on its own clock.

    Only for what no predicate can see (a JACK client's clock locking, a pause between two
    datagrams that a test wants on the wire as two bursts); ``why`` says which. It asserts
    nothing about timing.
    """
    assert why, "say why a test lets real time pass"
    end = time.monotonic() + seconds
    # The predicate holds by the deadline, and it is looked at before the timeout is.
    wait_until(lambda: time.monotonic() >= end, timeout=seconds, what=why)


def announced_port(stream: IO[str]) -> int:
    """The port an ``oscsync`` command started with ``:0`` says it took (``listening on
    HOST:PORT``, ``recording on HOST:PORT``), read from its stderr past the notices before it
    (``real-time priority: …``). RuntimeError if the stream ends first (the command failed)."""
    seen: list[str] = []
    for line in stream:
        seen.append(line)
        found = _ANNOUNCED.search(line)
        if found:
            return int(found.group(1))
    raise RuntimeError(f"no port announced: {''.join(seen)!r}")


_ANNOUNCED = re.compile(r"^(?:listening|recording) on \S*:(\d+)\s*$")
