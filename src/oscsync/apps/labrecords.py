"""The lab's records: what a run is asked to do (:class:`SessionSpec`, :class:`FollowerSpec`)
and what it measured (:class:`SessionResult`, :class:`FollowerResult`).

:mod:`oscsync.apps.lab` runs a session and fills them in; :mod:`oscsync.apps.scoring` and
:mod:`oscsync.apps.tables` read them. They live below both so that scoring can name them without
importing the lab (netem, clock sync, audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oscsync.apps.metronome import TickRecord
from oscsync.apps.netemlink import ImpairmentSpec


@dataclass(frozen=True)
class FollowerSpec:
    name: str
    skew: float = 0.0
    sync: bool = False
    drift_ppm: float = 0.0
    sync_method: str = "servo"
    """``servo`` (:class:`~oscsync.sync.follow.ClockFollower`) or ``filter`` (the minimum-delay
    filter that translated with each new estimate before issue #11)."""


@dataclass(frozen=True)
class SessionSpec:
    """One run: the leader's grid, the link, and who follows."""

    offset: float
    """Forward offset in seconds; ``None``-like 0 with ``plain`` sends plain messages."""
    link: ImpairmentSpec
    followers: tuple[FollowerSpec, ...]
    bpm: float = 240.0
    ticks: int = 32
    beats_per_bar: int = 4
    plain: bool = False
    """Offset 0 as plain messages (the workshop's example 2) rather than bundles due at once."""
    seed: int | None = 1
    count_in: int = 4


@dataclass
class FollowerResult:
    spec: FollowerSpec
    records: list[TickRecord]
    onsets_ref: dict[int, float]
    """Tick number -> onset on the reference clock (first copy of a duplicated tick): when the
    follower asked its player to sound it."""
    arrived_late: dict[int, bool]
    played_late: dict[int, bool]
    played_ref: dict[int, float] = field(default_factory=dict)
    """Tick number -> when it was played on the reference clock (the onset, or later when the
    player needed more time than was left, or its timer ran late): what scoring measures."""
    handled_ref: dict[int, float] = field(default_factory=dict)
    """Tick number -> when the listener handled it (reference clock): with a player that acts
    when told (``lead`` 0), that is when the scheduler dispatched it."""
    sync_text: str | None = None
    sync_offset: float | None = None
    """The follower's estimate of (leader − follower) clock offset, seconds."""
    sync_bound: float | None = None
    sync_true_offset: float | None = None
    """What :attr:`sync_offset` should have been (leader − follower, from the clocks themselves)."""
    sync_ppm: float | None = None
    lock_ref: float | None = None
    """When the follower could first translate timetags (reference clock)."""
    unsynced: int = 0
    """Ticks held before sync and dropped because they were already due at lock."""
    sync_checks: list[tuple[float, float, float]] = field(default_factory=list)
    """(reference time, error of the map's offset, its ± bound), every
    :data:`~oscsync.apps.lab.CHECK_EVERY` s once the follower can translate: how often the bound
    it prints covers the truth."""


@dataclass
class SessionResult:
    spec: SessionSpec
    t0: float
    period: float
    followers: list[FollowerResult] = field(default_factory=list)
    link_report: list[str] = field(default_factory=list)
