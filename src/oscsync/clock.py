"""Clocks: every reading of time in oscsync goes through a :class:`Clock`.

Two time scales matter to a timetag receiver:

* **wall time** (:meth:`Clock.now`, Unix-epoch seconds) is what timetags speak: a sender writes
  "play at 20:06:02.500 UTC" and the receiver compares that with its own idea of the date;
* **monotonic time** (:meth:`Clock.monotonic`) is what a thread can safely wait on: it never jumps
  when NTP steps the system clock.

:class:`SystemClock` maps the two **once**, at construction, and afterwards derives wall time from
the monotonic clock (``now() == monotonic() + offset``). A scheduler can therefore turn a timetag
into a monotonic deadline with one subtraction, and that deadline stays valid while it waits.
The price is that a step of the system clock (NTP correcting a wrong date) is not seen by a
running process; for sessions of minutes to hours that is the right trade,
and it is what makes waits exact.

:class:`SkewedClock` makes one machine play two whose clocks disagree (``--clock-skew``,
``--clock-drift``); :class:`FakeClock` is for tests: time moves only when told to, so no test sleeps
to prove timing (after trio's ``MockClock``).

This is the only module in the package that calls ``time.time``, ``time.monotonic``,
``time.perf_counter`` or ``time.sleep``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from oscsync.osc import timetag


class Clock(ABC):
    """A source of wall and monotonic time, and a way to wait on the latter."""

    @property
    def moves_by_itself(self) -> bool:
        """Whether :meth:`monotonic` advances while nobody waits (not a fake clock's): only then
        can a thread busy-wait on it (the scheduler's last-stretch spin)."""
        return True

    @abstractmethod
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (origin arbitrary)."""

    @abstractmethod
    def wall_to_monotonic(self, wall: float) -> float:
        """The monotonic reading at which :meth:`now` will read ``wall``."""

    @abstractmethod
    def monotonic_to_wall(self, mono: float) -> float:
        """The wall reading that corresponds to the monotonic reading ``mono``."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` of monotonic time."""

    def now(self) -> float:
        """Unix-epoch seconds (UTC), as this process believes them to be."""
        return self.monotonic_to_wall(self.monotonic())

    def now_timetag(self) -> int:
        """The current time as an NTP timetag."""
        return timetag.from_unix(self.now())

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set."""
        return event.wait(timeout)

    def sharpen_waits(self) -> bool:
        """Ask the OS to end the calling thread's timed waits as close to their deadline as it
        can (Linux: timer slack 1 µs instead of 50 µs); True if it did. A thread that must wake
        on time (a timer thread) calls it once; it costs a few more wake-ups' worth of power."""
        return False

    def enlist(self, thread: threading.Thread) -> None:
        """Say that ``thread`` (started or about to be) will wait on this clock.

        Only a threaded :class:`FakeClock` cares: it does not autojump while an enlisted thread
        runs, so a timer thread that has not reached its first wait yet is not jumped past.
        """
        return None  # a real clock moves by itself: nobody needs to know who waits on it

    def system_time_to_wall(self, system_time: float) -> float | None:
        """This clock's wall reading for a reading of the OS real-time clock, or None.

        For stamps the OS took itself (kernel receive timestamps, ``SO_TIMESTAMPNS``). None means
        this clock has no such mapping (a fake clock): read :meth:`now` instead. The mapping
        assumes the OS clock did not step since; :class:`KernelStamps` checks that it holds.
        """
        return None

    def system_clock_step(self) -> float | None:
        """Seconds the OS real-time clock has moved against this clock's wall time since it
        was made (a step by NTP or a user), or None when this clock does not follow the OS's."""
        return None


FINE_RESOLUTION = 1e-6
"""A clock that ticks more coarsely than this (seconds) cannot time music: see
:func:`fine_monotonic`."""
COARSE_WALL_RESOLUTION = 1e-3
"""A wall clock that ticks more coarsely than this is mapped at one of its ticks
(:func:`offset_at_wall_tick`)."""
WALL_TICK_WAIT = 0.05
"""Seconds :func:`offset_at_wall_tick` waits for the wall clock to tick, at most."""


def fine_monotonic(clock_info: Callable[[Any], Any] | None = None) -> Callable[[], float]:
    """The monotonic clock to read: ``time.monotonic``, unless it ticks more coarsely than
    :data:`FINE_RESOLUTION` and ``time.perf_counter``, monotonic too, is finer. Windows before
    Python 3.13 is such a platform (CPython gh-88494): ``time.monotonic`` is GetTickCount64, which
    moves every 15.6 ms, ``time.perf_counter`` QueryPerformanceCounter (system-wide since 3.10)."""
    info: Callable[[Any], Any] = clock_info or time.get_clock_info
    coarse = info("monotonic").resolution
    if coarse > FINE_RESOLUTION:
        perf = info("perf_counter")
        if perf.monotonic and perf.resolution < coarse:
            return time.perf_counter
    return time.monotonic


def offset_at_wall_tick(
    read: Callable[[], float], wall: Callable[[], float], wait: float = WALL_TICK_WAIT
) -> float:
    """Wall minus monotonic seconds, for a wall clock that ticks coarsely (Windows before Python
    3.13: ``time.time`` moves every 15.6 ms). Its reading is the time of its last tick, so a
    bracket says nothing finer than a tick; the moment it changes is known to a loop's step:
    this spins until it does (one tick, or ``wait`` seconds, at most)."""
    first = wall()
    previous = read()
    deadline = previous + wait
    while True:
        now_wall = wall()
        now = read()
        if now_wall != first:
            return now_wall - (previous + now) / 2
        if now > deadline:  # a wall clock that does not move: what it says now
            return now_wall - now
        previous = now


class SystemClock(Clock):
    """The machine's clocks, with wall time mapped onto the monotonic clock once.

    The monotonic clock is the finest the platform offers (:func:`fine_monotonic`), and a coarse
    wall clock is mapped at one of its ticks: on Windows before Python 3.13 both moved every
    15.6 ms, so every wait, lateness and clock sample was that coarse and two processes on one
    machine mapped wall time up to 15.6 ms apart.
    """

    def __init__(self) -> None:
        self._monotonic = fine_monotonic()
        self._offset = self._measure_offset(self._monotonic)

    @staticmethod
    def _measure_offset(read: Callable[[], float], samples: int = 7) -> float:
        if time.get_clock_info("time").resolution > COARSE_WALL_RESOLUTION:
            return offset_at_wall_tick(read, time.time)
        # Read wall between two monotonic readings and keep the tightest bracket, so a thread
        # switch in the middle of one sample does not bias the mapping.
        best_gap = float("inf")
        best = 0.0
        for _ in range(samples):
            before = read()
            wall = time.time()
            after = read()
            if after - before < best_gap:
                best_gap = after - before
                best = wall - (before + after) / 2
        return best

    @property
    def offset(self) -> float:
        """Wall minus monotonic seconds, fixed at construction."""
        return self._offset

    def monotonic(self) -> float:
        return self._monotonic()

    def wall_to_monotonic(self, wall: float) -> float:
        return wall - self._offset

    def monotonic_to_wall(self, mono: float) -> float:
        return mono + self._offset

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def sharpen_waits(self) -> bool:
        # Linux lets a timed wait end up to the thread's "timer slack" late (50 µs by default)
        # so that wake-ups can be merged. Measured with Event.wait on the shared 2-core VM
        # (load 2.3): overshoot p50 90-96 µs, p90 131-195 µs at 50 µs slack; 27-41 µs and
        # 49-64 µs at 1 µs.
        return _set_timer_slack(TIMER_SLACK_NS)

    def system_time_to_wall(self, system_time: float) -> float | None:
        # The same time scale as now(), up to a step of the system clock since construction.
        return system_time

    def system_clock_step(self) -> float | None:
        return time.time() - self.now()


_SYSTEM_CLOCK: SystemClock | None = None
_SYSTEM_CLOCK_LOCK = threading.Lock()


def system_clock() -> SystemClock:
    """The process's shared :class:`SystemClock` (made on first use): what the public API reads
    when it is given no clock, so that every object in a script maps wall time onto the
    monotonic clock the same way."""
    global _SYSTEM_CLOCK
    with _SYSTEM_CLOCK_LOCK:
        if _SYSTEM_CLOCK is None:
            _SYSTEM_CLOCK = SystemClock()
        return _SYSTEM_CLOCK


def now_timetag() -> int:
    """The system clock now, as an NTP timetag (``oscsync.now()``)."""
    return system_clock().now_timetag()


TIMER_SLACK_NS = 1000
_PR_SET_TIMERSLACK = 29  # linux/prctl.h


def _set_timer_slack(nanoseconds: int) -> bool:
    """prctl(PR_SET_TIMERSLACK) for the calling thread; False where there is no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # no libc symbols (a static build): waits stay as they are
        return False


class SkewedClock(Clock):
    """A clock that disagrees with ``base`` on purpose: ``skew`` s ahead, drifting ``drift_ppm``.

    Wall time reads ``base_wall + skew + drift_ppm·1e-6·(base_wall − epoch)``, where ``epoch`` is
    the base's wall time at construction (or ``epoch``, given). The monotonic clock (what waits
    use) is the base's,
    untouched: a wrong date does not change how long a wait takes.
    """

    def __init__(
        self,
        base: Clock,
        skew: float = 0.0,
        drift_ppm: float = 0.0,
        *,
        epoch: float | None = None,
    ) -> None:
        self._base = base
        self.skew = skew
        self.drift_ppm = drift_ppm
        # A lab that maps onsets back onto the base clock in another process gives the epoch.
        self._epoch = base.now() if epoch is None else epoch

    def monotonic(self) -> float:
        return self._base.monotonic()

    def monotonic_to_wall(self, mono: float) -> float:
        wall = self._base.monotonic_to_wall(mono)
        return wall + self.skew + self.drift_ppm * 1e-6 * (wall - self._epoch)

    def wall_to_monotonic(self, wall: float) -> float:
        rate = 1.0 + self.drift_ppm * 1e-6
        base_wall = (wall - self.skew + self.drift_ppm * 1e-6 * self._epoch) / rate
        return self._base.wall_to_monotonic(base_wall)

    @property
    def moves_by_itself(self) -> bool:
        return self._base.moves_by_itself

    def sleep(self, seconds: float) -> None:
        self._base.sleep(seconds)

    def enlist(self, thread: threading.Thread) -> None:
        self._base.enlist(thread)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return self._base.wait(event, timeout)

    def sharpen_waits(self) -> bool:
        return self._base.sharpen_waits()

    def system_time_to_wall(self, system_time: float) -> float | None:
        wall = self._base.system_time_to_wall(system_time)
        if wall is None:
            return None
        return wall + self.skew + self.drift_ppm * 1e-6 * (wall - self._epoch)

    def system_clock_step(self) -> float | None:
        return self._base.system_clock_step()


class FakeClock(Clock):
    """Deterministic time for tests: it moves only when told to (after trio's ``MockClock``).

    Two ways to use it:

    * **One thread** (``autojump_threshold=None``, the default): ``sleep`` and ``wait`` do not
      block, they advance the clock by the requested time (``wait`` returns at once if the event
      is already set). Code under test runs at full speed and every reading is exact. Do not give
      such a clock to code that waits on it from several threads: each sleep would add up.
    * **Threads** (``autojump_threshold`` a number of real seconds, or ``math.inf``): ``sleep``
      and ``wait`` block the calling thread until the clock reaches their deadline (or the event
      is set). Time moves through :meth:`advance` and, unless the threshold is infinite, by
      *autojump*: once every thread that takes part (the thread that made the clock, threads
      :meth:`enlist`-ed by their owners (the scheduler's, the clock-sync pinger's), and every
      thread that has slept or waited on it, while alive) is blocked in a ``sleep`` or
      ``wait`` whose event is not set, and has been for ``autojump_threshold`` real seconds, the
      clock jumps to the earliest deadline among them. A scheduler thread, a pinger and the test
      thread then run in virtual time: nothing really waits for a timetag, and every reading is
      exact. 0 jumps as soon as everyone is blocked; a few milliseconds leave threads that do not
      take part (a socket's receive thread handing a datagram over) the time to act first. Like
      trio's, the threshold cannot see work in flight outside the clock: a test that sends a
      datagram should wait (in real time) until it is received before it sleeps on this clock.
      A thread that takes part and then blocks elsewhere (a join, a socket) holds the clock still.

    Pick a ``start`` and steps that are exact binary fractions (0.5, 0.25, ...) and assertions
    can use ``==``.
    """

    @property
    def moves_by_itself(self) -> bool:
        return False

    _POLL = 0.001
    """Real seconds between looks at a waited-on event (``Event.set`` notifies nobody else) and at
    the autojump condition."""

    def __init__(
        self,
        start: float = 1_700_000_000.0,
        monotonic_start: float = 1000.0,
        *,
        autojump_threshold: float | None = None,
    ) -> None:
        if autojump_threshold is not None and not autojump_threshold >= 0:  # NaN too
            raise ValueError(f"autojump_threshold must be 0 or more seconds ({autojump_threshold})")
        self._mono = monotonic_start
        self._offset = start - monotonic_start
        self.autojump_threshold = autojump_threshold
        self._changed = threading.Condition()  # guards everything below; notified when time moves
        self._participants: set[threading.Thread] = {threading.current_thread()}
        self._waiters: dict[threading.Thread, tuple[float, threading.Event | None]] = {}
        self._quiet_since = time.monotonic()  # real time of the last wait begun or ended
        self.jumps = 0
        """How many times autojump moved the clock (tests of the clock assert it)."""

    @property
    def threaded(self) -> bool:
        """Whether ``sleep`` and ``wait`` block (an ``autojump_threshold`` was given)."""
        return self.autojump_threshold is not None

    @property
    def waiting(self) -> int:
        """How many threads are blocked in :meth:`sleep` or :meth:`wait` right now."""
        with self._changed:
            return len(self._waiters)

    def enlist(self, thread: threading.Thread) -> None:
        with self._changed:
            self._participants.add(thread)

    def monotonic(self) -> float:
        with self._changed:
            return self._mono

    def wall_to_monotonic(self, wall: float) -> float:
        return wall - self._offset

    def monotonic_to_wall(self, mono: float) -> float:
        return mono + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward; moving backwards is an error (time does not do that)."""
        if seconds < 0:
            raise ValueError(f"FakeClock cannot go backwards ({seconds} s)")
        with self._changed:
            self._mono += seconds
            self._changed.notify_all()

    def sleep(self, seconds: float) -> None:
        if not self.threaded:
            if seconds > 0:
                self.advance(seconds)
            return
        self._block(seconds, None)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        if event.is_set():
            return True
        if not self.threaded:
            if timeout is not None:
                self.advance(max(0.0, timeout))
            return event.is_set()
        self._block(timeout, event)
        return event.is_set()

    def _block(self, timeout: float | None, event: threading.Event | None) -> None:
        me = threading.current_thread()
        with self._changed:
            deadline = math.inf if timeout is None else self._mono + max(0.0, timeout)
            self._participants.add(me)
            self._waiters[me] = (deadline, event)
            self._quiet_since = time.monotonic()
        try:
            while True:
                with self._changed:
                    if self._mono >= deadline or (event is not None and event.is_set()):
                        return
                    self._autojump()
                    if self._mono >= deadline:
                        return
                    if event is None:
                        self._changed.wait(self._POLL)
                        continue
                event.wait(self._POLL)
        finally:
            with self._changed:
                del self._waiters[me]
                self._quiet_since = time.monotonic()

    def _autojump(self) -> None:
        """Jump to the earliest deadline if every participant is blocked (lock held)."""
        threshold = self.autojump_threshold
        if threshold is None or threshold == math.inf:
            return
        # A thread enlisted before its start() has no ident yet: it counts as running.
        self._participants = {t for t in self._participants if t.ident is None or t.is_alive()}
        if not self._participants <= self._waiters.keys():
            return  # someone is running: it may still change what the others wait for
        earliest = math.inf
        for deadline, event in self._waiters.values():
            if deadline <= self._mono or (event is not None and event.is_set()):
                return  # due or woken, and not yet back: let it run first
            earliest = min(earliest, deadline)
        if earliest == math.inf or time.monotonic() - self._quiet_since < threshold:
            return
        self._mono = earliest
        self.jumps += 1
        self._changed.notify_all()


STAMP_CHECK_EVERY = 8
"""A kernel stamp is checked against the clock once in this many datagrams (and every one while
stamps are being re-anchored): a check reads the clock (0.2 µs), so a flood of 100,000
datagrams a second pays 2.5 ms a second for it."""
STAMP_FUTURE_TOLERANCE = 0.001
"""A stamp later than the clock read just after it, by more than this, is on another clock:
nothing arrives in the future."""
STAMP_MAX_AGE = 1.0
"""A stamp older than this, twice in a row, is on another clock too: a receive thread behind by
a second twice is rare, and a wrong re-anchor corrects itself at the next stamp."""


class KernelStamps:
    """Places the kernel's receive stamps on a :class:`Clock`'s wall scale, and keeps them there
    when the two stop agreeing (issue #27 item 16).

    The kernel stamps a datagram (``SO_TIMESTAMPNS``) on the OS real-time clock; the process's
    clock is another one whenever the OS clock stepped since it started (NTP after a laptop
    slept, a user setting the time: :class:`SystemClock` keeps its own scale, by design) or
    when the process runs on a clock that is not the kernel's (libfaketime, a test rig for two
    machines). Then every stamp is off by the difference: every clock pong looked as if it
    came back before its ping was sent, and ``oscsync clock`` said "no answer" while every
    pong arrived.

    So a stamp is compared, now and then, with the clock read just after it was received (it
    can only be a little earlier): one from the future, or older than :data:`STAMP_MAX_AGE` on
    two stamps in a row (the first of them is taken as read, late rather than early), means the
    scales disagree, and the difference is learnt: from then on
    every stamp is checked and moved onto the clock's scale, the correction lowered whenever a
    stamp would land after the clock read (so it settles on the smallest delay between the
    kernel's stamp and the read, tens of µs, not on the first one seen). A correction that
    comes back to under :data:`STAMP_FUTURE_TOLERANCE` ends; checks go back to one in
    :data:`STAMP_CHECK_EVERY`. ``on_reanchor(correction, system_step)`` hears of each new
    correction (``system_step``: :meth:`Clock.system_clock_step`, to tell a stepped OS clock
    from a process on another clock).
    """

    def __init__(
        self,
        clock: Clock,
        on_reanchor: Callable[[float, float | None], None] | None = None,
        *,
        check_every: int = STAMP_CHECK_EVERY,
    ) -> None:
        self.clock = clock
        self.on_reanchor = on_reanchor
        self.check_every = check_every
        self.correction = 0.0
        """Seconds added to every stamp (0 while the scales agree)."""
        self.reanchors = 0
        self.countdown = 0
        """Stamps to take as they are before the next check (when :attr:`correction` is 0).
        A hot loop may keep its own copy: :meth:`check` sets it, and it is read back after."""
        self._old_once: float | None = None
        self._lock = threading.Lock()  # a UDP endpoint and its TCP listener may share one

    def place(self, stamp: float) -> float:
        """``stamp`` (a kernel stamp already on the clock's scale by its own reckoning) on
        the clock's scale as it really is."""
        self.countdown -= 1
        if self.countdown > 0 and not self.correction:
            return stamp
        return self.check(stamp)

    def check(self, stamp: float) -> float:
        """:meth:`place` with the check done now (what :meth:`place` does when it is due)."""
        with self._lock:
            self.countdown = self.check_every
            now = self.clock.now()
            placed = stamp + self.correction
            lag = now - placed
            moved = 0.0
            if lag < (0.0 if self.correction else -STAMP_FUTURE_TOLERANCE):
                moved = lag  # from the future: the correction comes down to this stamp
            elif lag > STAMP_MAX_AGE:
                old_once = self._old_once
                self._old_once = lag
                if old_once is None:
                    # Once: a stall of this thread, or another clock. The next stamp tells;
                    # this one is taken as read now (late is harmless, 5 s early is not).
                    self.countdown = 1
                    return now
                moved = min(lag, old_once)
            else:
                self._old_once = None
            if not moved:
                return placed
            self._old_once = None
            before = self.correction
            self.correction += moved
            if abs(self.correction) < STAMP_FUTURE_TOLERANCE:
                self.correction = 0.0
            correction = self.correction
            # A correction settling (lowered by the µs of a quicker read) is not news.
            news = abs(correction - before) >= STAMP_FUTURE_TOLERANCE
            if news:
                self.reanchors += 1
        if news and self.on_reanchor is not None:
            self.on_reanchor(correction, self.clock.system_clock_step())
        return stamp + correction
