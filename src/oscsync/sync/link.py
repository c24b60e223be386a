"""Ableton Link: a session's beat timeline, read on oscsync's clock (issue 32).

Link shares *beat, tempo and phase* between the peers of a session (Live, Bitwig, Max, Pure
Data's ``abl_link~``, phone apps), found by multicast on the local network. Each peer keeps the
session's timeline on its own clock: Link's clock, in integer microseconds (on Linux
``CLOCK_MONOTONIC_RAW``, measured here: not the ``CLOCK_MONOTONIC`` that oscsync's
:class:`~oscsync.clock.SystemClock` reads, and the two run at rates that differ by what NTP is
slewing, tens of ppm). So a Link time becomes an OSC timetag in two steps:

1. **Link clock → oscsync's monotonic clock** (:class:`LinkClockMap`): Link's clock is read
   between two readings of :meth:`Clock.monotonic` and the tightest of a few such brackets is
   kept (as :class:`~oscsync.clock.SystemClock` maps wall time); brackets taken at least
   :data:`RATE_SPAN` apart give the rate between the two clocks. Error: half a bracket (~0.5 µs)
   plus Link's 1 µs resolution, plus the rate's error times the time since the last bracket
   (re-taken every :data:`CALIBRATE_EVERY`).
2. **monotonic → wall → timetag**: the clock's own fixed mapping (``monotonic_to_wall``), then
   :func:`~oscsync.osc.timetag.from_unix` (a float of Unix seconds: 0.24 µs resolution).

A captured session state is linear in time for one quantum; :class:`LinkTimeline` holds it as
numbers (a beat at a Link time and the microseconds per beat), so that everything after the
capture is plain arithmetic, tested on a fake clock with a fake backend.

The binding is LinkPython-extern (module ``link``): it wraps the whole of Link's C++ API
(``timeAtBeat``, atomic session-state snapshots, start/stop with a time) for any thread, where
aalink offers the current beat and asyncio futures. It is an optional extra, GPL like Link
itself, imported only by :func:`open_link` (``--link``, :class:`LinkSession`).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from oscsync.clock import Clock
from oscsync.osc import timetag as tt

BRACKETS = 5
"""Readings of Link's clock per calibration; the tightest bracket is kept."""
CALIBRATE_EVERY = 0.25
"""Seconds between calibrations (a timeline asked for sooner reuses the last one)."""
RATE_SPAN = 2.0
"""Seconds between the two brackets the rate is measured over (shorter: noisier)."""
RATE_WINDOW = 64
"""Calibrations kept to measure the rate over."""
MAX_RATE_ERROR = 1e-3
"""A measured rate further than this from 1 (1000 ppm) is a suspended machine, not a clock:
the map falls back to 1 until the brackets agree again."""
INSTALL_HINT = "pip install 'oscsync[link]'"


class LinkUnavailable(Exception):
    """Link cannot be used here (the extra is not installed); the message is one line."""


@dataclass(frozen=True, slots=True)
class LinkTimeline:
    """A session state captured at one moment, for one quantum: linear in Link time.

    ``beat_at(micros) = beat + (micros - micros_origin) / micros_per_beat``; beats are the
    session's, phase-aligned with every peer for this quantum (their magnitude is this peer's).
    """

    micros_origin: int
    """The Link time (µs) the state was captured at."""
    beat: float
    """The beat at :attr:`micros_origin`."""
    micros_per_beat: float
    """Link microseconds a beat lasts (60e6 / the tempo the beats really advance at)."""
    tempo: float
    """The session's tempo as Link shows it (BPM)."""
    quantum: float
    """Beats in a bar: the phase is the beat modulo this."""
    peers: int
    """Other peers in the session."""
    playing: bool
    """The session's transport (start/stop sync) is playing."""
    play_micros: int
    """The Link time the transport started or stopped at."""

    def beat_at(self, micros: float) -> float:
        """The beat at Link time ``micros``."""
        return self.beat + (micros - self.micros_origin) / self.micros_per_beat

    def micros_at(self, beat: float) -> float:
        """The Link time (µs, not rounded) of ``beat``."""
        return self.micros_origin + (beat - self.beat) * self.micros_per_beat

    def phase_at(self, micros: float) -> float:
        """Where ``micros`` falls in the bar: 0 ≤ phase < quantum (as Link's phaseAtTime)."""
        return self.beat_at(micros) % self.quantum

    def playing_at(self, micros: float) -> bool:
        """Whether the transport is playing at Link time ``micros`` (as far as known now)."""
        return self.playing if micros >= self.play_micros else not self.playing


class LinkBackend(Protocol):
    """What :class:`LinkSession` needs of Link (:class:`_PyLink`, or a fake in tests)."""

    def micros(self) -> int:
        """Link's clock now."""
        ...

    def timeline(self, quantum: float) -> LinkTimeline:
        """The session state now, for ``quantum``."""
        ...

    def set_tempo(self, bpm: float, micros: int) -> None:
        """Propose ``bpm`` to the session from Link time ``micros``."""
        ...

    def set_playing(self, playing: bool, micros: int, quantum: float) -> None:
        """Start (quantised to the next bar when there are peers) or stop the transport."""
        ...

    def enable(self, start_stop: bool) -> None:
        """Join the network session (``start_stop``: share start/stop too)."""
        ...

    def close(self) -> None:
        """Leave the session."""
        ...


class _PyLink:
    """:class:`LinkBackend` on LinkPython-extern's ``link.Link``."""

    def __init__(self, bpm: float) -> None:
        try:
            import link
        except ImportError:
            raise LinkUnavailable(
                f"Ableton Link needs the link extra, which is not installed: {INSTALL_HINT}"
            ) from None
        self._link: Any = link.Link(bpm)
        self._clock: Any = self._link.clock()
        self._lock = threading.Lock()  # one capture/commit at a time from our threads

    def micros(self) -> int:
        return int(self._clock.micros())

    def timeline(self, quantum: float) -> LinkTimeline:
        with self._lock:
            now = int(self._clock.micros())
            state = self._link.captureAppSessionState()
            peers = int(self._link.numPeers())
        beat = float(state.beatAtTime(now, quantum))
        # One minute later on the same captured state: its true rate (drift-compensated),
        # where tempo() is the rounded figure for display.
        later = float(state.beatAtTime(now + 60_000_000, quantum))
        per_beat = 60_000_000 / (later - beat) if later > beat else 60e6 / float(state.tempo())
        return LinkTimeline(
            micros_origin=now,
            beat=beat,
            micros_per_beat=per_beat,
            tempo=float(state.tempo()),
            quantum=quantum,
            peers=peers,
            playing=bool(state.isPlaying()),
            play_micros=int(state.timeForIsPlaying()),
        )

    def set_tempo(self, bpm: float, micros: int) -> None:
        with self._lock:
            state = self._link.captureAppSessionState()
            state.setTempo(bpm, micros)
            self._link.commitAppSessionState(state)

    def set_playing(self, playing: bool, micros: int, quantum: float) -> None:
        with self._lock:
            state = self._link.captureAppSessionState()
            if playing:
                # Link's own idiom (LinkHut): the start is at a bar line of the session.
                state.setIsPlayingAndRequestBeatAtTime(True, micros, 0.0, quantum)
            else:
                state.setIsPlaying(False, micros)
            self._link.commitAppSessionState(state)

    def enable(self, start_stop: bool) -> None:
        self._link.startStopSyncEnabled = start_stop
        self._link.enabled = True

    def close(self) -> None:
        self._link.enabled = False


def open_link(bpm: float) -> LinkBackend:
    """Link itself (imports the binding); :class:`LinkUnavailable` without the extra."""
    return _PyLink(bpm)


@dataclass(frozen=True, slots=True)
class Bracket:
    """One calibration: Link's clock read between two readings of the monotonic clock."""

    monotonic: float
    """The middle of the bracket (seconds)."""
    link: float
    """Link's clock then (seconds)."""
    width: float
    """The bracket's width (seconds): the pair is known to within half of it."""


class LinkClockMap:
    """Link's clock ↔ ``clock``'s monotonic time, re-measured as it goes (see the module
    docstring). ``micros`` reads Link's clock."""

    def __init__(self, clock: Clock, micros: Any) -> None:
        self.clock = clock
        self._micros = micros
        self._brackets: deque[Bracket] = deque(maxlen=RATE_WINDOW)
        self._lock = threading.Lock()
        self.rate = 1.0
        """Link seconds per monotonic second."""
        self.calibrate()

    def calibrate(self) -> Bracket:
        """Read the two clocks side by side now (the tightest of :data:`BRACKETS` tries)."""
        best: Bracket | None = None
        for _ in range(BRACKETS):
            before = self.clock.monotonic()
            link = self._micros() / 1e6
            after = self.clock.monotonic()
            if best is None or after - before < best.width:
                best = Bracket((before + after) / 2, link, after - before)
        assert best is not None
        with self._lock:
            self._brackets.append(best)
            self.rate = self._measure_rate(best)
        return best

    def _measure_rate(self, latest: Bracket) -> float:
        # Against the oldest bracket at least RATE_SPAN before this one: the longer the span,
        # the less the brackets' widths weigh.
        for old in self._brackets:
            span = latest.monotonic - old.monotonic
            if span < RATE_SPAN:
                break
            rate = (latest.link - old.link) / span
            return rate if abs(rate - 1) <= MAX_RATE_ERROR else 1.0
        return self.rate

    def fresh(self) -> None:
        """Calibrate if the last calibration is older than :data:`CALIBRATE_EVERY`."""
        with self._lock:
            last = self._brackets[-1].monotonic if self._brackets else -math.inf
        if self.clock.monotonic() - last >= CALIBRATE_EVERY:
            self.calibrate()

    def to_monotonic(self, micros: float) -> float:
        """The monotonic time at which Link's clock reads ``micros``."""
        with self._lock:
            anchor, rate = self._brackets[-1], self.rate
        return anchor.monotonic + (micros / 1e6 - anchor.link) / rate

    def to_micros(self, monotonic: float) -> float:
        """Link's clock at monotonic time ``monotonic``."""
        with self._lock:
            anchor, rate = self._brackets[-1], self.rate
        return (anchor.link + (monotonic - anchor.monotonic) * rate) * 1e6

    def to_timetag(self, micros: float) -> int:
        """The NTP timetag (on ``clock``'s wall time) at which Link's clock reads ``micros``."""
        return tt.from_unix(self.clock.monotonic_to_wall(self.to_monotonic(micros)))

    def from_timetag(self, timetag: int) -> float:
        """Link's clock (µs) when ``clock``'s wall time reads ``timetag``."""
        # Read in the era nearest now (RFC 5905 §6): right across the 2036 rollover.
        unix = tt.to_unix(timetag, self.clock.now())
        return self.to_micros(self.clock.wall_to_monotonic(unix))


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """The session as one peer sees it at one moment (``oscsync link``'s live line)."""

    peers: int
    tempo: float
    beat: float
    phase: float
    quantum: float
    playing: bool
    start_stop: bool

    def line(self) -> str:
        """``link: 1 peer  97.00 bpm  beat 1234.56  phase 2.56/4  ●●●○``."""
        bar = "".join("●" if k <= self.phase else "○" for k in range(math.ceil(self.quantum)))
        peers = f"{self.peers} peer{'' if self.peers == 1 else 's'}"
        text = (
            f"link: {peers}  {self.tempo:.2f} bpm  beat {self.beat:.2f}  "
            f"phase {self.phase:.2f}/{self.quantum:g}  {bar}"
        )
        if self.start_stop:
            text += "  playing" if self.playing else "  stopped"
        return text

    def record(self) -> dict[str, object]:
        """One ``--jsonl`` object."""
        return {
            "peers": self.peers,
            "tempo": round(self.tempo, 6),
            "beat": round(self.beat, 6),
            "phase": round(self.phase, 6),
            "quantum": self.quantum,
            "playing": self.playing if self.start_stop else None,
        }


class LinkSession:
    """This process as one peer of a Link session, on ``clock``.

    ``quantum`` is the beats in a bar (the phase every peer agrees on); ``bpm`` is the tempo
    the session starts at if this peer is alone (joining a running session, it takes the
    session's). ``start_stop`` shares the transport's start and stop with the peers.
    ``backend`` is Link (default: :func:`open_link`, which imports the extra).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        bpm: float,
        quantum: float,
        start_stop: bool = False,
        backend: LinkBackend | None = None,
    ) -> None:
        if not quantum > 0 or not math.isfinite(quantum):
            raise ValueError(f"quantum must be a positive number of beats, got {quantum}")
        self.clock = clock
        self.quantum = quantum
        self.start_stop = start_stop
        self.backend = open_link(bpm) if backend is None else backend
        try:
            self.map = LinkClockMap(clock, self.backend.micros)
            self.backend.enable(start_stop)
        except BaseException:
            if backend is None:  # Link opened here is left here; a given one is the caller's
                self.backend.close()
            raise
        self._closed = False

    def timeline(self) -> LinkTimeline:
        """The session's timeline now (the clock map refreshed when it is due)."""
        self.map.fresh()
        return self.backend.timeline(self.quantum)

    def status(self) -> LinkStatus:
        """Peers, tempo, beat and phase now."""
        line = self.timeline()
        now = self.map.to_micros(self.clock.monotonic())
        return LinkStatus(
            line.peers,
            line.tempo,
            line.beat_at(now),
            line.phase_at(now),
            self.quantum,
            line.playing_at(now),
            self.start_stop,
        )

    def timetag_at_beat(self, beat: float, line: LinkTimeline | None = None) -> int:
        """The timetag of session beat ``beat`` (on ``line``, default: the timeline now)."""
        line = self.timeline() if line is None else line
        return self.map.to_timetag(line.micros_at(beat))

    def beat_at_timetag(self, timetag: int, line: LinkTimeline | None = None) -> float:
        """The session beat at ``timetag``."""
        line = self.timeline() if line is None else line
        return line.beat_at(self.map.from_timetag(timetag))

    def now_micros(self) -> int:
        return round(self.map.to_micros(self.clock.monotonic()))

    def propose_tempo(self, bpm: float) -> None:
        """Set the session's tempo to ``bpm`` from now on (every peer follows)."""
        if not bpm > 0 or not math.isfinite(bpm):
            raise ValueError(f"bpm must be a positive number, got {bpm}")
        self.backend.set_tempo(bpm, self.now_micros())

    def set_playing(self, playing: bool) -> None:
        """Start (at the session's next bar line when it has peers) or stop the transport."""
        self.backend.set_playing(playing, self.now_micros(), self.quantum)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.backend.close()

    def __enter__(self) -> LinkSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
