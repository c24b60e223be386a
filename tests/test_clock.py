"""The clocks: SystemClock's one-time mapping, SkewedClock's arithmetic, FakeClock's modes.

FakeClock with threads (issue #12 item 7) is tested the way trio tests its MockClock: threads
sleep on it, the clock jumps, and every reading is asserted exactly. Real waiting happens only
through tests/waiting.py (until a thread is blocked on the clock), never to prove a time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

import oscsync.clock
from oscsync.clock import FakeClock, SkewedClock, SystemClock
from waiting import let_real_time_pass, wait_until

START = 1_700_000_000.0
MONO = 1000.0


def threaded(threshold: float = 0.0) -> FakeClock:
    return FakeClock(START, MONO, autojump_threshold=threshold)


class Sleeper:
    """A thread that sleeps on a clock once per step and notes the clock's time after each."""

    def __init__(self, clock: FakeClock, name: str, *steps: float) -> None:
        self.clock = clock
        self.woke: list[float] = []
        self.thread = threading.Thread(target=self._run, args=(steps,), name=name, daemon=True)
        self.thread.start()

    def _run(self, steps: tuple[float, ...]) -> None:
        for step in steps:
            self.clock.sleep(step)
            self.woke.append(self.clock.monotonic() - MONO)

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive(), f"{self.thread.name} is still sleeping"


def blocked(clock: FakeClock, count: int) -> None:
    """Wait (real time) until ``count`` threads are blocked on ``clock``."""
    wait_until(lambda: clock.waiting == count, what=f"{count} threads blocked on the clock")


# -- SystemClock ---------------------------------------------------------------------------


def test_system_clock_now_is_the_os_wall_time() -> None:
    clock = SystemClock()
    before = time.time()
    now = clock.now()
    after = time.time()
    # The mapping is off by at most its tightest bracket (µs, measured at construction) plus
    # NTP slewing since then (≤ 500 ppm of the µs since construction): 1 ms covers both.
    assert before - 0.001 <= now <= after + 0.001


def test_system_clock_maps_wall_and_monotonic_with_its_fixed_offset() -> None:
    clock = SystemClock()
    mono = clock.monotonic()
    assert clock.monotonic_to_wall(mono) == mono + clock.offset
    assert clock.wall_to_monotonic(clock.monotonic_to_wall(mono)) == pytest.approx(mono, abs=1e-6)
    assert clock.system_time_to_wall(1234.5) == 1234.5
    assert clock.moves_by_itself


def test_system_clock_sleeps_at_least_as_long_as_asked_and_never_for_nothing() -> None:
    clock = SystemClock()
    begin = clock.monotonic()
    clock.sleep(-5.0)  # a deadline already past: no sleep, no error
    clock.sleep(0.0)
    assert clock.monotonic() - begin < 1.0  # (5 s if the negative value had been slept)
    begin = clock.monotonic()
    clock.sleep(0.02)
    assert clock.monotonic() - begin >= 0.02  # a lower bound: load only makes it longer


def test_system_clock_wait_returns_whether_the_event_was_set() -> None:
    clock = SystemClock()
    event = threading.Event()
    begin = clock.monotonic()
    assert clock.wait(event, 0.02) is False
    assert clock.monotonic() - begin >= 0.02
    event.set()
    assert clock.wait(event, 30.0) is True  # at once: a set event does not wait


# -- SkewedClock ---------------------------------------------------------------------------


TICK = 2**-6
"""GetTickCount64's and GetSystemTimeAsFileTime's 15.6 ms (Windows before Python 3.13)."""


class CoarseTime:
    """A ``time`` module where ``monotonic`` and ``time`` tick every :data:`TICK` and
    ``perf_counter`` is fine, as on Windows before Python 3.13. True time moves 1 µs a call."""

    def __init__(self) -> None:
        self.t = 0.003

    def _step(self) -> float:
        self.t += 1e-6
        return self.t

    def true_wall(self) -> float:
        return START + self.t

    def monotonic(self) -> float:
        return MONO + math.floor(self._step() / TICK) * TICK

    def time(self) -> float:
        return START + math.floor(self._step() / TICK) * TICK

    def perf_counter(self) -> float:
        return 7.0 + self._step()

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def get_clock_info(self, name: str) -> SimpleNamespace:
        fine = name == "perf_counter"
        return SimpleNamespace(resolution=1e-7 if fine else TICK, monotonic=name != "time")


def test_system_clock_is_fine_where_monotonic_and_wall_time_tick_coarsely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows before Python 3.13: every reading was 15.6 ms coarse, and a process mapped wall
    time up to 15.6 ms off (two processes on one machine disagreed by that much)."""
    fake = CoarseTime()
    monkeypatch.setattr(oscsync.clock, "time", fake)
    clock = SystemClock()
    readings = [clock.monotonic() for _ in range(3)]
    assert readings[0] < readings[1] < readings[2]
    assert readings[2] - readings[0] == pytest.approx(2e-6)
    for _ in range(3):
        assert abs(clock.now() - fake.true_wall()) < 3e-6
        fake.sleep(0.01)


def test_fine_clocks_are_read_as_they_are() -> None:
    def info(resolution: float, perf_resolution: float) -> Callable[[str], SimpleNamespace]:
        return lambda name: SimpleNamespace(
            resolution=perf_resolution if name == "perf_counter" else resolution, monotonic=True
        )

    assert oscsync.clock.fine_monotonic(info(1e-9, 1e-9)) is time.monotonic
    assert oscsync.clock.fine_monotonic(info(TICK, 1e-7)) is time.perf_counter
    assert oscsync.clock.fine_monotonic(info(TICK, TICK)) is time.monotonic


def test_skewed_clock_is_ahead_by_its_skew_and_shares_the_monotonic_clock() -> None:
    base = FakeClock(START, MONO)
    skewed = SkewedClock(base, skew=0.25)
    assert skewed.now() == START + 0.25
    assert skewed.monotonic() == MONO
    base.advance(10.0)
    assert skewed.now() == START + 10.25
    assert skewed.wall_to_monotonic(START + 10.25) == MONO + 10.0


def test_skewed_clock_drift_grows_with_time_since_its_epoch() -> None:
    base = FakeClock(START, MONO)
    skewed = SkewedClock(base, skew=-0.5, drift_ppm=50.0)
    base.advance(1000.0)
    # 50 ppm of 1000 s is 50 ms, on top of the -0.5 s skew.
    assert skewed.now() == pytest.approx(START + 1000.0 - 0.5 + 0.05, abs=1e-9)
    wall = skewed.now()
    # Round trip within a few ulps of a 1.7e9 s float (2.4e-7 s each).
    assert skewed.wall_to_monotonic(wall) == pytest.approx(MONO + 1000.0, abs=1e-6)


def test_skewed_clock_passes_sleeps_and_system_times_through_its_base() -> None:
    base = FakeClock(START, MONO)
    skewed = SkewedClock(base, skew=2.0)
    skewed.sleep(0.5)
    assert base.monotonic() == MONO + 0.5  # the base moved: a wrong date does not change waits
    assert skewed.system_time_to_wall(START) is None  # the fake base has no OS time
    assert not skewed.moves_by_itself
    real = SkewedClock(SystemClock(), skew=2.0)
    assert real.system_time_to_wall(START) == pytest.approx(START + 2.0, abs=1e-6)
    assert real.moves_by_itself


# -- FakeClock, one thread -------------------------------------------------------------------


def test_fake_clock_moves_only_when_told_and_never_backwards() -> None:
    clock = FakeClock(START, MONO)
    assert (clock.now(), clock.monotonic()) == (START, MONO)
    assert clock.monotonic() == MONO  # reading it does not move it
    clock.advance(0.25)
    assert (clock.now(), clock.monotonic()) == (START + 0.25, MONO + 0.25)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.125)
    assert clock.monotonic() == MONO + 0.25
    assert not clock.moves_by_itself


def test_one_thread_fake_clock_sleeps_and_waits_by_advancing() -> None:
    clock = FakeClock(START, MONO)
    clock.sleep(0.5)
    clock.sleep(-1.0)  # nothing: a past deadline
    assert clock.monotonic() == MONO + 0.5
    event = threading.Event()
    assert clock.wait(event, 0.25) is False
    assert clock.monotonic() == MONO + 0.75
    event.set()
    assert clock.wait(event, 10.0) is True
    assert clock.monotonic() == MONO + 0.75  # a set event costs no time


@pytest.mark.parametrize("threshold", [-0.5, math.nan])
def test_fake_clock_refuses_a_threshold_that_is_not_a_duration(threshold: float) -> None:
    with pytest.raises(ValueError, match="autojump_threshold"):
        FakeClock(autojump_threshold=threshold)


# -- FakeClock, threads ----------------------------------------------------------------------


def test_threaded_fake_clock_without_autojump_waits_for_advance() -> None:
    clock = threaded(math.inf)
    sleeper = Sleeper(clock, "sleeper", 0.5)
    blocked(clock, 1)
    clock.advance(0.25)
    assert sleeper.woke == [] and clock.waiting == 1  # not yet: 0.25 of 0.5
    clock.advance(0.25)
    sleeper.join()
    assert sleeper.woke == [0.5]
    assert clock.jumps == 0


def test_autojump_leaps_to_the_deadline_when_the_only_thread_sleeps() -> None:
    clock = threaded()
    clock.sleep(3600.0)  # an hour, in no real time at all
    assert clock.monotonic() == MONO + 3600.0
    assert clock.jumps == 1


def test_autojump_waits_its_threshold_of_real_time_before_jumping() -> None:
    clock = threaded(0.2)
    began = time.monotonic()
    clock.sleep(5.0)
    assert time.monotonic() - began >= 0.2  # a lower bound: load only makes it longer
    assert clock.monotonic() == MONO + 5.0 and clock.jumps == 1


def test_autojump_wakes_sleepers_in_deadline_order_at_exact_times() -> None:
    clock = threaded()
    late = Sleeper(clock, "late", 0.75)
    early = Sleeper(clock, "early", 0.25, 0.25)  # wakes at 0.25, sleeps again until 0.5
    blocked(clock, 2)
    clock.sleep(1.0)  # the test thread takes part: the clock jumps only once it is blocked
    late.join()
    early.join()
    assert early.woke == [0.25, 0.5]
    assert late.woke == [0.75]
    assert clock.monotonic() == MONO + 1.0
    assert clock.jumps == 4  # 0.25, 0.5, 0.75, 1.0: one jump per distinct deadline


def test_autojump_waits_while_a_taking_part_thread_runs() -> None:
    clock = threaded()
    sleeper = Sleeper(clock, "sleeper", 0.5)
    blocked(clock, 1)
    # The test thread made the clock and has not blocked on it: no jump, however long.
    let_real_time_pass(0.05, "the sleeper's poll looks at the jump condition ~50 times")
    assert clock.monotonic() == MONO and sleeper.woke == []
    clock.sleep(0.5)
    sleeper.join()
    assert sleeper.woke == [0.5]


def test_autojump_does_not_pass_a_waiter_whose_event_was_set() -> None:
    clock = threaded()
    event = threading.Event()
    woke_at: list[tuple[bool, float]] = []

    def waiter() -> None:
        woke_at.append((clock.wait(event, 10.0), clock.monotonic() - MONO))

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    blocked(clock, 1)
    # Set, then blocked at once: for a moment both threads are in a wait, but the waiter is
    # about to run (its event is set), so the clock must not jump to the test thread's deadline.
    event.set()
    clock.sleep(5.0)
    thread.join(10)
    assert woke_at == [(True, 0.0)]  # woken by the event, at the time it was set
    assert clock.monotonic() == MONO + 5.0 and clock.jumps == 1


def test_a_wait_with_no_timeout_is_never_jumped_to() -> None:
    clock = threaded()
    event = threading.Event()
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(clock.wait(event, None)), daemon=True)
    thread.start()
    blocked(clock, 1)
    clock.sleep(2.0)  # the only finite deadline: the jump goes there, not to "forever"
    assert clock.monotonic() == MONO + 2.0 and results == []
    event.set()
    thread.join(10)
    assert results == [True]


def made_by_a_thread_that_ended() -> FakeClock:
    """A threaded clock the test thread does not take part in (it may watch it run)."""
    made: list[FakeClock] = []
    maker = threading.Thread(target=lambda: made.append(threaded()))
    maker.start()
    maker.join()
    return made[0]


def test_an_enlisted_thread_holds_autojump_until_it_waits() -> None:
    clock = made_by_a_thread_that_ended()
    gate = threading.Event()

    timer = threading.Thread(target=gate.wait, args=(10,), daemon=True)  # work before a wait
    clock.enlist(timer)
    sleeper = Sleeper(clock, "sleeper", 1.0)
    blocked(clock, 1)
    timer.start()
    let_real_time_pass(0.05, "the sleeper's poll looks at the jump condition ~50 times")
    assert clock.jumps == 0 and sleeper.woke == []  # the enlisted thread still runs
    gate.set()
    sleeper.join()  # the timer ended: it no longer takes part, and the clock jumps
    assert sleeper.woke == [1.0]
    assert clock.jumps == 1


def test_a_thread_that_ended_no_longer_holds_autojump() -> None:
    clock = made_by_a_thread_that_ended()  # its maker was a participant, and ended
    sleeper = Sleeper(clock, "sleeper", 0.5)
    sleeper.join()
    assert sleeper.woke == [0.5]
