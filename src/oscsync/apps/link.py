"""Playing in a Link session: its beat grid as timetags (``oscsync.LinkGrid``), and its status.

A :class:`LinkGrid` is a :class:`~oscsync.apps.grid.Grid` whose steps are the beats (or
``steps_per_beat`` subdivisions) of an Ableton Link session (``oscsync.sync.link``): step ``s`` is
session beat ``s / steps_per_beat`` (odd steps pushed later by the swing), its bar and beat come
from the session's phase (``quantum`` = beats per bar), and its timetag from the session's
timeline *when the step is asked for*, so a tempo another peer sets is followed from the next
step computed after it. ``metronome send --link`` and ``sequence send --link`` compute each step
one step ahead (when the previous one is sent) and again when it is sent: the bundle's timetag
is always the session's time for that beat as known at sending.

>>> import oscsync                                                  # doctest: +SKIP
>>> with oscsync.LinkGrid(steps_per_beat=1) as grid:                # doctest: +SKIP
...     for tick in grid.ticks(count=8):
...         oscsync.sleep_until(tick.timetag)
...         print(tick.bar, tick.beat)
"""

from __future__ import annotations

import math
import threading

from oscsync.apps.grid import StepGrid, Tick
from oscsync.clock import Clock, system_clock
from oscsync.osc import timetag as tt
from oscsync.sync.link import LinkBackend, LinkSession, LinkStatus, LinkTimeline

DEFAULT_BPM = 120.0
DEFAULT_QUANTUM = 4
PEER_POLL = 0.05
"""Seconds between looks for a peer while waiting for one."""


class LinkGrid(StepGrid):
    """The steps of a Link session's beat grid, as :class:`~oscsync.apps.grid.Tick` s.

    ``session`` is the Link session to follow (default: join one, on ``clock``, at ``bpm`` if
    this is its first peer, with ``beats_per_bar`` as the quantum; :meth:`close` leaves it).
    ``start`` (a timetag, default now): step 0 of this grid is the first step at or after it.
    ``lead=True`` proposes ``bpm`` to the session (every peer takes it), and again when a peer
    joins (Link keeps the older of two sessions that meet); ``start_stop=True``
    shares the transport: steps while the session is stopped are silent (:meth:`sounds`).
    ``wait_for_peers`` (seconds) waits that long at most for another peer to be found first
    (Link finds peers in about half a second), so that the grid starts on the session's beats
    and a tempo it leads with is proposed to them.
    Raises ValueError for a bar, subdivision or swing that cannot be a grid, and
    :class:`~oscsync.sync.link.LinkUnavailable` without the ``link`` extra.
    """

    def __init__(
        self,
        bpm: float = DEFAULT_BPM,
        *,
        beats_per_bar: int = DEFAULT_QUANTUM,
        steps_per_beat: int = 1,
        swing: float = 0.0,
        start: int | None = None,
        lead: bool = False,
        start_stop: bool = False,
        wait_for_peers: float = 0.0,
        clock: Clock | None = None,
        session: LinkSession | None = None,
        backend: LinkBackend | None = None,
    ) -> None:
        super().__init__(bpm, beats_per_bar, steps_per_beat, swing)
        self._owns_session = session is None
        if session is None:
            session = LinkSession(
                clock or system_clock(),
                bpm=bpm,
                quantum=beats_per_bar,
                start_stop=start_stop,
                backend=backend,
            )
        elif session.quantum != beats_per_bar:
            raise ValueError(
                f"the session's quantum is {session.quantum:g}, not {beats_per_bar} beats per bar"
            )
        self.session = session
        self.clock = session.clock
        self._lock = threading.Lock()
        self._last: tuple[int, int] | None = None  # the last step given: (index, its timetag)
        try:
            self._join(bpm, lead, wait_for_peers, start)
        except BaseException:  # Ctrl-C while waiting for peers: leave a session opened here
            self.close()
            raise

    def _join(self, bpm: float, lead: bool, wait_for_peers: float, start: int | None) -> None:
        session = self.session
        self.peers_found = self._wait_for_peers(wait_for_peers) if wait_for_peers > 0 else None
        """With ``wait_for_peers``: whether a peer was there within that many seconds."""
        self.lead = lead
        self._peers_led = 0
        if lead:
            self._peers_led = session.timeline().peers
            session.propose_tempo(bpm)
            if session.start_stop:
                session.set_playing(True)
        self.start = self.clock.now_timetag() if start is None else start
        """The timetag step 0 is due at or after."""
        self.first_step = self._first_step_at(self.start)
        """The session step (beat × steps_per_beat) of this grid's step 0."""

    # -- where steps are ---------------------------------------------------------------------

    def beat_of_step(self, step: int) -> float:
        """The session beat of session step ``step`` (odd steps later by the swing)."""
        beat = step / self.steps_per_beat
        if step % 2 == 1:
            beat += self.swing / 100 / self.steps_per_beat
        return beat

    def _step_timetag(self, step: int, line: LinkTimeline) -> int:
        return self.session.timetag_at_beat(self.beat_of_step(step), line)

    def _first_step_at(self, timetag: int, line: LinkTimeline | None = None) -> int:
        line = self.session.timeline() if line is None else line
        beat = self.session.beat_at_timetag(timetag, line)
        step = math.floor(beat * self.steps_per_beat) - 1  # the swing may push it past
        while tt.difference(self._step_timetag(step, line), timetag) < 0:
            step += 1
        return step

    def timetag(self, index: int) -> int:
        """The timetag of this grid's step ``index`` on the session's timeline now."""
        return self.tick(index).timetag

    def tick(self, index: int) -> Tick:
        """Step ``index`` (from this grid's start) with its timetag and place in the session's
        bar (the bar number is this peer's count of the session's bars).

        Asked for the step after the last one given, it is the first step after that one's
        time on the timeline as it is now: a peer that re-maps the session's beats (or a
        session this peer merges into) makes the grid skip or repeat no step; the steps after
        it are counted from there."""
        line = self._timeline()
        with self._lock:
            last = self._last
            if last is not None and index == last[0] + 1:
                step = self._first_step_at(tt.add_seconds(last[1], 1e-6), line)
                self.first_step = step - index
            else:
                step = self.first_step + index
            timetag = self._step_timetag(step, line)
            if last is None or index >= last[0]:
                self._last = (index, timetag)
        bar, in_bar = divmod(step, self.steps_per_bar)
        return Tick(index, timetag, bar, in_bar // self.steps_per_beat, in_bar)

    def index_at(self, timetag: int) -> int:
        """The first step due at or after ``timetag``."""
        return self._first_step_at(timetag) - self.first_step

    def starting_at(self, start: int) -> LinkGrid:
        """This grid (the same session, still leading if it leads) with step 0 the first step
        at or after ``start``."""
        grid = LinkGrid(
            self.bpm,
            beats_per_bar=self.beats_per_bar,
            steps_per_beat=self.steps_per_beat,
            swing=self.swing,
            start=start,
            session=self.session,
        )
        # Not lead=True: that would propose the tempo again now, over one a peer set since.
        grid.lead, grid._peers_led, grid.peers_found = self.lead, self._peers_led, self.peers_found
        return grid

    def sounds(self, tick: Tick) -> bool:
        """Whether ``tick`` plays: always, unless start/stop is shared and the session's
        transport is stopped at its time."""
        if not self.session.start_stop:
            return True
        line = self.session.timeline()
        return line.playing_at(self.session.map.from_timetag(tick.timetag))

    # -- the session -------------------------------------------------------------------------

    def _timeline(self) -> LinkTimeline:
        """The session's timeline now; a leader proposes its tempo again to a peer that
        joins (a session older than this one would otherwise bring its own)."""
        line = self.session.timeline()
        if self.lead and line.peers > self._peers_led:
            self.session.propose_tempo(self.bpm)
            line = self.session.timeline()
        if self.lead:
            self._peers_led = line.peers
        return line

    def _wait_for_peers(self, seconds: float) -> bool:
        deadline = self.clock.monotonic() + seconds
        while self.session.timeline().peers == 0:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return False
            self.clock.sleep(min(PEER_POLL, left))
        return True

    def describe(self) -> str:
        """One line: the session joined (``link: 1 peer, 97.00 bpm, 4 beats per bar``)."""
        status = self.status()
        peers = f"{status.peers} peer{'' if status.peers == 1 else 's'}"
        text = f"link: {peers}, {status.tempo:.2f} bpm, {self.beats_per_bar} beats per bar"
        if self.peers_found is False:
            text += " (no peer yet: playing alone; a peer that joins brings its tempo and phase)"
        if self.session.start_stop:
            text += ", start/stop shared: " + ("playing" if status.playing else "stopped")
        return text

    @property
    def period(self) -> float:
        """Seconds from one step to the next at the session's tempo now (no swing)."""
        line = self.session.timeline()
        return line.micros_per_beat / 1e6 / self.steps_per_beat / self.session.map.rate

    def status(self) -> LinkStatus:
        """The session now: peers, tempo, beat, phase."""
        self._timeline()  # a leader answers a new peer here too
        return self.session.status()

    def close(self) -> None:
        """Leave the session if this grid joined it (a given ``session`` stays open)."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> LinkGrid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LinkGrid(beats_per_bar={self.beats_per_bar}, steps_per_beat={self.steps_per_beat}, "
            f"swing={self.swing:g}, first_step={self.first_step})"
        )
