"""``oscsync replay``: send a recording (or a pcap capture) again, with its timing.

Each datagram is sent at its recorded offset from the start of the replay (divided by
``speed``), through a :class:`~oscsync.scheduler.Scheduler`: one timer thread that sleeps, then
spins for the last :data:`SPIN` seconds, so on an idle machine intervals come out within
microseconds of the recorded ones, where liblo's ``oscsendfile`` does a ``usleep`` per datagram.
The file is read twice, lazily: a first pass (:func:`plan`) checks every line (a bad file fails
before anything is sent) and measures the selection; the second feeds the scheduler a little
ahead of time (at most ``lookahead`` seconds and ``max_ahead`` datagrams, see :class:`Replayer`),
so memory does not grow with the file.

Time zero of the replay is ``--from`` if given, else the first selected datagram: a datagram
recorded at ``m`` seconds leaves at ``start + (m - zero) / speed``. A loop lasts ``--to - zero``
when ``--to`` is given, else the selection's span plus its mean interval (a regular stream keeps
its rhythm across the seam).

Timetags (``--timetags``): ``keep`` sends the bytes as recorded (bundles keep their old, now
past, timetags); ``shift`` moves every bundle timetag (nested ones too; "immediately" stays) by
how far the replay moved that datagram (send time − recorded arrival), so a bundle recorded
50 ms ahead of its arrival is again 50 ms ahead; ``strip`` sends each message as a plain
datagram, without its bundle.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from oscsync.apps.receiving import SendingSession, SessionSetup
from oscsync.clock import Clock
from oscsync.files.recording import Datagram
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.scheduler import LATENESS_SAMPLES, Dispatch, Scheduler
from oscsync.stats import RecentSamples

TimetagMode = Literal["keep", "shift", "strip"]
TIMETAG_MODES: tuple[TimetagMode, ...] = ("keep", "shift", "strip")
LEAD = 0.05
"""Seconds between starting and the first send: the scheduler is fed before anything is due."""
DEFAULT_LOOKAHEAD = 0.25
DEFAULT_MAX_AHEAD = 1000
"""Datagrams handed to the scheduler ahead of their time, at most: 1000 is 1 s at the 1,000 msg/s
goal, 20 ms at 50,000 msg/s; well below the scheduler's cap (10,000)."""
DEFAULT_MAX_AHEAD_BYTES = 4 << 20
"""...and bytes: 1000 datagrams of 64 KiB would otherwise hold 64 MB."""
MIN_LOOP = 0.001
REFILL_MARGIN = 0.0003
"""Reading ahead stops when the next send is this close: one line takes ~20-50 µs to read."""
MAX_REFILL_WAIT = 10.0
SPIN = 0.0002 if sys.platform.startswith("linux") else 0.0005
"""The scheduler's spin before each send, far shorter than its 2 ms default. At 1,000 msg/s sends
are 0.5-1.5 ms apart: a 2 ms spin keeps a core 100 % busy, and a busy thread is the one the OS
preempts on a loaded machine (measured on the shared 2-core VM, load ~2: p99 send lateness
3-11 ms with 2 ms, 0.2-2 ms with 0.5 ms); it also holds the CPU a receiver on this machine needs
(see give_way). On Linux the scheduler's timer thread asks for 1 µs timer slack
(Clock.sharpen_waits), which brought Event.wait's overshoot to p50 27-41 µs, p90 49-64 µs at
load 2.3 (from 90-96 and 131-195 µs), so 0.2 ms covers it; elsewhere 0.5 ms as before."""


_SCHED_YIELD: Callable[[], None] | None = getattr(os, "sched_yield", None)


def give_way() -> None:
    """Let a thread this send has just woken run now, before this one reads on or spins.

    A datagram to this machine wakes its receiver inside ``sendto``, and Linux often places the
    woken receiver on the sender's CPU (a "sync" wake-up: the waker is expected to sleep soon).
    liblo's ``oscsendfile`` does sleep; the replay thread instead read the next lines and often
    spun towards the next send, so the receiver waited for the CPU: measured on loopback at
    1,000 msg/s on a quiet machine, sends left on time (kernel receive stamps: interval error
    p99 0.03 ms) but the receiving process saw them up to the spin later (p99 0.55 ms). With
    this and the shorter SPIN, the receiver's wake-up after the kernel stamp went from p90
    129 µs to 68 µs at 1,000 msg/s and from 202 µs to 77 µs at 100 msg/s (medians of 14 runs
    each at load ~1.7; benchmarks/record_replay.py prints both views). ``sched_yield`` costs
    ~1.5 µs. Not on Windows (no ``sched_yield``): there it does nothing.
    """
    if _SCHED_YIELD is not None:
        _SCHED_YIELD()


class _Skipped:
    """The type of :data:`SKIPPED`."""


SKIPPED = _Skipped()
_END = object()


class ReplayError(ValueError):
    """An address pattern (``--filter``) that cannot be read."""


# -- what is sent -----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def address_matcher(pattern: str) -> Callable[[str], bool]:
    """OSC 1.0 address pattern matching: ``?``, ``*`` (within one part), ``[a-z]``, ``[!a]``,
    ``{foo,bar}``; ``//`` matches any number of parts (OSC 1.1)."""
    if not pattern.startswith("/"):
        raise ReplayError(f"an OSC address pattern starts with '/': {pattern!r}")
    regex, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("//", i):
            regex.append("/(?:[^/]*/)*")
            i += 2
            continue
        if ch == "*":
            regex.append("[^/]*")
        elif ch == "?":
            regex.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ReplayError(f"unclosed '[' in {pattern!r}")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            escaped = "".join("\\" + c if c in "\\^[]" else c for c in body)
            regex.append(f"[{'^' if negate else ''}{escaped}]")
            i = end + 1
            continue
        elif ch == "{":
            end = pattern.find("}", i + 1)
            if end < 0:
                raise ReplayError(f"unclosed '{{' in {pattern!r}")
            choices = pattern[i + 1 : end].split(",")
            regex.append("(?:" + "|".join(re.escape(c) for c in choices) + ")")
            i = end + 1
            continue
        else:
            regex.append(re.escape(ch))
        i += 1
    compiled = re.compile("".join(regex))
    return lambda address: compiled.fullmatch(address) is not None


def _bundle_spans(data: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_bundle) of the datagram and every element inside it, outermost first.

    ValueError for a bundle whose element sizes do not fit it: a recording keeps malformed
    datagrams on purpose, and an element size of 0xFFFFFFF0 made the walk read ~10^9 empty
    "elements" past the end (issue 27, item 10). Each element takes 4 bytes or more of
    ``data``, so the walk is bounded by its length.
    """
    stack = [(0, len(data))]
    while stack:
        start, end = stack.pop()
        if data[start : start + 1] == b"/":
            yield start, end, False
            continue
        if end - start < 16 or not data.startswith(codec.BUNDLE_PREFIX, start):
            raise ValueError("an element is neither a message nor a bundle")
        yield start, end, True
        pos = start + 16
        children = []
        while pos < end:
            size = int.from_bytes(data[pos : pos + 4], "big", signed=True)
            if pos + 4 > end or size <= 0 or size % 4 or pos + 4 + size > end:
                raise ValueError(f"a bundle element size of {size} does not fit")
            children.append((pos + 4, pos + 4 + size))
            pos += 4 + size
        stack.extend(reversed(children))  # keep the order they were written in


def shift_timetags(data: bytes, seconds: float) -> bytes | None:
    """``data`` with every bundle timetag (nested too) moved by ``seconds``; "immediately" and
    0 stay, and so does every other byte. None when ``data`` is a bundle whose elements do not
    fit: there is nothing sure to shift (it is sent as recorded, and counted)."""
    if not codec.is_bundle(data):
        return data
    out = bytearray(data)
    try:
        spans = list(_bundle_spans(data))
    except ValueError:
        return None
    for start, _, is_bundle in spans:
        if not is_bundle:
            continue
        tag = int.from_bytes(data[start + 8 : start + 16], "big")
        if tag in (0, tt.IMMEDIATELY):
            continue
        with contextlib.suppress(ValueError):  # moved outside the NTP era: left as recorded
            out[start + 8 : start + 16] = tt.to_bytes(tt.add_seconds(tag, seconds))
    return bytes(out)


def plain_messages(data: bytes) -> list[bytes]:
    """The bytes of each message in a datagram, in order, outside their bundles."""
    return [data[start:end] for start, end, is_bundle in _bundle_spans(data) if not is_bundle]


# -- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which datagrams of a file are replayed."""

    start: float | None = None  # --from: seconds since the recording started
    end: float | None = None  # --to
    pattern: str | None = None  # --filter: an OSC address pattern
    destination_port: int | None = None  # --port: captures hold traffic to several ports

    def takes_time(self, datagram: Datagram) -> bool:
        if self.start is not None and datagram.offset < self.start:
            return False
        if self.end is not None and datagram.offset >= self.end:
            return False
        port = self.destination_port
        return port is None or datagram.destination.endswith(f":{port}")


@dataclass
class Plan:
    """What the first pass measured: how many datagrams, from when to when."""

    count: int = 0
    first: float = 0.0
    last: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)

    def zero(self, selection: Selection) -> float:
        return selection.start if selection.start is not None else self.first

    def period(self, selection: Selection) -> float:
        zero = self.zero(selection)
        if selection.end is not None:
            return max(selection.end - zero, MIN_LOOP)
        mean_gap = (self.last - self.first) / (self.count - 1) if self.count > 1 else 0.0
        return max(self.last + mean_gap - zero, MIN_LOOP)


def outgoing(
    datagrams: Iterable[Datagram],
    selection: Selection,
    mode: TimetagMode,
    skipped: Counter[str] | None = None,
) -> Iterator[tuple[Datagram, tuple[bytes, ...]] | None]:
    """The selected datagrams with the packets each one becomes (one, or its messages), and
    None for each datagram left out: a reader can stop between any two lines of the file."""
    skipped = skipped if skipped is not None else Counter()
    match = address_matcher(selection.pattern) if selection.pattern else None
    for datagram in datagrams:
        if not selection.takes_time(datagram):
            yield None
            continue
        needs_decoding = match is not None or mode != "keep"
        if not needs_decoding:
            yield datagram, (datagram.data,)
            continue
        try:
            messages = codec.decode(datagram.data)
        except codec.DecodeError:
            if match is not None or mode == "strip":
                skipped["not-osc"] += 1  # no address to match, no message to strip
                yield None
                continue
            yield datagram, (datagram.data,)
            continue
        if mode == "strip":
            parts = plain_messages(datagram.data)
            if match is not None:
                parts = [p for p, m in zip(parts, messages) if match(m.address)]
            if parts:
                yield datagram, tuple(parts)
            else:
                skipped["filtered"] += 1
                yield None
            continue
        if match is not None and not any(match(m.address) for m in messages):
            skipped["filtered"] += 1
            yield None
            continue
        yield datagram, (datagram.data,)


def plan(datagrams: Iterable[Datagram], selection: Selection, mode: TimetagMode) -> Plan:
    """The first pass: reads everything (so a bad line fails now), keeps only counts."""
    result = Plan()
    for found in outgoing(datagrams, selection, mode, result.skipped):
        if found is None:
            continue
        datagram = found[0]
        if result.count == 0:
            result.first = datagram.offset
        result.last = max(result.last, datagram.offset)
        result.count += 1
    return result


# -- sending ----------------------------------------------------------------------------------


@dataclass
class ReplayStats:
    datagrams: int = 0
    packets: int = 0
    bytes: int = 0
    loops_started: int = 0
    refused: int = 0
    unshifted: int = 0
    """Malformed bundles sent as recorded by ``--timetags shift`` (nothing sure to shift)."""
    lateness: RecentSamples = field(default_factory=lambda: RecentSamples(LATENESS_SAMPLES))


class Replayer:
    """Feeds a file's datagrams to a scheduler, which sends each one at its time.

    ``source`` opens the file afresh (one call per loop); ``send`` sends one packet. Both run on
    the scheduler's thread: reading ahead is itself a scheduled action (a *refill*) placed right
    after a send, and it stops reading as soon as the next send is less than ``REFILL_MARGIN``
    away. Reading on another thread would make sends wait for the GIL (up to the 5 ms switch
    interval: measured 5 ms late sends that way). ``after_send`` runs right after each datagram's
    packets are sent (:func:`give_way` by default). Call :meth:`begin`, then wait for
    :attr:`finished`; :attr:`failure` holds a read error that stopped the replay.
    """

    def __init__(
        self,
        source: Callable[[], Iterable[Datagram]],
        send: Callable[[bytes], object],
        scheduler: Scheduler,
        plan: Plan,
        *,
        after_send: Callable[[], None] = give_way,
        selection: Selection = Selection(),
        speed: float = 1.0,
        loops: int = 1,
        mode: TimetagMode = "keep",
        lookahead: float = DEFAULT_LOOKAHEAD,
        max_ahead: int = DEFAULT_MAX_AHEAD,
        max_ahead_bytes: int = DEFAULT_MAX_AHEAD_BYTES,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be more than 0, got {speed}")
        self.source = source
        self.send = send
        self.after_send = after_send
        self.scheduler = scheduler
        self.clock: Clock = scheduler.clock
        self.plan = plan
        self.selection = selection
        self.speed = speed
        self.loops = loops  # 0: forever
        self.mode = mode
        self.lookahead = lookahead
        self.max_ahead = max_ahead
        self.max_ahead_bytes = max_ahead_bytes
        self._bytes_ahead = 0
        self.stats = ReplayStats()
        self.finished = threading.Event()
        self.failure: Exception | None = None
        self.start_monotonic = 0.0
        self._zero = plan.zero(selection)
        self._period = plan.period(selection)
        self._pending: Iterator[tuple[Datagram, tuple[bytes, ...]] | None] | None = None
        self._next: tuple[float, Datagram, tuple[bytes, ...]] | None = None
        self._loop = 0
        self._in_flight: deque[int] = deque()  # timetags of submitted sends, in order
        self._all_submitted = False

    def begin(self) -> None:
        """Find the first datagram, fix time zero (``LEAD`` from now) and start reading ahead."""
        self.start_monotonic = self.clock.monotonic() + LEAD
        if self.plan.count == 0:
            self._all_submitted = True
            self.finished.set()
            return
        self._open_loop()
        # Lines before the first one sent (--from 600 in a dense file) are read before the
        # clock starts, so the first sends are not late by that reading.
        first = self._advance()
        while isinstance(first, _Skipped):
            first = self._advance()
        if first is not None:
            self.start_monotonic = self.clock.monotonic() + LEAD
            self._next = (self._due(first[1]), first[1], first[2])
        # On the scheduler's thread like every later refill: one thread owns the reading.
        self.scheduler.submit(None, self._refill)

    def _open_loop(self) -> None:
        self.stats.loops_started += 1
        self._pending = outgoing(self.source(), self.selection, self.mode)

    def _due(self, datagram: Datagram) -> float:
        replay_time = (datagram.offset - self._zero) + self._loop * self._period
        return self.start_monotonic + replay_time / self.speed

    def _advance(self) -> tuple[float, Datagram, tuple[bytes, ...]] | _Skipped | None:
        """The next datagram to send with its due time; SKIPPED after a datagram left out (so
        the caller can look at the clock); None at the end of the last loop."""
        while self._pending is not None:
            found = next(self._pending, _END)
            if found is None:
                return SKIPPED
            if isinstance(found, tuple):
                datagram, packets = found
                return self._due(datagram), datagram, packets
            self._loop += 1
            if self.loops and self._loop >= self.loops:
                self._pending = None
                return None
            self._open_loop()
        return None

    def _refill(self, _: object = None) -> None:
        try:
            self._read_ahead()
        except Exception as exc:  # a file that changed after the first pass checked it
            self.failure = exc
            self.finished.set()

    def _read_ahead(self) -> None:
        clock = self.clock
        horizon = clock.monotonic() + self.lookahead
        in_flight = self._in_flight
        while True:
            if self._next is None:
                found = self._advance()
                if isinstance(found, _Skipped):
                    # A --filter or --from may leave out long runs of lines: look at the clock
                    # between any two of them, not only after a datagram was handed over.
                    if in_flight and self._send_is_near(in_flight[0]):
                        self._schedule_refill(in_flight[0])
                        return
                    continue
                if found is None:
                    self._all_submitted = True
                    if not in_flight:
                        self.finished.set()
                    return
                self._next = found
            due, datagram, packets = self._next
            # The slack keeps the next refill at least 1 ms away: timetags round-trip through
            # wall time, and a refill due "now" by rounding would run again and again.
            if due > horizon + 0.001:
                # Nothing more to read for now: come back a lookahead before this one is due
                # (or right after the next send, whichever is first). Capped well inside the
                # scheduler's horizon: a recording may hold minutes of silence.
                at = min(due - self.lookahead, clock.monotonic() + MAX_REFILL_WAIT)
                tag = tt.from_unix(clock.monotonic_to_wall(at))
                if in_flight and in_flight[0] < tag:
                    tag = in_flight[0]
                self._schedule_refill(tag)
                return
            if in_flight and (
                len(in_flight) >= self.max_ahead or self._bytes_ahead >= self.max_ahead_bytes
            ):
                self._schedule_refill(in_flight[0])
                return
            self._submit(due, datagram, packets)
            self._next = None
            if in_flight and self._send_is_near(in_flight[0]):
                self._schedule_refill(in_flight[0])  # a send is due: read on after it
                return

    def _send_is_near(self, tag: int) -> bool:
        clock = self.clock
        soon = clock.monotonic_to_wall(clock.monotonic() + REFILL_MARGIN)
        return soon >= tt.to_unix(tag, near=soon)

    def _schedule_refill(self, tag: int) -> None:
        # Same timetag as a send: the scheduler keeps submission order for equal times, so the
        # refill runs right after that send.
        if not self.scheduler.submit(tag, self._refill):
            self.failure = self.failure or RuntimeError("the scheduler refused to read ahead")
            self.finished.set()

    def _submit(self, due: float, datagram: Datagram, packets: tuple[bytes, ...]) -> None:
        wall = self.clock.monotonic_to_wall(due)
        if self.mode == "shift" and datagram.wall is not None:
            moved = wall - datagram.wall
            shifted = [shift_timetags(p, moved) for p in packets]
            if None in shifted:
                self.stats.unshifted += 1
            packets = tuple(p if q is None else q for p, q in zip(packets, shifted))
        tag = tt.from_unix(wall)
        size = sum(map(len, packets))
        self._in_flight.append(tag)
        self._bytes_ahead += size
        if not self.scheduler.submit(tag, lambda dispatch: self._send(dispatch, packets, size)):
            self._in_flight.pop()
            self._bytes_ahead -= size
            self.stats.refused += 1  # counted by the scheduler too, by reason

    def _send(self, dispatch: Dispatch, packets: tuple[bytes, ...], size: int) -> None:
        stats = self.stats
        try:
            for packet in packets:
                self.send(packet)
                stats.packets += 1
                stats.bytes += len(packet)
            self.after_send()  # before any bookkeeping or reading: see give_way
        finally:
            stats.lateness.add(dispatch.dispatched - dispatch.due)
            stats.datagrams += 1
            self._in_flight.popleft()
            self._bytes_ahead -= size
            if self._all_submitted and not self._in_flight:
                self.finished.set()

    @property
    def total(self) -> int | None:
        """Datagrams the whole replay sends (None: loops forever)."""
        return self.plan.count * self.loops if self.loops else None

    @property
    def loop(self) -> int:
        return self._loop


class ReplaySession(SendingSession):
    """``oscsync replay``: an endpoint to ``peers``, a spinning scheduler (:data:`SPIN`) and a
    :class:`Replayer` sending through them; :meth:`close` closes the scheduler and the
    endpoint."""

    def __init__(
        self,
        source: Callable[[], Iterable[Datagram]],
        plan: Plan,
        peers: Sequence[HostPort],
        setup: SessionSetup,
        *,
        selection: Selection = Selection(),
        speed: float = 1.0,
        loops: int = 1,
        mode: TimetagMode = "keep",
    ) -> None:
        super().__init__(peers, setup, spin=SPIN)
        try:
            self.replayer = Replayer(
                source,
                self.endpoint.send_bytes,
                self.scheduler,
                plan,
                selection=selection,
                speed=speed,
                loops=loops,
                mode=mode,
            )
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        self.scheduler.start()
        self.replayer.begin()
