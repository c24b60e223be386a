"""``oscsync demo``: the workshop's forward-sync claim, shown on one machine in plain words.

Two runs of the same lab (:mod:`oscsync.apps.lab`): a leader at 240 bpm, a netem link per follower
with Wi-Fi-like jitter, follower A on the leader's clock and follower B with a clock skewed on
purpose and ``--sync`` on. First plain ticks played on arrival (workshop example 2), then ticks
timetagged ``offset`` ahead (example 3). The report says what happened, with a small table.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from oscsync.apps.labrecords import FollowerSpec, SessionResult, SessionSpec
from oscsync.apps.netemlink import ImpairmentSpec
from oscsync.apps.scoring import Score, score_follower, spread
from oscsync.apps.tables import aligned
from oscsync.stats import percentile

DEMO_BPM = 240.0
DEMO_LINK = ImpairmentSpec(delay=0.020, jitter=0.015, dist="uniform")
"""Wi-Fi on a busy evening: 20 ms one way, give or take 15 ms."""


def phases(
    duration: float, offset: float, skew: float, link: ImpairmentSpec, seed: int | None
) -> list[tuple[str, SessionSpec]]:
    """The two runs: plain ticks, then forward sync (same link, same seed)."""
    ticks = max(6, round(duration * DEMO_BPM / 60))
    count_in = 4 if ticks >= 12 else 2
    followers = (FollowerSpec("A"), FollowerSpec("B", skew=skew, sync=True))

    def run(offset: float, plain: bool) -> SessionSpec:
        return SessionSpec(
            offset=offset,
            link=link,
            followers=followers,
            bpm=DEMO_BPM,
            ticks=ticks,
            plain=plain,
            seed=seed,
            count_in=count_in,
        )

    return [("plain", run(0.0, True)), ("forward", run(offset, False))]


@dataclass(frozen=True)
class PhaseSummary:
    name: str
    title: str
    scores: list[Score]
    spread: list[float]

    @property
    def jitter(self) -> float:
        """Mean inter-onset std over the followers (seconds)."""
        return statistics.fmean(score.ioi_std for score in self.scores)


def summarise(name: str, title: str, result: SessionResult) -> PhaseSummary:
    scores = [score_follower(result, follower) for follower in result.followers]
    return PhaseSummary(name, title, scores, spread(result))


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 0.0005:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


SPREAD_NOTE = (
    "Times are when each follower played each tick, read on the one clock both share (for a\n"
    "sample-placing player, the onset it was asked for). Not counted: the sound card's own\n"
    "placement (its frame clock and blocks), which an outside recorder through JACK measured\n"
    "at 0.1-0.3 ms p99 more."
)
"""What the demo's figures leave out, printed under its table (issue 29: the demo printed max
0.221 ms where an outside recorder heard p99 0.28-0.58 ms)."""


def table(summaries: list[PhaseSummary], names: list[str], width: int | None = None) -> str:
    """Rows per phase and follower: jitter, arrived late, played late, lost; the spread between
    followers per phase (p50 / p99 / max).

    Wider than ``width`` columns (a narrow terminal), each phase is a block of its own instead,
    so that no row wraps (issue 30).
    """
    wide = _wide_table(summaries, names)
    if width is None or max(len(line) for line in wide.splitlines()) <= width:
        return wide
    blocks = []
    for summary in summaries:
        rows = [
            [f"  {name}", f"jitter {_ms(score.ioi_std)}", f"lost {score.lost}"]
            for name, score in zip(names, summary.scores)
        ]
        lines = [summary.title]
        for row, score in zip(_columns(rows), summary.scores):
            lines.append(row)
            if score.timed:  # plain ticks have no timetag to be late for
                lines.append(f"    arrived late {_arrived(score)}  played late {_played(score)}")
        if summary.spread:
            lines.append(f"  A↔B spread p50 / p99 / max {_spread(summary.spread)}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _arrived(score: Score) -> str:
    return f"{score.arrived_late}/{score.received}" if score.timed else "-"


def _played(score: Score) -> str:
    return f"{score.played_late}/{score.received}" if score.timed else "-"


def _spread(spread: list[float]) -> str:
    values = sorted(spread)
    return f"{_ms(statistics.median(values))} / {_ms(percentile(values, 0.99))} / {_ms(values[-1])}"


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _wide_table(summaries: list[PhaseSummary], names: list[str]) -> str:
    header = [
        "",
        "follower",
        "jitter (std)",
        "arrived late",
        "played late",
        "lost",
        "A↔B spread p50 / p99 / max",
    ]
    rows = [header]
    for summary in summaries:
        for index, (name, score) in enumerate(zip(names, summary.scores)):
            between = _spread(summary.spread) if index == 0 and summary.spread else ""
            title = summary.title if index == 0 else ""
            jitter, lost = _ms(score.ioi_std), str(score.lost)
            rows.append([title, name, jitter, _arrived(score), _played(score), lost, between])
    return aligned(rows, left_columns=2)


def headline(before: PhaseSummary, after: PhaseSummary) -> str:
    """'forward sync cut jitter from X ms to Y ms (Z×)' and the same for the followers' spread."""
    x, y = before.jitter, after.jitter
    if y < 1e-6:
        cut = f"forward sync cut jitter from {_ms(x)} to under 1 µs"
    else:
        cut = f"forward sync cut jitter from {_ms(x)} to {_ms(y)} ({x / y:.0f}×)"
    if before.spread and after.spread:
        a, b = statistics.median(before.spread), statistics.median(after.spread)
        cut += f", and the gap between the two followers from {_ms(a)} to {_ms(b)} (median)"
    return cut
