"""How steady a follower's ticks were: :class:`Score` (inter-onset std, grid error, arrived
late, played late, lost) and the spread between followers, from a lab
:class:`~oscsync.apps.labrecords.SessionResult` or from tick logs (``oscsync stats``,
:mod:`oscsync.apps.ticklog`).

Scoring uses the tick number ``k`` (recovered by the lab from the arrival time on the reference
clock); the first bar is a count-in while followers sync, and is not scored. The lab scores
when each tick was *played* (:attr:`~oscsync.apps.lab.FollowerResult.played_ref`), read on the
one reference clock every follower shares, as an outside listener would hear it: for a player
that places sounds (the WAV renderer, a sound card) that is the onset it was asked for, or
later if it was handed over too late; for one that plays when told, the moment its timer ran.
What no figure here contains is the sound card's own placement error (its frame clock, blocks,
JACK's mapping): measured from outside, through JACK, it added 0.1-0.3 ms at p99.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oscsync.stats import percentile

if TYPE_CHECKING:  # scoring a tick log (ticklog) loads neither the lab's netem nor the metronome
    from oscsync.apps.labrecords import FollowerResult, SessionResult


@dataclass(frozen=True)
class Score:
    """How steady one follower's ticks were (times in seconds)."""

    received: int
    expected: int
    ioi_std: float
    """Standard deviation of the intervals between consecutive onsets."""
    max_grid_error: float
    """Largest distance of an onset from the best-fitting grid of the nominal period."""
    arrived_late: int
    """Ticks that arrived more than 1 ms after their timetag (:mod:`oscsync.lateness`)."""
    played_late: int
    """Ticks that arrived in time and were played more than 1 ms after it."""
    timed: bool

    @property
    def late(self) -> int:
        return self.arrived_late + self.played_late

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def _pct(self, count: int) -> float:
        return 100.0 * count / self.received if self.received else math.nan

    @property
    def late_pct(self) -> float:
        return self._pct(self.late)

    def row(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "ioi_std_ms": round(self.ioi_std * 1e3, 4),
            "max_grid_error_ms": round(self.max_grid_error * 1e3, 4),
            "late_pct": round(self.late_pct, 2),
            "arrived_late_pct": round(self._pct(self.arrived_late), 2),
            "played_late_pct": round(self._pct(self.played_late), 2),
            "lost": self.lost,
        }


def score(
    onsets: dict[int, float],
    arrived_late: dict[int, bool],
    played_late: dict[int, bool],
    period: float,
    expected: int,
    first: int = 0,
    timed: bool = True,
) -> Score:
    """Score ticks ``first .. first+expected-1`` given their onsets by tick number."""
    ks = sorted(k for k in onsets if k >= first)
    intervals = [onsets[b] - onsets[a] for a, b in itertools.pairwise(ks) if b == a + 1]
    ioi_std = statistics.stdev(intervals) if len(intervals) > 1 else 0.0
    residuals = [onsets[k] - k * period for k in ks]
    if residuals:
        centre = statistics.fmean(residuals)
        grid_error = max(abs(r - centre) for r in residuals)
    else:
        grid_error = math.nan
    return Score(
        received=len(ks),
        expected=expected,
        ioi_std=ioi_std,
        max_grid_error=grid_error,
        arrived_late=sum(1 for k in ks if arrived_late.get(k)),
        played_late=sum(1 for k in ks if played_late.get(k)),
        timed=timed,
    )


def score_follower(result: SessionResult, follower: FollowerResult) -> Score:
    spec = result.spec
    return score(
        follower.played_ref,
        follower.arrived_late,
        follower.played_late,
        result.period,
        spec.ticks - spec.count_in,
        spec.count_in,
        timed=not spec.plain or spec.offset > 0,
    )


def spread(result: SessionResult) -> list[float]:
    """Per tick heard by every follower: latest played − earliest (reference clock), seconds."""
    if len(result.followers) < 2:
        return []
    common = set.intersection(*(set(f.played_ref) for f in result.followers))
    values = []
    for k in sorted(common):
        if k < result.spec.count_in:
            continue
        onsets = [f.played_ref[k] for f in result.followers]
        values.append(max(onsets) - min(onsets))
    return values


def p99(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return percentile(ordered, 0.99) if ordered else math.nan
