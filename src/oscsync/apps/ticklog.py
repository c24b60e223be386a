"""Tick logs: writing them (``metronome listen --log``) and reading and scoring them
(``oscsync stats``) in bounded memory.

**Writing.** :class:`LogWriter` never raises into the listener: the first failed write (a full
disk, ``/dev/full``, a removed USB stick) is kept in :attr:`LogWriter.error`, reported through
``on_error`` at once, and nothing more is written; :attr:`LogWriter.lines` counts what was. Before,
``--log /dev/full`` gave one generic warning, a summary that looked as if ticks were logged, and a
traceback at exit (issue 20, item 11).

**Reading.**
A tick log can be long (a day at 240 bpm is 345,600 lines) and is not trusted: it may be cut
short, edited, or not a log at all. So the file is **streamed** line by line, each line read at
most :data:`MAX_LINE_BYTES` (a longer one is skipped whole), a line nested deeper than any tick
record is refused before ``json.loads`` sees it, and of each record only the three numbers
scoring needs are kept, in flat arrays (17 bytes a tick). Reading the whole file and keeping
every record as a dict made a 234 MB log peak at 1.8 GB, and a line of 100,000 ``[`` ended in a
RecursionError traceback (issue 20, item 2).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import statistics
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from oscsync.outfile import open_output

if TYPE_CHECKING:  # the lab (netem, clock sync) is imported only when scoring
    from oscsync.apps.scoring import Score

MAX_LINE_BYTES = 64 * 1024
"""A tick record is about 250 bytes; a longer line is not one (skipped and counted)."""
MAX_SKIPPED_LINE_BYTES = 64 << 20
"""How far a line longer than :data:`MAX_LINE_BYTES` is read past, looking for its end (a
damaged log may hold megabytes of garbage; no file holds only that)."""
MAX_LINES_BEFORE_A_TICK = 10_000
"""Lines (blank ones too) read without a single tick record before the file is called no tick
log."""
MAX_BRACKETS = 16
"""Opening brackets a line may hold: a record is one flat object (``[`` only in an IPv6
source such as ``[::1]:9001``); deeper JSON would only cost recursion."""
MAX_TICKS = 5_000_000
"""Ticks one log may hold (two weeks at 240 bpm): about 85 MB of arrays, then a clear error."""
MAX_LOG_BYTES = MAX_TICKS * 1024
"""Bytes one log may hold: every tick record with room to spare (~5 GB)."""
MAX_TIME = 1e12
"""Unix seconds up to the year 33,658: larger values are not times, and their differences could
overflow a float while scoring."""
_MAX_GRID_INDEX = 2**53
"""Tick numbers beyond this are not exact as floats: the ticks are too far apart for one grid."""


class LogError(ValueError):
    """A tick log that cannot be read or scored."""


class LogWriter:
    """A tick log file that turns a failed write into :attr:`error` instead of an exception.

    ``write`` and ``flush`` are what :class:`~oscsync.apps.metronome.MetronomeListener` calls;
    each written line is flushed, so a failure shows at the first tick, not at exit.
    """

    def __init__(self, path: Path, on_error: Callable[[OSError], None] | None = None) -> None:
        self.path = path
        self.on_error = on_error
        self.error: OSError | None = None
        self.lines = 0
        self._lock = threading.Lock()
        # OSError here is the caller's to report (a named pipe nobody reads: ENXIO, no wait).
        self._file = open_output(path)

    def write(self, text: str) -> int:
        with self._lock:
            if self.error is None:
                try:
                    self._file.write(text)
                    self._file.flush()
                except OSError as exc:
                    self._fail(exc)
                else:
                    self.lines += text.count("\n")
        return len(text)

    def flush(self) -> None:
        """Every write is flushed already."""

    def close(self) -> None:
        with self._lock:
            try:
                self._file.close()
            except OSError as exc:
                if self.error is None:
                    self._fail(exc)
                else:  # the buffer that failed once fails again; close the descriptor anyway
                    with contextlib.suppress(OSError):
                        self._file.close()

    def describe_error(self) -> str:
        """``cannot write PATH: REASON`` (empty without an error)."""
        if self.error is None:
            return ""
        return f"cannot write {self.path}: {self.error.strerror or self.error}"

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        if self.on_error is not None:
            self.on_error(exc)


@dataclass
class TickTimes:
    """What scoring needs of each tick record, in file order: its time on the beat grid (timetag,
    or arrival of a plain tick), its onset, and whether it arrived late or was played late."""

    when: array[float] = field(default_factory=lambda: array("d"))
    onset: array[float] = field(default_factory=lambda: array("d"))
    arrived_late: bytearray = field(default_factory=bytearray)
    played_late: bytearray = field(default_factory=bytearray)
    timed: bool = False
    """True if any record had a timetag."""
    bad: int = 0
    """Lines that were not tick records (skipped)."""

    def __len__(self) -> int:
        return len(self.when)

    def add(self, record: dict[str, Any]) -> None:
        stamp = record.get("timetag")
        self.timed = self.timed or stamp is not None
        self.when.append(float(stamp if stamp is not None else record["arrival"]))
        self.onset.append(float(record["onset"]))
        if "arrived_late" in record:
            arrived = bool(record["arrived_late"])
            played = bool(record.get("played_late"))
        else:  # a log from before issue 29: only "late" (handled > 1 ms after the timetag)
            played = bool(record.get("late"))
            arrived = played and stamp is not None and float(record["arrival"]) > stamp
        self.arrived_late.append(arrived)
        self.played_late.append(played and not arrived)


def read_log(path: Path, max_ticks: int = MAX_TICKS) -> TickTimes:
    """The tick times of a ``metronome listen --log`` file, streamed; bad lines are counted.

    A bad line (too long, not UTF-8, not JSON, not an object, or an ``onset``, ``arrival`` or
    ``timetag`` that is not a number of Unix seconds) is skipped and counted in ``bad``.
    Messages leave the file name to the caller.
    """
    times = TickTimes()
    try:
        with path.open("rb") as stream:
            for line in _lines(stream, times):
                record = _tick_record(line)
                if record is None:
                    times.bad += 1
                    continue
                if len(times) >= max_ticks:
                    raise LogError(f"more than {max_ticks:,} ticks: split the log")
                times.add(record)
    except OSError as exc:
        raise LogError(f"cannot read: {exc.strerror or exc}") from None
    return times


def _lines(stream: BinaryIO, times: TickTimes) -> Iterator[bytes]:
    """Non-blank lines of at most :data:`MAX_LINE_BYTES`; longer ones are counted bad.

    What is read is bounded, whatever the file is (issue 27, item 13: ``stats /dev/zero`` read
    zeros forever, one endless "line"): a long line is skipped to its end only up to
    :data:`MAX_SKIPPED_LINE_BYTES`, the first :data:`MAX_LINES_BEFORE_A_TICK` lines must hold a
    tick record (``/dev/urandom`` has newlines), and a log is at most :data:`MAX_LOG_BYTES`.
    """
    number = 0
    total = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        total += len(line)
        if len(line) > MAX_LINE_BYTES:
            times.bad += 1
            skipped = len(line)
            while line and not line.endswith(b"\n"):  # skip the rest, a bounded piece at a time
                if skipped > MAX_SKIPPED_LINE_BYTES:
                    raise LogError(
                        f"line {number} goes on for more than "
                        f"{MAX_SKIPPED_LINE_BYTES // 2**20} MiB: not a tick log"
                    )
                line = stream.readline(MAX_LINE_BYTES)
                skipped += len(line)
            total += skipped
        elif line.strip():
            yield line
        if number >= MAX_LINES_BEFORE_A_TICK and not times:
            raise LogError(f"none of the first {number:,} lines is a tick record: not a tick log")
        if total > MAX_LOG_BYTES:
            raise LogError(f"larger than {MAX_LOG_BYTES // 2**30} GiB: not one tick log")


def _tick_record(line: bytes) -> dict[str, Any] | None:
    if line.count(b"[") + line.count(b"{") > MAX_BRACKETS:
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(record, dict):
        return None
    values = [record.get("onset"), record.get("arrival")]
    if record.get("timetag") is not None:
        values.append(record["timetag"])
    return record if all(_is_time(value) for value in values) else None


def _is_time(value: Any) -> bool:
    # json.loads reads NaN, Infinity and 1e999, and integers too large for a float.
    if isinstance(value, bool):
        return False
    try:
        return abs(float(value)) <= MAX_TIME
    except (TypeError, ValueError, OverflowError):
        return False


def score_log(times: TickTimes, bpm: float | None = None) -> tuple[Score, float]:
    """Score a tick log: tick numbers from timetags (or arrivals) on the beat grid.

    Returns the score and the period used (``60/bpm``, or the median interval when not given).
    The first record on each grid slot counts (a duplicate from netem is ignored). Memory: the
    arrays, plus a sorted copy of the times while the median is found and, only if the log is
    out of order, one index per tick.
    """
    when = times.when
    if not when:
        raise LogError("the log has no ticks")
    period = 60.0 / bpm if bpm is not None else _median_interval(when)
    origin = min(when)
    span = (max(when) - origin) / period
    if not math.isfinite(span) or span > _MAX_GRID_INDEX:
        raise LogError("the ticks' times are too far apart to put on one beat grid")
    grid = array("q", (round((w - origin) / period) for w in when))
    order: Sequence[int] = range(len(grid))
    if any(b < a for a, b in itertools.pairwise(grid)):
        order = sorted(order, key=grid.__getitem__)  # stable: file order within a slot
    return _score_in_grid_order(times, grid, order, period, origin), period


def _median_interval(when: array[float]) -> float:
    ordered = sorted(when)
    gaps = array("d", (b - a for a, b in itertools.pairwise(ordered) if b - a > 1e-6))
    del ordered
    if not gaps:
        raise LogError("cannot tell the beat from fewer than two ticks: give --bpm")
    return statistics.median(gaps)


def _first_per_slot(grid: array[int], order: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(tick number, record index) of the first record on each grid slot, in tick order."""
    previous = None
    for index in order:
        k = grid[index]
        if k != previous:
            previous = k
            yield k, index


def _score_in_grid_order(
    times: TickTimes, grid: array[int], order: Sequence[int], period: float, origin: float
) -> Score:
    # Residuals are taken from ``origin``: summed as Unix seconds (1.8e9 each) a million of them
    # lost 0.3 ms of the mean to rounding.
    from oscsync.apps.scoring import Score

    onset, arrived_late, played_late = times.onset, times.arrived_late, times.played_late
    received = arrived_count = played_count = 0
    residual_sum = 0.0
    # Intervals between consecutive ticks, as a running mean and sum of squares (Welford).
    intervals, mean, squares = 0, 0.0, 0.0
    last: tuple[int, float] | None = None
    for k, index in _first_per_slot(grid, order):
        received += 1
        arrived_count += arrived_late[index]
        played_count += played_late[index]
        residual_sum += onset[index] - origin - k * period
        if last is not None and last[0] == k - 1:
            interval = onset[index] - last[1]
            intervals += 1
            delta = interval - mean
            mean += delta / intervals
            squares += delta * (interval - mean)
        last = (k, onset[index])
    centre = residual_sum / received
    grid_error = max(
        abs(onset[index] - origin - k * period - centre)
        for k, index in _first_per_slot(grid, order)
    )
    assert last is not None
    return Score(
        received=received,
        expected=last[0] + 1,
        ioi_std=math.sqrt(squares / (intervals - 1)) if intervals > 1 else 0.0,
        max_grid_error=grid_error,
        arrived_late=arrived_count,
        played_late=played_count,
        timed=times.timed,
    )
