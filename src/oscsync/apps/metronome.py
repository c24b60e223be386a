"""``oscsync metronome``: ticks on a drift-free grid, and a listener that plays them on time.

**Sending** (:class:`TickSender`). Tick ``k`` is due at ``t0 + k·60/bpm``, computed from ``k`` every
time (exactly, on the NTP timetag grid), never by adding up sleeps, so the grid does not drift
however long it runs or however late a send was. Each tick is ``/tick ,i BEAT`` with
``BEAT = k mod beats_per_bar`` (0 is the accent). With ``offset == 0`` it is a plain message sent at
the grid time (the workshop's example 2: the receiver plays it when it arrives, network jitter and
all). With ``offset > 0`` it is a bundle timetagged ``offset`` seconds after the grid time and sent
at the grid time (example 3, forward synchronisation: the receiver holds it and plays it at the
timetag, so jitter smaller than the offset disappears).

**Listening** (:class:`MetronomeListener`). ``/tick`` with no argument, an int or a float (PD's
``[packOSC]`` sends floats) is one beat; ``beat % beats_per_bar == 0`` is the accent. The onset
handed to the player is the timetag, not the arrival time: for a player that places sounds
itself (sounddevice, wav render: ``lead = inf``) right away, for the others (none, playsound) when
the :class:`~oscsync.scheduler.Scheduler` dispatches the bundle at its timetag. A plain message, or
a bundle that arrives after its timetag (late), sounds as soon as it is handled.

**The tick log** (``--log FILE.jsonl``) has one JSON object per tick, in the order ticks were
handled, flushed line by line so another process can follow it. These fields are stable (the lab
reads them); times are Unix seconds (UTC) as floats, on the listener's clock:

``seq``          int, 0, 1, 2 ... per tick this listener handled
``beat``         int, the beat number received (floats rounded), or null when ``/tick`` had none
``accent``       bool, ``beat % beats_per_bar == 0`` (false when beat is null)
``arrival``      when the datagram arrived (read on the receive thread)
``timetag``      the bundle's timetag, or null for a plain message or ``IMMEDIATELY``
``timetag_hex``  the same timetag in liblo's hex notation, or null
``onset``        when the player was asked to start the sound: the timetag, or, for a plain or late
                 tick, the moment it was handled; never earlier than ``timetag``
``handled``      when the listener handled it (the scheduler dispatched it)
``late``         bool, ``arrived_late or played_late``
``headroom_ms``  ``(timetag − arrival)`` in ms: how early the bundle arrived (negative = after its
                 time), or null for a plain tick
``source``       ``HOST:PORT`` of the sender (``[V6]:PORT`` for IPv6)
``arrived_late`` bool, it was played more than 1 ms after its timetag (:mod:`oscsync.lateness`)
                 and had arrived after it: the network, the sender's offset or the clocks
``played_late``  bool, it arrived before its timetag but was played more than 1 ms after it: this
                 machine is to blame (its timer ran late, or its player needed more time)
``played_ms``    how long after its timetag it was played, in ms (0 when on time; null for a plain
                 tick): when it was handled, plus the player's playout latency for a player that
                 places sounds itself (:func:`oscsync.audio.playout_of`)
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Generic, Protocol, TextIO, TypeVar

from oscsync import audio
from oscsync.apps.grid import Grid, StepGrid
from oscsync.apps.playing import Onset, onset_of, submit_onset
from oscsync.audio import ACCENT, TICK, Player
from oscsync.clock import Clock
from oscsync.lateness import LATE_THRESHOLD, Lateness, counts_text
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Method, Received
from oscsync.scheduler import LATENESS_SAMPLES, Dispatch, Scheduler
from oscsync.stats import RunningStats

ADDRESS = "/tick"
TICK_METHOD = Method(
    ADDRESS,
    "i",
    "one metronome beat: optional beat number (int, or float from Pure Data); "
    "a bundle's timetag says when to play it",
)
"""What ``metronome listen`` answers to (OSCQuery's description)."""
DEFAULT_BPM = 120.0
DEFAULT_BEATS_PER_BAR = 4

# -- sending ----------------------------------------------------------------------------------


def ticks_in(duration: float, bpm: float) -> int:
    """How many ticks fall in ``[0, duration)`` on a grid of ``60/bpm`` s (tick 0 at 0)."""
    return max(0, math.ceil(Fraction(duration) * Fraction(bpm) / 60))


class TickSender:
    """Sends ``/tick`` on a drift-free grid through ``send`` (an Endpoint's ``send_bytes``).

    The grid is fixed by the timetag ``t0`` of tick 0 (the clock's time at :meth:`start`, or given):
    tick ``k``'s grid time is ``t0 + k·60/bpm`` rounded to the nearest NTP unit, computed with
    exact fractions from ``k`` itself. Each tick is an item on ``scheduler`` due at its grid time
    (the scheduler sleeps, then spins: a plain sleep overshoots by 0.1-3 ms, which example 2 would
    hear as jitter); when it runs it sends and submits the next tick. A late run delays one tick,
    never the ones after it, and only one tick is held at a time, so a run of any length stays
    within the scheduler's cap and horizon. :attr:`done` is set after ``count`` ticks or
    :meth:`stop`.

    ``plain`` (default: ``offset == 0``) sends plain messages; ``plain=False`` with offset 0
    sends bundles due at their grid time (the lab's "timed, no headroom" case).
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        scheduler: Scheduler,
        *,
        bpm: float = DEFAULT_BPM,
        beats_per_bar: int = DEFAULT_BEATS_PER_BAR,
        offset: float = 0.0,
        plain: bool | None = None,
        grid: StepGrid | None = None,
    ) -> None:
        if not offset >= 0 or not math.isfinite(offset):
            raise ValueError(f"offset must be 0 or more seconds, got {offset}")
        # The public Grid (oscsync.Grid) computes every tick's time; ValueError for a bad one.
        # A given grid (a Link session's, --link) replaces it: bpm is then the session's.
        self.grid: StepGrid = self._new_grid(bpm, beats_per_bar) if grid is None else grid
        self._send = send
        self.scheduler = scheduler
        self.clock = scheduler.clock
        self.bpm = bpm
        self.beats_per_bar = beats_per_bar
        self.offset = offset
        self.plain = offset == 0 if plain is None else plain
        self.t0: int | None = None
        self.count: int | None = None
        self.sent = 0
        """Steps that sent a packet."""
        self.silent = 0
        """Steps at which the grid was silent (a stopped Link session, a sequencer's rest):
        nothing was sent."""
        self.lateness = RunningStats(recent=LATENESS_SAMPLES)
        """Seconds each send ran after its grid time (the sender's own lateness)."""
        self.sent_late = 0
        """Sends more than the late threshold (1 ms) after their grid time."""
        self.done = threading.Event()
        self._on_sent: Callable[[int], None] | None = None

    def _new_grid(self, bpm: float, beats_per_bar: int) -> Grid:
        """The grid the ticks are on (its start is set by :meth:`start`)."""
        return Grid(bpm, beats_per_bar=beats_per_bar, start=0)

    def grid_timetag(self, k: int) -> int:
        """The NTP timetag of tick ``k`` on the grid (exact: no accumulated rounding)."""
        if self.t0 is None:
            raise RuntimeError("TickSender.start() has not been called")
        return self.grid.timetag(k)

    def beat(self, k: int) -> int:
        return self.grid.tick(k).beat

    def packet(self, k: int) -> bytes:
        """The datagram for tick ``k``: plain, or a bundle ``offset`` s after its grid time
        (nothing when the grid is silent there: a stopped Link session)."""
        tick = self.grid.tick(k)
        if not self.grid.sounds(tick):
            return b""
        message = codec.encode_message(ADDRESS, [tick.beat], "i")
        if self.plain:
            return message
        return codec.encode_bundle(tt.add_seconds(tick.timetag, Fraction(self.offset)), [message])

    def start(
        self,
        count: int | None = None,
        *,
        t0: int | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> int:
        """Schedule ticks 0 .. count-1 (forever if None) from ``t0`` (default now); return t0."""
        self.t0 = self.clock.now_timetag() if t0 is None else t0
        self.grid = self.grid.starting_at(self.t0)
        self.count = count
        self._on_sent = on_sent
        if count == 0:
            self.done.set()
        else:
            self._submit(0)
        return self.t0

    @property
    def steps(self) -> int:
        """Steps of the grid gone by: sent or silent."""
        return self.sent + self.silent

    def stop(self) -> None:
        """Send no more ticks (one already being sent finishes)."""
        self.done.set()

    def lateness_text(self) -> str:
        """The sender's own lateness: ``send time after grid: mean 3 µs, p99 12 µs, max 40 µs,
        sent late 0`` (late: more than 1 ms after the grid; empty before the first send). A
        listener's "arrived late" includes this and the network; a sender that sends late
        makes every listener's headroom smaller."""
        stats = self.lateness
        if not stats.count:
            return ""
        return (
            f"send time after grid: mean {stats.mean * 1e6:.0f} µs, "
            f"p99 {stats.percentile(0.99) * 1e6:.0f} µs, max {stats.maximum * 1e6:.0f} µs, "
            f"sent late {self.sent_late}"
        )

    def _submit(self, k: int) -> None:
        def tick(dispatch: Dispatch) -> None:
            self._tick(k, dispatch)

        if not self.scheduler.submit(self.grid_timetag(k), tick):
            self.done.set()  # scheduler closed (or full): nothing more will be sent

    def _tick(self, k: int, dispatch: Dispatch) -> None:
        if self.done.is_set():
            return
        try:
            packet = self.packet(k)
            if packet:  # empty: nothing sounds at this step (a sequencer's rest, issue #19)
                self._send(packet)
                self.sent += 1
            else:
                self.silent += 1
            self.lateness.add(dispatch.lateness)
            self.sent_late += dispatch.lateness > LATE_THRESHOLD
            if self._on_sent is not None:
                self._on_sent(k)
        finally:
            # Whatever became of this tick (the scheduler counts an error), the grid goes on:
            # one that raised stopped every tick after it and the end of --count and --duration
            # (issue 27, item 13: a pattern saved with a 5,000-digit note).
            if self.count is not None and k + 1 >= self.count:
                self.done.set()
            else:
                self._submit(k + 1)


# -- listening --------------------------------------------------------------------------------


class TickError(ValueError):
    """A ``/tick`` whose argument is not a beat number; ``reason`` is a drop-counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def beat_of(message: codec.Message) -> int | None:
    """The beat number of a ``/tick``: None without an argument, ints as is, floats rounded."""
    if not message.args:
        return None
    value, tag = message.args[0], message.types[:1]
    if tag in ("i", "h"):
        return int(value)
    if tag in ("f", "d"):
        number = float(value)
        if not math.isfinite(number):
            raise TickError("bad-beat")
        return round(number)
    raise TickError("bad-beat")


@dataclass
class JsonLine:
    """A record that writes itself as one compact JSON line (``--jsonl``)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass
class TickRecord(JsonLine):
    """One handled tick; :meth:`to_json` is one line of the tick log (see the module docstring)."""

    seq: int
    beat: int | None
    accent: bool
    arrival: float
    timetag: float | None
    timetag_hex: str | None
    onset: float
    handled: float
    late: bool
    headroom_ms: float | None
    source: str
    arrived_late: bool = False
    played_late: bool = False
    played_ms: float | None = None


GAP_FACTOR = 4
"""An onset more than this many intervals after the previous one ends a run (issue #13: two
senders one after the other read ``interval 439 ± 1765 ms``): the pause is not a beat, so the
inter-onset statistics restart after it and cover the latest run only."""

MAX_SOURCES = 64
"""Senders remembered by a listener (for the source warning); more are counted, not stored."""


@dataclass
class ListenerStats:
    """What the listener saw: ticks, late ones (arrived, played), inter-onset intervals,
    headroom, what it ignored."""

    ticks: int = 0
    arrived_late: int = 0
    played_late: int = 0
    accents: int = 0
    intervals: RunningStats = field(default_factory=RunningStats)
    """Seconds between consecutive onsets, in the current run (see :data:`GAP_FACTOR`)."""
    runs: int = 0
    """Runs of ticks separated by pauses of more than GAP_FACTOR intervals."""
    last_interval: float | None = None
    headroom: RunningStats = field(default_factory=RunningStats)
    """Milliseconds from arrival to timetag, for timetagged ticks."""
    last_headroom_ms: float | None = None
    sources: set[str] = field(default_factory=set)
    """``HOST:PORT`` of the senders heard (at most MAX_SOURCES kept)."""
    ignored: Counter[str] = field(default_factory=Counter)

    def add_onset_interval(self, interval: float | None) -> None:
        """Count one onset, ``interval`` seconds after the previous one (None: the first)."""
        if interval is None:
            self.runs = 1
            return
        last = self.last_interval
        if last is not None and last > 0 and interval > GAP_FACTOR * last:
            # A pause: a new run starts with this onset; its first interval comes next.
            self.intervals = RunningStats()
            self.last_interval = None
            self.runs += 1
            return
        if self.intervals.count == 1 and last is not None and last > GAP_FACTOR * interval:
            # The run's first interval was itself a pause (one lone tick before it): drop it.
            self.intervals = RunningStats()
            self.runs += 1
        self.intervals.add(interval)
        self.last_interval = interval

    @property
    def late(self) -> int:
        return self.arrived_late + self.played_late

    def count_late(self, lateness: Lateness) -> None:
        self.arrived_late += lateness.arrived_late
        self.played_late += lateness.played_late

    def line(self) -> str:
        """The status line: ``ticks 12  arrived late 0  played late 0  interval 500.000 ±
        0.004 ms  headroom mean ...``."""
        parts = [f"ticks {self.ticks}", counts_text(self.arrived_late, self.played_late)]
        if self.intervals.count:
            parts.append(
                f"interval {self.intervals.mean * 1000:.3f} ± {self.intervals.std * 1000:.3f} ms"
            )
            if self.runs > 1:
                parts[-1] += f" (run {self.runs})"
        if self.headroom.count:
            parts.append(
                f"headroom mean {self.headroom.mean:+.1f} ms (min {self.headroom.minimum:+.1f})"
            )
        if len(self.sources) > 1:
            parts.append(f"senders {len(self.sources)}")
        if self.ignored:
            parts.append(f"ignored {sum(self.ignored.values())}")
        return "  ".join(parts)


def submit_received(
    player: Player,
    scheduler: Scheduler,
    clock: Clock,
    received: Received,
    handle: Callable[[Dispatch, int | None], None],
) -> str | None:
    """:func:`submit_onset` for a received message: at its timetag, declared in bytes as what
    it keeps alive while held (:func:`oscsync.osc.codec.footprint`)."""
    message = received.message
    size = codec.footprint(message)
    return submit_onset(player, scheduler, clock, message.timetag, handle, size=size)


class CountedStats(Protocol):
    """What a listener's stats have in common: what was not played, by reason, and a status."""

    ignored: Counter[str]

    def line(self) -> str: ...


S = TypeVar("S", bound=CountedStats)


class OnsetListener(Generic[S]):
    """What the tick and sequence listeners share: each received onset goes through
    ``scheduler`` (:func:`submit_received`), and what is not played is counted in
    ``stats.ignored`` by reason, under the listener's lock."""

    def __init__(
        self,
        player: Player,
        scheduler: Scheduler,
        clock: Clock,
        stats: S,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.player = player
        self.scheduler = scheduler
        self.clock = clock
        self.stats = stats
        self.on_warning = on_warning
        self._lock = threading.Lock()
        self._budget_warned = False

    def _timing(self, received: Received, stamp: int | None, dispatch: Dispatch) -> Onset:
        """:func:`onset_of` for this listener's player; says once when the headroom ticks
        arrive with is less than the player needs (the sender's offset is too small for this
        machine: network delay + output latency + one block)."""
        playout = audio.playout_of(self.player)
        timing = onset_of(self.scheduler, self.clock, dispatch, stamp, received.arrival, playout)
        if (
            timing.lateness.played_late
            and playout > 0
            and timing.target is not None
            and not self._budget_warned
            and timing.handled - timing.target <= self.scheduler.late_tolerance
        ):
            self._budget_warned = True  # a plain flag: at worst two threads warn once each
            headroom = timing.target - received.arrival
            short = playout - headroom
            if self.on_warning is not None:
                self.on_warning(
                    f"offset too small for this listener: a tick arrived {headroom * 1e3:.1f} ms "
                    f"before its timetag, but its player needs {playout * 1e3:.1f} ms (output "
                    "latency + one block), so it is played late; the sender's --offset must "
                    f"grow by at least {short * 1e3:.1f} ms (--offset auto counts it)"
                )
        return timing

    def _submit(self, received: Received, handle: Callable[[Dispatch, int | None], None]) -> None:
        # Held in bytes as well as items: a message may carry thousands of arguments.
        refusal = submit_received(self.player, self.scheduler, self.clock, received, handle)
        if refusal is not None:
            self._ignore(refusal)

    def _ignore(self, reason: str) -> None:
        with self._lock:
            self.stats.ignored[reason] += 1

    def status(self) -> str:
        with self._lock:
            return self.stats.line()


class MetronomeListener(OnsetListener[ListenerStats]):
    """Turns received ``/tick`` messages into onsets for a :class:`~oscsync.audio.Player`.

    Give :meth:`on_message` to an Endpoint. Every tick goes through ``scheduler`` (so all ticks are
    handled on its thread, in order): at its timetag for players that act when told (``lead`` 0),
    at once for players that place sounds themselves (``lead`` inf), which then get the timetag
    early and can be sample-accurate. ``log`` receives one JSON line per tick; ``on_tick`` is
    called with each :class:`TickRecord` (the CLI prints from it). After ``limit`` ticks, further
    ones are ignored (counted ``over-count``), so ``--count 8`` logs and plays exactly 8.
    """

    def __init__(
        self,
        player: Player,
        scheduler: Scheduler,
        clock: Clock,
        *,
        beats_per_bar: int = DEFAULT_BEATS_PER_BAR,
        log: TextIO | None = None,
        on_tick: Callable[[TickRecord], None] | None = None,
        limit: int | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        if beats_per_bar < 1:
            raise ValueError(f"beats per bar must be 1 or more, got {beats_per_bar}")
        super().__init__(player, scheduler, clock, ListenerStats(), on_warning)
        self.beats_per_bar = beats_per_bar
        self.log = log
        self.on_tick = on_tick
        self.limit = limit
        self.horizon = scheduler.horizon
        self._previous_onset: float | None = None

    def on_message(self, received: Received) -> None:
        """Handle one received message (runs on the receive thread; never raises for bad data)."""
        message = received.message
        if message.address != ADDRESS:
            self._ignore("other-address")
            return
        try:
            beat = beat_of(message)
        except TickError as exc:
            self._ignore(exc.reason)
            return

        def handle(dispatch: Dispatch, stamp: int | None) -> None:
            self._handle(received, beat, stamp, dispatch)

        self._submit(received, handle)

    def _handle(
        self, received: Received, beat: int | None, stamp: int | None, dispatch: Dispatch
    ) -> None:
        timing = self._timing(received, stamp, dispatch)
        target, onset, lateness = timing.target, timing.onset, timing.lateness
        accent = beat is not None and beat % self.beats_per_bar == 0
        with self._lock:
            stats = self.stats
            if self.limit is not None and stats.ticks >= self.limit:
                stats.ignored["over-count"] += 1
                return
            self.player.play_at(onset, ACCENT if accent else TICK)
            record = TickRecord(
                seq=stats.ticks,
                beat=beat,
                accent=accent,
                arrival=received.arrival,
                timetag=target,
                timetag_hex=None if stamp is None else tt.format_hex(stamp),
                onset=onset,
                handled=timing.handled,
                late=lateness.late,
                headroom_ms=None if target is None else (target - received.arrival) * 1000.0,
                source=str(HostPort(*received.source[:2])),  # [V6]:PORT stays unambiguous
                arrived_late=lateness.arrived_late,
                played_late=lateness.played_late,
                played_ms=None if target is None else lateness.played_after * 1000.0,
            )
            stats.ticks += 1
            stats.count_late(lateness)
            stats.accents += accent
            stats.add_onset_interval(
                None if self._previous_onset is None else onset - self._previous_onset
            )
            self._previous_onset = onset
            second_sender = self._note_source(record.source)
            if record.headroom_ms is not None:
                stats.headroom.add(record.headroom_ms)
                stats.last_headroom_ms = record.headroom_ms
            if self.log is not None:
                self.log.write(record.to_json() + "\n")
                self.log.flush()
        if second_sender is not None and self.on_warning is not None:
            self.on_warning(second_sender)
        if self.on_tick is not None:
            self.on_tick(record)

    def _note_source(self, source: str) -> str | None:
        """The warning to give when a second sender is heard (once per listener), else None."""
        sources = self.stats.sources
        if source in sources or len(sources) >= MAX_SOURCES:
            return None
        sources.add(source)
        if len(sources) != 2:
            return None
        first = next(iter(sources - {source}))
        return (
            f"ticks now also come from {source} (until now from {first}): two senders into one "
            "listener make one nonsense beat; tick lines show each tick's source"
        )


def record_fields() -> list[str]:
    """The tick log's field names, in order (tests hold the documentation to this)."""
    return list(TickRecord.__dataclass_fields__)


def tick_line(record: TickRecord) -> str:
    """One line per tick for a pipe, e.g.

    ``tick 3  beat 0*  from 127.0.0.1:40000  headroom +99.912 ms``
    """
    beat = "-" if record.beat is None else str(record.beat)
    mark = "*" if record.accent else ""
    parts = [f"tick {record.seq}", f"beat {beat}{mark}", f"from {record.source}"]
    if record.headroom_ms is not None:
        parts.append(f"headroom {record.headroom_ms:+.3f} ms")
    if record.arrived_late:
        parts.append("ARRIVED LATE")
    elif record.played_late:
        parts.append(f"PLAYED LATE {record.played_ms or 0.0:+.3f} ms")
    return "  ".join(parts)


def summary(stats: ListenerStats, extra: dict[str, Any] | None = None) -> str:
    """One line for stderr when the listener stops."""
    text = "metronome: " + stats.line()
    if extra:
        text += "  " + "  ".join(f"{key} {value}" for key, value in extra.items())
    return text
