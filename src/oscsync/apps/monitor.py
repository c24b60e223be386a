"""``oscsync timetag monitor``: how much headroom incoming bundles have, live.

The workshop's Pure Data patch shows it on ``[unpackOSC]``'s second outlet: milliseconds from now
until the bundle's timetag. Here, per bundle, **headroom** = timetag − arrival, in ms: positive
means the bundle came early enough to be played on time (forward synchronisation works), negative
means it arrived after the moment it was meant for. Below −1 ms it **arrived late** (the one
threshold of :mod:`oscsync.lateness`: the network or the sender's offset is to blame); a monitor
plays nothing, so it never counts anything *played* late. Rolling statistics over the last
``window`` bundles (mean, standard deviation, min, max, arrived-late count) show the jitter the
timetag lead has to cover.

The endpoint hands over messages, not bundles; the messages of one datagram share their arrival
time, source and timetag, so consecutive messages that agree on all three count as one bundle
(a nested bundle with a different timetag counts as another). Plain messages and ``IMMEDIATELY``
bundles have no headroom: they are counted, not measured.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics
import threading
from collections import deque
from dataclasses import dataclass
from typing import TextIO

from oscsync.clock import Clock
from oscsync.lateness import LATE_THRESHOLD
from oscsync.net.hostport import HostPort
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.terminal import display
from oscsync.terminal.liveline import LiveLine

DEFAULT_WINDOW = 100
"""Bundles the rolling statistics cover: a few seconds of a metronome, and O(window) to update."""

LIVE_REFRESH = 0.1
"""Seconds between redraws of the in-place line on a terminal (a flood must not flood the TTY)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One bundle: where it came from, its first address, and its headroom in ms."""

    arrival: float
    source: tuple[str, int]
    address: str
    timetag: int
    headroom_ms: float

    @property
    def arrived_late(self) -> bool:
        """It arrived more than the late threshold (1 ms) after its timetag."""
        return self.headroom_ms < -LATE_THRESHOLD * 1000.0


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of the last ``n`` bundles' headroom (ms), and totals since the start."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    arrived_late: int
    bundles: int
    arrived_late_total: int
    unmeasured: int
    """Plain messages and IMMEDIATELY bundles seen (no headroom to measure)."""


class Monitor:
    """Turns received messages into per-bundle :class:`Sample` s and rolling statistics."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 bundle, got {window}")
        self._window: deque[float] = deque(maxlen=window)
        self._last_key: tuple[float, tuple[str, int], int | None] | None = None
        self.bundles = 0
        self.arrived_late_total = 0
        self.unmeasured = 0

    def observe(self, received: Received) -> Sample | None:
        """The sample for a new bundle, or None (same bundle as before, plain, immediate)."""
        tag = received.timetag
        key = (received.arrival, received.source, tag)
        if key == self._last_key:
            return None
        self._last_key = key
        if tag is None or tag == tt.IMMEDIATELY:
            self.unmeasured += 1
            return None
        headroom = (tt.to_unix(tag, received.arrival) - received.arrival) * 1000.0
        sample = Sample(received.arrival, received.source, received.address, tag, headroom)
        self.bundles += 1
        self.arrived_late_total += sample.arrived_late
        self._window.append(headroom)
        return sample

    def stats(self) -> WindowStats:
        values = list(self._window)
        if not values:
            nan = math.nan
            return WindowStats(0, nan, nan, nan, nan, 0, 0, 0, self.unmeasured)
        return WindowStats(
            n=len(values),
            mean=statistics.fmean(values),
            std=statistics.pstdev(values) if len(values) > 1 else 0.0,
            min=min(values),
            max=max(values),
            arrived_late=sum(1 for v in values if v < -LATE_THRESHOLD * 1000.0),
            bundles=self.bundles,
            arrived_late_total=self.arrived_late_total,
            unmeasured=self.unmeasured,
        )


def _clock_text(unix: float) -> str:
    return _dt.datetime.fromtimestamp(unix, tz=_dt.timezone.utc).strftime("%H:%M:%S.%f")


def stats_text(stats: WindowStats) -> str:
    """``mean +49.901 std 0.045 min +49.812 max +50.010 ms, arrived late 0/100 (total
    0/1234)``."""
    return (
        f"mean {stats.mean:+.3f} std {stats.std:.3f} min {stats.min:+.3f} "
        f"max {stats.max:+.3f} ms, arrived late {stats.arrived_late}/{stats.n} "
        f"(total {stats.arrived_late_total}/{stats.bundles})"
    )


def text_line(sample: Sample, stats: WindowStats) -> str:
    """One line per bundle, for a pipe or a log: arrival, source, address, headroom, stats."""
    return (
        f"{_clock_text(sample.arrival)}  {HostPort(*sample.source)}  "
        f"{display.escape(sample.address)}  headroom {sample.headroom_ms:+.3f} ms"
        f"{'  ARRIVED LATE' if sample.arrived_late else ''}  |  {stats_text(stats)}"
    )


def live_text(sample: Sample, stats: WindowStats) -> str:
    """The single status line a terminal shows, redrawn in place."""
    return (
        f"headroom {sample.headroom_ms:+.3f} ms  |  last {stats.n}: {stats_text(stats)}  |  "
        f"{HostPort(*sample.source)} {display.escape(sample.address)}"
    )


def _number(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def json_line(sample: Sample, stats: WindowStats) -> str:
    """A stable JSON object per bundle."""
    record = {
        "arrival": round(sample.arrival, 6),
        "source": f"{sample.source[0]}:{sample.source[1]}",
        "address": sample.address,
        "timetag": tt.format_hex(sample.timetag),
        "headroom_ms": round(sample.headroom_ms, 6),
        "arrived_late": sample.arrived_late,
        "window": {
            "n": stats.n,
            "mean_ms": _number(stats.mean),
            "std_ms": _number(stats.std),
            "min_ms": _number(stats.min),
            "max_ms": _number(stats.max),
            "arrived_late": stats.arrived_late,
        },
        "bundles": stats.bundles,
        "arrived_late_total": stats.arrived_late_total,
    }
    # ASCII escapes: a C1 control such as U+009B in an address must not reach a terminal raw.
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


class MonitorView:
    """Writes what a :class:`Monitor` sees: ``lines`` (one per bundle), ``jsonl`` or ``live``.

    ``live`` keeps one line on a terminal and redraws it in place (``\\r`` + erase line) at most
    every :data:`LIVE_REFRESH` seconds; :meth:`refresh` draws what is pending (the CLI calls it
    while it waits) and :meth:`finish` ends the line. Sets :attr:`done` after ``count`` bundles.

    Like ``dump`` (issue 20, item 10): a closed output (``| head -1``) sets :attr:`done` and
    :attr:`output_closed` instead of raising, and the main thread never waits for the lock a
    write blocked on a full pipe holds (:meth:`refresh` skips, :meth:`finish` gives up), so
    SIGTERM always ends the command.
    """

    def __init__(
        self,
        out: TextIO,
        clock: Clock,
        *,
        mode: str = "lines",
        window: int = DEFAULT_WINDOW,
        count: int | None = None,
        live: LiveLine | None = None,
    ) -> None:
        if mode not in ("lines", "jsonl", "live"):
            raise ValueError(f"unknown monitor output mode {mode!r}")
        self.out = out
        self.clock = clock
        self.mode = mode
        self.monitor = Monitor(window)
        self.count = count
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._pending: str | None = None
        self._last_draw = -math.inf
        self._drawn = False
        self.output_closed = False
        # The shared live line (fits the terminal's width, keeps warnings off it: issue #13).
        self.live = live if live is not None else LiveLine(out)

    def on_message(self, received: Received) -> None:
        """The endpoint's callback (receive thread)."""
        with self._lock:
            if self.done.is_set():
                return
            sample = self.monitor.observe(received)
            if sample is None:
                return
            stats = self.monitor.stats()
            try:
                if self.mode == "live":
                    self._pending = live_text(sample, stats)
                    self._draw_if_due()
                else:
                    line = (
                        json_line(sample, stats)
                        if self.mode == "jsonl"
                        else text_line(sample, stats)
                    )
                    self.out.write(line + "\n")
                    self.out.flush()
                if self.count is not None and self.monitor.bundles >= self.count:
                    self._draw()
                    self.done.set()
            except BrokenPipeError:
                self._output_gone()

    def _output_gone(self) -> None:
        # `monitor | head -1`: the reader is gone, which means "enough", not an error.
        self.output_closed = True
        self.done.set()

    def refresh(self) -> None:
        """Draw a pending live line if the refresh interval has passed (skipped while the
        receive thread holds the output, e.g. blocked on a full pipe)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._draw_if_due()
        except BrokenPipeError:
            self._output_gone()
        finally:
            self._lock.release()

    def finish(self, timeout: float = 1.0) -> bool:
        """Draw what is pending and end the live line (so the shell prompt starts clean).

        Returns False when the output could not be finished: closed, or still held by a write
        blocked for ``timeout`` seconds (the caller then must not wait for stdout either).
        """
        if self.output_closed or not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._draw()
            if self._drawn:
                self.live.end()
                self._drawn = False
        except BrokenPipeError:
            self._output_gone()
        finally:
            self._lock.release()
        return not self.output_closed

    def _draw_if_due(self) -> None:
        if self.clock.monotonic() - self._last_draw >= LIVE_REFRESH:
            self._draw()

    def _draw(self) -> None:
        if self._pending is None:
            return
        self.live.show(self._pending)
        self._pending = None
        self._drawn = True
        self._last_draw = self.clock.monotonic()


def summary(monitor: Monitor) -> str:
    """One line for stderr when the monitor stops."""
    stats = monitor.stats()
    text = f"monitor: {stats.bundles} bundles, {stats.arrived_late_total} arrived late"
    if stats.n:
        text += f"; last {stats.n}: {stats_text(stats)}"
    if stats.unmeasured:
        text += f"; {stats.unmeasured} plain or immediate (no headroom)"
    return text
