"""A metronome or step-sequencer grid: the exact timetag of every step, as an iterator.

Step ``k`` is due at ``start + k·60/(bpm·steps_per_beat)``, computed from ``k`` with exact
fractions every time and rounded once to the nearest NTP unit, never by adding up periods: the
grid does not drift however long it runs. With ``swing`` every odd step is pushed later by that
percentage of a step (a sequencer's shuffle). ``metronome send`` and ``sequence send`` take their
times from a :class:`Grid`, and so does a Python script (``examples/``):

>>> import oscsync
>>> grid = oscsync.Grid(bpm=120, beats_per_bar=4, start=oscsync.from_unix(0))
>>> [oscsync.to_unix(tick.timetag) for tick in grid.ticks(count=3)]
[0.0, 0.5, 1.0]
>>> tick = grid.tick(5)
>>> tick.bar, tick.beat, oscsync.to_unix(tick.timetag)
(1, 1, 2.5)

Iterating a grid only computes times; nothing waits. To act on each step at its time, wait for
it (:func:`oscsync.sleep_until`, :func:`oscsync.sleep_until_async`), or send each step ahead of
time in a timetagged bundle and let the receiver wait (forward synchronisation).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from oscsync.clock import Clock, system_clock
from oscsync.osc import timetag as tt

DEFAULT_BPM = 120.0
DEFAULT_BEATS_PER_BAR = 4
MAX_SWING = 75.0
"""Percent: beyond this an odd step would crowd the next one (at 100 it would land on it)."""


@dataclass(frozen=True, slots=True)
class Tick:
    """One step of a :class:`Grid`: its number, its timetag and where it falls in the bar."""

    index: int
    """0, 1, 2 ... from the grid's start."""
    timetag: int
    """When the step is due (NTP timetag, on the clock the grid was started on)."""
    bar: int
    """The bar the step is in (0 first)."""
    beat: int
    """The beat within the bar, 0 .. beats_per_bar-1 (0 is the accent)."""
    step: int
    """The step within the bar, 0 .. beats_per_bar·steps_per_beat-1 (the beat when there is
    one step per beat)."""

    @property
    def accent(self) -> bool:
        """True on the first step of a bar (``/tick 0``, the metronome's higher click)."""
        return self.step == 0


class StepGrid(ABC):
    """Where a sender takes its steps' times from: a :class:`Grid`, or a Link session's beat
    grid (:class:`oscsync.LinkGrid`, ``apps/link.py``). Both have a bar of ``beats_per_bar``
    beats of ``steps_per_beat`` steps, odd steps delayed by ``swing`` percent of a step
    (ValueError for a bar, subdivision or swing that cannot be a grid), and are walked step by
    step the same way; each says where its steps fall (:meth:`tick`)."""

    def __init__(self, bpm: float, beats_per_bar: int, steps_per_beat: int, swing: float) -> None:
        if beats_per_bar < 1:
            raise ValueError(f"beats per bar must be 1 or more, got {beats_per_bar}")
        if steps_per_beat < 1:
            raise ValueError(f"steps per beat must be 1 or more, got {steps_per_beat}")
        if not 0 <= swing <= MAX_SWING:
            raise ValueError(f"swing must be 0 to {MAX_SWING:g} percent, got {swing}")
        self.bpm = bpm
        self.beats_per_bar = beats_per_bar
        self.steps_per_beat = steps_per_beat
        self.steps_per_bar = beats_per_bar * steps_per_beat
        self.swing = swing

    # What each grid says for itself (documented there).
    @abstractmethod
    def tick(self, index: int) -> Tick: ...

    @abstractmethod
    def timetag(self, index: int) -> int: ...

    @abstractmethod
    def starting_at(self, start: int) -> StepGrid: ...

    def sounds(self, tick: Tick) -> bool:
        """Whether ``tick`` is played: always (a Link grid is silent while the session's
        transport is stopped)."""
        return True

    def ticks(self, count: int | None = None, *, first: int = 0) -> Iterator[Tick]:
        """Steps ``first``, ``first+1`` ... (``count`` of them, or for ever), each computed
        when it is asked for."""
        index = first
        while count is None or index < first + count:
            yield self.tick(index)
            index += 1

    def __iter__(self) -> Iterator[Tick]:
        return self.ticks()


class Grid(StepGrid):
    """Steps on a drift-free grid of ``bpm`` beats a minute, ``steps_per_beat`` steps a beat.

    ``start`` is the timetag of step 0 (default: the clock's time now). ``swing`` (percent of a
    step, 0 to 75) delays every odd step, as ``sequence send --swing`` does. Raises ValueError
    for a tempo, bar or swing that cannot be a grid.
    """

    def __init__(
        self,
        bpm: float = DEFAULT_BPM,
        *,
        beats_per_bar: int = DEFAULT_BEATS_PER_BAR,
        steps_per_beat: int = 1,
        swing: float = 0.0,
        start: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not bpm > 0 or not math.isfinite(bpm):
            raise ValueError(f"bpm must be a positive number, got {bpm}")
        super().__init__(bpm, beats_per_bar, steps_per_beat, swing)
        self.period = Fraction(60) / (Fraction(bpm) * steps_per_beat)
        """Seconds from one step to the next (exact)."""
        self._swing_delay = self.period * Fraction(swing) / 100
        self.start = (clock or system_clock()).now_timetag() if start is None else start
        """The timetag of step 0."""

    def starting_at(self, start: int) -> Grid:
        """The same grid with step 0 at ``start``."""
        return Grid(
            self.bpm,
            beats_per_bar=self.beats_per_bar,
            steps_per_beat=self.steps_per_beat,
            swing=self.swing,
            start=start,
        )

    def timetag(self, index: int) -> int:
        """The timetag of step ``index`` (exact: no accumulated rounding)."""
        offset = self.period * index
        if index % 2 == 1:
            offset += self._swing_delay
        return tt.add_seconds(self.start, offset)

    def tick(self, index: int) -> Tick:
        """Step ``index`` with its timetag and place in the bar."""
        step = index % self.steps_per_bar
        return Tick(
            index,
            self.timetag(index),
            index // self.steps_per_bar,
            step // self.steps_per_beat,
            step,
        )

    def index_at(self, timetag: int) -> int:
        """The first step due at or after ``timetag`` (join a running grid: ``ticks(first=
        grid.index_at(oscsync.now()))``)."""
        ahead = Fraction(tt.difference(timetag, self.start))
        index = max(0, math.ceil(ahead / self.period) - 1)
        while tt.difference(self.timetag(index), timetag) < 0:
            index += 1
        return index

    def __repr__(self) -> str:
        return (
            f"Grid(bpm={self.bpm:g}, beats_per_bar={self.beats_per_bar}, "
            f"steps_per_beat={self.steps_per_beat}, swing={self.swing:g}, "
            f"start={tt.format_hex(self.start)})"
        )
