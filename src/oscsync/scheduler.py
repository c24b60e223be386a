"""The timetag scheduler: run each action at its OSC timetag, on one timer thread, bounded.

OSC 1.0 asks a receiver to hold a bundle whose timetag is in the future and to run its messages
"at" that time; a bundle that is due or late, and a plain message, run at once. python-osc's
``strict_timing`` does this by sleeping inside the handler, so with its blocking server one bundle
0.5 s ahead delays everything behind it, and with its threading server every held bundle is a
sleeping thread (python-osc issue #110 ends in out-of-memory). Here instead:

* one **heap** of ``(key, seq, item)`` entries (``seq`` from a counter, so equal times keep their
  submission order, as in CPython's ``sched``); a lock covers the heap operations only, never an
  action;
* one **timer thread** (:meth:`Scheduler.start`) sleeps until ``spin`` seconds before the earliest
  due time, then spins on the monotonic clock for the last stretch: a sleep overshoots by 0.1-0.3 ms
  (and by over 1 ms at the 99th percentile when other processes load the CPUs), a spin lands
  within a few µs. The entry is popped before the spin, so only the call is left after it. A
  submission that becomes the new earliest entry wakes the thread so it re-plans. The spinning
  thread keeps the GIL: a datagram arriving in the last ``spin`` seconds before a due item is
  decoded right after that item runs (so at most ``spin`` later), which keeps the receive thread
  from taking the GIL away at the due moment;
* **real-time priority** where the command asked for it (``oscsync --realtime``,
  :mod:`oscsync.realtime`): the timer thread asks on itself as it starts; granted, it spins
  :data:`~oscsync.realtime.RT_SPIN` (its waits end within ~150 µs even with every core busy),
  gives way between due items, and rests when it has run too long without blocking (a flood of
  due items must not lock a core), and Python's switch interval equals that spin, so the thread
  gets the GIL from a busy receive thread before its due time and keeps it until then;
* :meth:`Scheduler.run_due` is the thread's step, public so tests drive the scheduler on a
  :class:`~oscsync.clock.FakeClock` without any thread or sleep.

**Time.** A timetag is wall time (NTP). :meth:`Scheduler.submit` turns it into a monotonic deadline
once, with :meth:`Clock.wall_to_monotonic <oscsync.clock.Clock.wall_to_monotonic>`: a
:class:`~oscsync.clock.SystemClock` measured ``wall - monotonic`` at start-up, so the deadline is
``unix_seconds(timetag) - offset``, and it stays valid however long the wait (a monotonic clock
does not jump). Everything after that, waiting and measuring lateness, is monotonic.

**Order and lateness.** Actions run on the timer thread one after another, in due order (with
``inline_due``, an item already due may run on the thread that submits it instead: still one
action at a time and in due order, see :class:`Scheduler`). An
action that takes long is not hidden: the next item simply runs later, and its lateness
(dispatch time − due time) is recorded. Items already due when submitted (plain messages,
``IMMEDIATELY``, past timetags) are keyed by their submission time, so they run in arrival order
and never wait behind a held bundle.

**Bounds.** At most ``max_items`` entries wait for a future time (items already due may add as
many again, so a heap full of far bundles never blocks a plain message), and a timetag more than
``horizon`` seconds ahead is refused; each refusal is counted by reason and warned about once.
Items are capped in **bytes** too: a submitter declares what an item holds (``size``: e.g. the
message's :func:`~oscsync.osc.codec.footprint`), and at most ``max_bytes`` are held waiting (twice
that with items already due). Counting items alone let six 65 KB datagrams that decoded into
528 MB each hold 3 GB in ``dump --schedule`` (issue 20, item 1).
Lateness percentiles come from a fixed-size ring of the most recent samples. Nothing grows with
traffic.

Use::

    scheduler = Scheduler(clock, on_warning=app.warn)
    scheduler.start()
    tag = timetag.add_seconds(clock.now_timetag(), 0.25)
    scheduler.submit(tag, lambda d: play(at=clock.monotonic_to_wall(d.due)))
    ...
    scheduler.close()  # held items are discarded; nothing runs after this returns

With a one-thread :class:`~oscsync.clock.FakeClock` do not :meth:`~Scheduler.start` the thread
(its waits return at once); call :meth:`~Scheduler.run_due` after each ``advance`` instead. A
threaded one (``FakeClock(autojump_threshold=0)``) runs the thread in virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from oscsync import threads
from oscsync.clock import Clock, SystemClock, system_clock
from oscsync.lateness import LATE_THRESHOLD
from oscsync.osc import timetag as tt
from oscsync.realtime import RT_SPIN, Breather, give_way
from oscsync.stats import RecentSamples, WarnOnce, percentile

DEFAULT_SPIN = 0.002
"""Seconds spent spinning before a due time. Event.wait overshoots by 0.1-0.3 ms at the median on
the 2-core workshop VM and by up to 1.5-3 ms under load from other processes (measured with
benchmarks/scheduler.py); 2 ms of spin per held item covers all but that tail at a small CPU cost
(a 10 Hz metronome spins 2 % of one core). More spin does not buy back the tail: a thread that
spins longer is also more likely to be preempted."""

# What is left of the lateness tail on the 2-core VM (benchmarks/scheduler.py "causes", quiet,
# issue 18): not the GIL (a 1 ms switch interval changed nothing) and not the spin's own clock
# reads (a lone spinning thread ends within 0.1 µs at p99), but another task waking at the due
# moment and taking the spinner's CPU: with the bundle sender waking right at the due times the
# spin ended 150-250 µs late at p50/p99 in some runs, with its wake-ups 5 ms away 0.1 µs.
DEFAULT_MAX_ITEMS = 10_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
"""Declared bytes held at most (waiting items): 500 full 64 KB datagrams' worth of messages, far
more than any musical schedule needs, and small next to a laptop's memory."""
DEFAULT_HORIZON = 60.0
DEFAULT_LATE_TOLERANCE = LATE_THRESHOLD
"""Lateness up to this many seconds is not counted as late: the one threshold of
:mod:`oscsync.lateness` (1 ms). A late item submitted after its due time *arrived late*; one
submitted before it *played late* (this machine ran it late)."""

LATENESS_SAMPLES = 4096
"""Size of the ring of recent lateness samples the percentiles come from."""

REHEARSE_LEAD = 0.00005
"""Seconds before its due time that an item's rehearsal runs (the second time; the first is at
the start of the spin). On the 2-core VM, formatting a dump line right after a 2 ms spin took
13 µs at the median and 36 µs at p99 (caches gone cold during the sleep and not kept warm by
the spin); rehearsed at the spin's start 4.9 / 25 µs, 50 µs before the due time 2.3 / 4.2 µs
(issue 18; benchmarks/scheduler.py's "causes" section measures it)."""


class SchedulerClosed(RuntimeError):
    """The scheduler was used after :meth:`Scheduler.close`."""


class Dispatch(NamedTuple):
    """What an action learns when it runs: when it was due and when it actually ran.

    A named tuple (immutable), made between the end of the spin and the action's call: half
    what a frozen dataclass costs there (0.22 vs 0.5 µs; issue 18).

    ``due`` and ``dispatched`` are monotonic seconds on the scheduler's clock (turn them into wall
    time with ``clock.monotonic_to_wall``); ``dispatched`` is the reading taken just before the
    action was called. ``timetag`` is the NTP timetag it was submitted with,
    or None for an immediate item (plain message or ``IMMEDIATELY``), whose ``due`` is the moment
    it was submitted.
    """

    timetag: int | None
    due: float
    dispatched: float
    late: bool = False

    @property
    def lateness(self) -> float:
        """Seconds between the due time and the dispatch (0 or more: never early)."""
        return self.dispatched - self.due


Action = Callable[[Dispatch], None]
Rehearsal = Callable[[Dispatch], None]
"""The work of an action without its effect (format the line, do not write it): run on the timer
thread before the due time so that the action's code and data are in the CPU's caches when it
runs (:data:`REHEARSE_LEAD`). It receives the Dispatch the action would get if it ran exactly on
time; what it returns is ignored, and an exception from it is counted as an error."""
WarningHandler = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LatePolicy:
    """What to do with a timed item that is late: keep it (run now) or drop it beyond a bound.

    ``drop_after`` None keeps every late item (OSC 1.0: run it at once, count it late); a number
    of seconds drops items later than that, counted as dropped for reason ``late``.
    """

    drop_after: float | None = None

    def __post_init__(self) -> None:
        if self.drop_after is not None and not self.drop_after >= 0:
            raise ValueError(f"late drop bound must be 0 or more seconds, got {self.drop_after}")

    def __str__(self) -> str:
        if self.drop_after is None:
            return "keep"
        return f"drop:{self.drop_after * 1000:g}ms"


KEEP = LatePolicy()


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot of a scheduler's counters; lateness figures in seconds (None before any)."""

    submitted: int
    dispatched: int
    late: int
    """Dispatched more than ``late_tolerance`` after the due time: arrived_late + played_late."""
    dropped: dict[str, int]
    held: int
    errors: int
    lateness_p50: float | None
    lateness_p99: float | None
    lateness_max: float | None
    arrived_late: int = 0
    """Late items that were submitted (arrived) already past their due time."""

    @property
    def played_late(self) -> int:
        """Late items that were submitted in time: this machine ran them late."""
        return self.late - self.arrived_late

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        """One line for a person, e.g. at the end of ``oscsync dump --schedule``."""
        text = (
            f"scheduler: {self.dispatched} dispatched, {self.arrived_late} arrived late, "
            f"{self.played_late} played late"
        )
        if self.dropped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.dropped.items()))
            text += f", {self.dropped_total} dropped ({reasons})"
        else:
            text += ", 0 dropped"
        if self.errors:
            text += f", {self.errors} handler errors"
        if self.lateness_max is not None:
            text += (
                f"; lateness p50 {_us(self.lateness_p50)} p99 {_us(self.lateness_p99)} "
                f"max {_us(self.lateness_max)}"
            )
        return text


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f} µs"


@dataclass(slots=True)
class _Item:
    due: float
    timetag: int | None
    action: Action
    size: int = 0
    rehearsal: Rehearsal | None = None


@dataclass(slots=True)
class _Counters:
    submitted: int = 0
    dispatched: int = 0
    late: int = 0
    arrived_late: int = 0
    errors: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    lateness: RecentSamples = field(default_factory=lambda: RecentSamples(LATENESS_SAMPLES))


def _ignore(_: str) -> None:
    pass


class Scheduler:
    """Hold actions until their timetag and run them in order on one timer thread.

    ``spin`` is how long before a due time the thread stops sleeping and starts spinning.
    ``max_items`` caps the entries waiting for a future time, ``max_bytes`` the bytes they
    declare (``submit(..., size=)``), and ``horizon`` refuses timetags further ahead than that
    many seconds. ``late_policy`` decides whether late timed items run
    or are dropped, and ``late_tolerance`` how late an item must be to be counted late.
    ``on_warning`` is called once per kind of trouble (cap reached, horizon exceeded, late
    items dropped, an action raised) with one line of text.

    With ``inline_due`` an item already due when it is submitted (a plain message, a late
    bundle) runs at once on the submitting thread (the receive thread) instead of waking the
    timer thread, whose wake-up is most of a plain message's head-of-line delay (issue 18) — but
    only when nothing else is due or being run, so actions still run in due order, and one at a
    time (an action lock), though no longer all on the timer thread.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        spin: float = DEFAULT_SPIN,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        horizon: float = DEFAULT_HORIZON,
        late_policy: LatePolicy = KEEP,
        late_tolerance: float = DEFAULT_LATE_TOLERANCE,
        on_warning: WarningHandler = _ignore,
        inline_due: bool = False,
    ) -> None:
        if spin < 0 or horizon < 0 or late_tolerance < 0:
            raise ValueError("spin, horizon and late_tolerance must be 0 or more seconds")
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.clock = clock if clock is not None else SystemClock()
        self.spin = spin
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.horizon = horizon
        self.late_policy = late_policy
        self.late_tolerance = late_tolerance
        self._warn_once = WarnOnce(on_warning)
        self._heap: list[tuple[float, int, _Item]] = []
        self._held_bytes = 0  # declared sizes of the heap's items and the one in hand
        self._seq = itertools.count()
        self._lock = threading.Lock()  # the heap and _closed
        self._stats_lock = threading.Lock()  # every counter and the lateness ring
        self._counters = _Counters()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # The entry the timer thread has popped and is spinning towards; still "held".
        self._in_hand: tuple[float, int, _Item] | None = None
        self.inline_due = inline_due
        # Actions popped and not finished yet (under _lock); with inline_due, the lock that
        # keeps actions from running on two threads at once.
        self._running = 0
        self._action_lock = threading.Lock() if inline_due else None
        self.realtime: bool | None = None
        """Whether the timer thread was granted real-time priority (``oscsync --realtime``,
        :mod:`oscsync.realtime`); None until it has asked."""
        self._breather: Breather | None = None

    # -- submitting ------------------------------------------------------------------------

    def submit(
        self,
        timetag: int | None,
        action: Action,
        size: int = 0,
        rehearsal: Rehearsal | None = None,
    ) -> bool:
        """Run ``action`` at ``timetag`` (None or ``IMMEDIATELY``: as soon as possible).

        ``size`` is what the item holds in bytes until it runs (what the action keeps alive, e.g.
        a received message): anything that holds data from the network must declare it, since
        the ``max_bytes`` cap only sees declared bytes. ``rehearsal`` (see :data:`Rehearsal`)
        runs during the spin before a held item's due time, twice; never for an item already due.
        Returns False when the item is refused (scheduler closed, a cap reached, beyond the
        horizon, or already later than the late policy allows); refusals are counted by reason.
        """
        clock = self.clock
        now = clock.monotonic()
        if timetag is None or timetag == tt.IMMEDIATELY:
            due, stamp = now, None
        else:
            # Read in the era nearest now (RFC 5905 §6): right across the 2036 rollover.
            wall = tt.to_unix(timetag, clock.monotonic_to_wall(now))
            due, stamp = clock.wall_to_monotonic(wall), timetag
        with self._lock:
            if self._closed:
                return False
            refusal = self._refusal(due, stamp, now, size)
            inline = None
            if refusal is None:
                # Already-due items are keyed by arrival so they keep arrival order (and never
                # queue behind each other by how late they were).
                key = due if due > now else now
                head = self._heap[0][0] if self._heap else math.inf
                hand = self._in_hand[0] if self._in_hand is not None else math.inf
                earliest = key < head and key < hand
                if self.inline_due and due <= now < head and now < hand and not self._running:
                    inline = _Item(due, stamp, action, 0)  # nothing due before it: run it here
                    self._running += 1
                else:
                    self._held_bytes += size
                    heapq.heappush(
                        self._heap,
                        (key, next(self._seq), _Item(due, stamp, action, size, rehearsal)),
                    )
        with self._stats_lock:
            self._counters.submitted += 1
            if refusal is not None:
                self._counters.dropped[refusal] += 1
        if refusal is not None:
            self._warn_refusal(refusal)
            return False
        if inline is not None:
            try:
                # Submitted at ``now``: it arrived late if its due time had passed by then.
                self._dispatch(inline, clock.monotonic(), now > due)
            finally:
                with self._lock:
                    self._running -= 1
            return True
        if earliest:
            self._wake.set()  # the timer thread is sleeping towards a later entry: re-plan
        return True

    def call_at(self, timetag: int | None, function: Callable[..., object], *args: Any) -> bool:
        """Call ``function(*args)`` on the timer thread at ``timetag`` (None or
        :data:`~oscsync.osc.timetag.IMMEDIATELY`: as soon as possible).

        What it returns is ignored; an exception is counted (``errors``) and warned about once.
        Returns False when the call is refused (see :meth:`submit`).

        >>> import oscsync
        >>> clock = oscsync.FakeClock()
        >>> scheduler = oscsync.Scheduler(clock)
        >>> heard = []
        >>> scheduler.call_at(oscsync.add_seconds(clock.now_timetag(), 0.5), heard.append, "now")
        True
        >>> scheduler.run_due(), heard          # not due yet: 0.5 s to wait
        (0.5, [])
        >>> clock.advance(0.5)
        >>> scheduler.run_due(), heard
        (None, ['now'])
        """

        def call(_: Dispatch) -> None:
            function(*args)

        return self.submit(timetag, call)

    def _refusal(self, due: float, stamp: int | None, now: float, size: int) -> str | None:
        if stamp is not None:
            ahead = due - now
            if ahead > self.horizon:
                return "horizon"
            bound = self.late_policy.drop_after
            if bound is not None and -ahead > bound:
                return "late"
        # The cap is for items that wait. An item already due runs at once, so a heap full of
        # far-future bundles must not block it (python-osc #110's failure mode); it only meets
        # the outer bound, which stops a stalled timer thread from letting the heap grow.
        waiting = due > now
        if len(self._heap) >= (self.max_items if waiting else 2 * self.max_items):
            return "cap"
        if self._held_bytes + size > (self.max_bytes if waiting else 2 * self.max_bytes):
            return "cap-bytes"
        return None

    def _warn_refusal(self, reason: str) -> None:
        if reason == "horizon":
            self._warn_once(
                reason,
                f"refused a bundle timetagged more than {self.horizon:g} s ahead "
                "(clocks far apart? see --horizon); counting further ones silently",
            )
        elif reason == "cap":
            self._warn_once(
                reason,
                f"{self.max_items} items already held: refusing more until some are dispatched",
            )
        elif reason == "cap-bytes":
            self._warn_once(
                reason,
                f"{self.max_bytes} bytes already held: refusing more until some are dispatched",
            )
        else:
            self._warn_late_drop()

    def _warn_late_drop(self) -> None:
        self._warn_once(
            "late",
            f"dropping bundles that are late by more than the policy allows ({self.late_policy})",
        )

    # -- dispatching -----------------------------------------------------------------------

    def run_due(self) -> float | None:
        """Run every item that is due now; return seconds until the next one (None if empty).

        Each item is popped under the lock and run outside it, so an action may submit more.
        An action that raises is counted (``errors``) and warned about once, never propagated.
        """
        next_due = self._run_due()
        if next_due is None:
            return None
        return max(0.0, next_due - self.clock.monotonic())

    def _run_due(self) -> float | None:
        """:meth:`run_due`, returning the next entry's key (monotonic seconds) instead."""
        clock = self.clock
        breather = self._breather if threading.current_thread() is self._thread else None
        if breather is not None and not breather.enabled:
            # An ordinary thread keeps the GIL from one due item to the next: given away, it
            # comes back only after a busy thread's switch interval (5 ms).
            breather = None
        first = True
        while True:
            if breather is not None and not first:
                # A real-time thread between two due items: let a thread of its priority run
                # (and take the GIL), and rest if it has not blocked for a while (a flood of
                # due items must not lock a core).
                give_way()
                breather.check()
            first = False
            with self._lock:
                if self._closed or not self._heap:
                    return None
                key = self._heap[0][0]
                now = clock.monotonic()
                if key > now:
                    return key
                key, _, item = heapq.heappop(self._heap)
                self._held_bytes -= item.size
                self._running += 1
            try:
                # The key of an item already due when submitted is its submission time: it
                # arrived late if that was past its due time (no field per held item for it).
                self._dispatch(item, clock.monotonic(), key > item.due)
            finally:
                with self._lock:
                    self._running -= 1

    def _dispatch(self, item: _Item, now: float, arrived_late: bool = False) -> None:
        # Bookkeeping waits until after the action: right after a sleep the interpreter's
        # caches are cold (other processes ran), and every step between the clock reading and
        # the call measured ~7 µs here.
        lock = self._action_lock
        if lock is not None and not lock.acquire(blocking=False):
            lock.acquire()  # an inline action is running: this one runs after it, measured so
            now = self.clock.monotonic()
        try:
            self._dispatch_locked(item, now, arrived_late)
        finally:
            if lock is not None:
                lock.release()

    def _dispatch_locked(self, item: _Item, now: float, arrived_late: bool) -> None:
        lateness = now - item.due
        timed = item.timetag is not None
        bound = self.late_policy.drop_after
        if timed and bound is not None and lateness > bound:
            with self._stats_lock:
                self._counters.dropped["late"] += 1
            self._warn_late_drop()
            return
        late = timed and lateness > self.late_tolerance
        failure = None
        try:
            item.action(Dispatch(item.timetag, item.due, now, late))
        except Exception as exc:
            failure = exc
        self._account(timed, lateness, late, failure, arrived_late)

    def _account(
        self,
        timed: bool,
        lateness: float,
        late: bool,
        failure: Exception | None,
        arrived_late: bool = False,
    ) -> None:
        """Count a dispatched item (after its action ran: the counting waits, the call not)."""
        counters = self._counters
        with self._stats_lock:
            counters.dispatched += 1
            counters.errors += failure is not None
            if timed:
                counters.lateness.add(lateness)
                counters.late += late
                counters.arrived_late += late and arrived_late
        if failure is not None:
            self._warn_once("error", f"a scheduled action failed: {failure!r}")

    # -- the timer thread ------------------------------------------------------------------

    def start(self) -> None:
        """Start the timer thread (daemon); without it, call :meth:`run_due` yourself."""
        if self._closed:
            raise SchedulerClosed("scheduler is closed")
        if self._thread is not None:
            raise RuntimeError("scheduler already started")
        self._thread = threads.daemon_thread(self._loop, name="oscsync-scheduler")
        self.clock.enlist(self._thread)  # a FakeClock does not jump past its first wait
        threads.start(self._thread)

    def _loop(self) -> None:
        clock = self.clock
        wake = self._wake
        # A fake clock stands still while this thread spins, so there it waits the whole way
        # (a threaded FakeClock's autojump lands the wait exactly on the due time).
        spin = self.spin if clock.moves_by_itself else 0.0
        # Real-time priority where the process installed a promoter (oscsync --realtime): a
        # promoted thread wakes within ~150 µs even when both cores are busy, so it spins less,
        # and it rests when it has run for long without blocking (oscsync.realtime.Breather).
        self.realtime = granted = threads.promote(threads.TIMER)
        if granted:
            spin = min(spin, RT_SPIN)
        breather = self._breather = Breather(clock, enabled=granted)
        # 1 µs timer slack for this thread's waits (Linux; elsewhere nothing): Event.wait
        # overshot by p50 147 / p99 1157 µs at 50 µs slack and 87 / 150 µs at 1 µs on the
        # 2-core VM at load 0.8 (benchmarks/scheduler.py "causes"), so a wait overshooting the
        # whole spin, which makes an item late, becomes rarer. It costs no CPU time.
        clock.sharpen_waits()
        while not self._closed:
            # Cleared before looking at the heap: a submit after this point sets it again, so
            # the wait below returns at once and the new entry is planned for.
            wake.clear()
            next_due = self._run_due()
            if self._closed:
                return
            if next_due is None:
                started = clock.monotonic()
                clock.wait(wake, None)
                breather.waited(started)
                continue
            started = clock.monotonic()
            remaining = next_due - started
            if remaining > spin:
                clock.wait(wake, remaining - spin)
                breather.waited(started)
                continue
            breather.check()  # before a spin: a real-time thread that ran long rests first
            entry = self._take_head()
            if entry is None:
                continue
            if not self._spin_and_run(entry):
                return

    def _spin_and_run(self, entry: tuple[float, int, _Item]) -> bool:
        """Spin until the popped ``entry`` is due and run it, or put it back when woken (an
        earlier item came); False when the scheduler was closed meanwhile."""
        # Everything but the call is done before the spin. After a sleep the caches are cold:
        # each step between the spin's end and the action cost 1-2 µs here, so there is only
        # the Dispatch and the call when no inline action lock or late-drop bound is in the
        # way (issue 18, benchmarks/scheduler.py "causes").
        due, _, item = entry
        action, timetag, rehearsal = item.action, item.timetag, item.rehearsal
        direct = timetag is None or self.late_policy.drop_after is None
        action_lock = self._action_lock
        tolerance = self.late_tolerance
        # Dispatch(...) runs NamedTuple's __new__, a Python function: one more cold frame after
        # the spin. tuple.__new__ builds the same tuple (spin end to the action's first line:
        # p50 2.5 -> 1.9 µs, p99 9 -> 7 µs, alternating runs at load 0.8).
        new_tuple = tuple.__new__
        on_time = Dispatch(timetag, due, due)
        monotonic, is_set = self.clock.monotonic, self._wake.is_set
        if rehearsal is not None:
            # Twice: at the start of the spin, which pays for the cold caches, and once more
            # REHEARSE_LEAD before the due time, which leaves them warm for the call.
            self._rehearse(rehearsal, on_time)
            ready = due - REHEARSE_LEAD
            while monotonic() < ready:
                if is_set():
                    break
            else:
                self._rehearse(rehearsal, on_time)
        while (now := monotonic()) < due:
            if is_set():  # an earlier item, or close(): put it back and re-plan
                self._put_back(entry)
                return not self._closed
        if self._closed:
            self._put_back(entry)  # counts it as dropped "closed"
            return False
        if direct and (action_lock is None or action_lock.acquire(blocking=False)):
            late = timetag is not None and now - due > tolerance
            failure = None
            try:
                action(new_tuple(Dispatch, (timetag, due, now, late)))
            except Exception as exc:
                failure = exc
            finally:
                if action_lock is not None:
                    action_lock.release()
            self._account(timetag is not None, now - due, late, failure)
        else:
            self._dispatch(item, now)  # waits for an inline action, or may drop it
        self._release_hand()
        return True

    def _rehearse(self, rehearsal: Rehearsal, dispatch: Dispatch) -> None:
        try:
            rehearsal(dispatch)
        except Exception as exc:
            with self._stats_lock:
                self._counters.errors += 1
            self._warn_once("rehearsal", f"a scheduled action's rehearsal failed: {exc!r}")

    def _take_head(self) -> tuple[float, int, _Item] | None:
        with self._lock:
            if self._closed or not self._heap:
                return None
            entry = heapq.heappop(self._heap)
            self._in_hand = entry
            return entry

    def _put_back(self, entry: tuple[float, int, _Item]) -> None:
        with self._lock:
            self._in_hand = None
            if self._closed:
                self._held_bytes -= entry[2].size
                closed = True
            else:
                closed = False
                heapq.heappush(self._heap, entry)  # same key and seq: same place in the order
        if closed:
            with self._stats_lock:
                self._counters.dropped["closed"] += 1

    def _release_hand(self) -> None:
        with self._lock:
            if self._in_hand is not None:
                self._held_bytes -= self._in_hand[2].size
            self._in_hand = None

    # -- stopping and reporting ------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> None:
        """Stop: held items are discarded (counted as dropped ``closed``), nothing runs after.

        Returns as soon as the timer thread has finished the action it may be running (waiting
        at most ``timeout`` seconds for it). Safe to call twice, and from inside an action.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            discarded = len(self._heap)
            self._held_bytes -= sum(entry[2].size for entry in self._heap)
            self._heap.clear()
        if discarded:
            with self._stats_lock:
                self._counters.dropped["closed"] += discarded
        self._wake.set()
        thread = self._thread
        # is_alive() is False for a thread whose start() was interrupted (Ctrl-C, SIGTERM):
        # joining that one would raise, and it exits at once anyway since _closed is set.
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def held(self) -> int:
        """Entries waiting in the heap right now."""
        with self._lock:
            return len(self._heap) + (self._in_hand is not None)

    @property
    def held_bytes(self) -> int:
        """Declared bytes of the entries held right now."""
        with self._lock:
            return self._held_bytes

    def stats(self) -> SchedulerStats:
        """A consistent snapshot of the counters and lateness percentiles."""
        held = self.held
        with self._stats_lock:
            c = self._counters
            samples = list(c.lateness.samples)
            maximum = c.lateness.maximum
            snapshot = SchedulerStats(
                submitted=c.submitted,
                dispatched=c.dispatched,
                late=c.late,
                arrived_late=c.arrived_late,
                dropped=dict(c.dropped),
                held=held,
                errors=c.errors,
                lateness_p50=None,
                lateness_p99=None,
                lateness_max=None,
            )
        if not samples:
            return snapshot
        samples.sort()  # outside the lock: the timer thread must not wait for a sort
        return replace(
            snapshot,
            lateness_p50=percentile(samples, 0.50),
            lateness_p99=percentile(samples, 0.99),
            lateness_max=maximum,
        )

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- waiting for a timetag in the calling thread or coroutine --------------------------------------


def _due(clock: Clock, timetag: int) -> float:
    """``timetag`` as a monotonic deadline on ``clock`` (read in the era nearest now)."""
    if timetag == tt.IMMEDIATELY:
        return clock.monotonic()
    return clock.wall_to_monotonic(tt.to_unix(timetag, clock.now()))


def _sleep_until_due(clock: Clock, due: float, spin: float) -> float:
    remaining = due - clock.monotonic()
    if remaining > spin:
        clock.sleep(remaining - spin)
    if clock.moves_by_itself:
        while clock.monotonic() < due:  # the last stretch: a sleep would overshoot it
            pass
    else:
        clock.sleep(due - clock.monotonic())  # a fake clock: the sleep is the jump
    return clock.monotonic() - due


def sleep_until(timetag: int, *, clock: Clock | None = None, spin: float = DEFAULT_SPIN) -> float:
    """Block the calling thread until ``timetag``; return how late it woke (seconds, 0 or more).

    It sleeps until ``spin`` seconds before, then spins on the monotonic clock, as the
    :class:`Scheduler`'s timer thread does: a plain sleep overshoots by 0.1-3 ms. A timetag in
    the past returns at once. ``clock`` defaults to the process's system clock.

    >>> import oscsync
    >>> clock = oscsync.FakeClock()
    >>> later = oscsync.add_seconds(clock.now_timetag(), 0.25)
    >>> oscsync.sleep_until(later, clock=clock)
    0.0
    >>> clock.now_timetag() == later
    True
    """
    clock = clock or system_clock()
    return _sleep_until_due(clock, _due(clock, timetag), spin)


ASYNCIO_SLACK = 0.002
"""Seconds an asyncio timer may overshoot (its loop wakes on a selector timeout in ms): the
coroutine wakes this much before the spin starts."""


async def sleep_until_async(
    timetag: int, *, clock: Clock | None = None, spin: float = DEFAULT_SPIN
) -> float:
    """Wait in a coroutine until ``timetag``; return how late it woke (seconds, 0 or more).

    The event loop sleeps until ``spin`` seconds before (plus :data:`ASYNCIO_SLACK`), then a
    worker thread of the loop's default executor spins for the last stretch, so the loop is free
    while it waits; the coroutine resumes when the loop next runs (tens of µs on an idle loop).
    On a clock that does not move by itself (a :class:`~oscsync.clock.FakeClock`) the whole wait
    is the clock's.
    """
    clock = clock or system_clock()
    due = _due(clock, timetag)
    loop = asyncio.get_running_loop()
    if clock.moves_by_itself:
        early = due - clock.monotonic() - spin - ASYNCIO_SLACK
        if early > 0:
            await asyncio.sleep(early)
    await loop.run_in_executor(None, _sleep_until_due, clock, due, spin)
    return max(0.0, clock.monotonic() - due)
