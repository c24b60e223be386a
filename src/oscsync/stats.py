"""Small statistics every measuring part shares: running mean/std, percentiles, recent samples
with their maximum, a level with its peak, warn-once.

One module for them (issue #12 item 5): the scheduler's lateness, the metronome's intervals and
headroom, netem's achieved delays, replay's send lateness and the lab's spreads all use these.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list (``fraction`` in 0..1)."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class RunningStats:
    """Count, mean, standard deviation, min and max without keeping the samples (Welford's
    method); with ``recent`` > 0 the last ``recent`` values are kept for :meth:`percentile`
    (bounded: netem keeps 100,000)."""

    def __init__(self, recent: int = 0) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.recent: deque[float] = deque(maxlen=recent)

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (value - self.mean)
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        if self.recent.maxlen:
            self.recent.append(value)

    @property
    def std(self) -> float:
        """Sample standard deviation (0 with fewer than two values)."""
        return math.sqrt(self._m2 / (self.count - 1)) if self.count > 1 else 0.0

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile of the recent values (NaN when none are kept)."""
        values = sorted(self.recent)
        return percentile(values, fraction) if values else math.nan


class RecentSamples:
    """The last ``size`` values added (for percentiles) and the largest of all values added
    (``-inf`` before any, as in :class:`RunningStats`).

    Less per value than :class:`RunningStats` (no mean or deviation): the scheduler's timer thread
    adds one lateness per item it runs (``Scheduler._account``), replay one per datagram sent."""

    __slots__ = ("maximum", "samples")

    def __init__(self, size: int) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.maximum = -math.inf

    def add(self, value: float) -> None:
        self.samples.append(value)
        if value > self.maximum:
            self.maximum = value

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile of the recent values (NaN before any)."""
        values = sorted(self.samples)
        return percentile(values, fraction) if values else math.nan


@dataclass(slots=True)
class Gauge:
    """A level that goes up and down (datagrams held, sockets open) and the highest it reached."""

    now: int = 0
    peak: int = 0

    def add(self, amount: int = 1) -> None:
        self.now += amount
        if self.now > self.peak:
            self.peak = self.now

    def remove(self, amount: int = 1) -> None:
        self.now -= amount


WARN_KEY_BYTES = 64 * 1024
"""Bytes of keys one :class:`WarnOnce` remembers (a few hundred keys)."""
_KEY_OVERHEAD = 100  # a str header and a set slot, roughly


class WarnOnce:
    """Calls ``on_warning`` the first time each key is warned about, then only counts on.

    Each owner (endpoint, scheduler, netem direction) warns once per reason, so a flood of bad
    datagrams is one line on stderr, not thousands (the drops themselves are counted). Some keys
    name a peer (``reply:HOST:PORT``): the keys remembered are bounded in bytes
    (:data:`WARN_KEY_BYTES`), and once that is full a new key is not warned about, so a stranger
    cycling through source addresses costs neither memory nor a line per address. The first key
    turned away is still warned about, once, saying that new warnings are counted from then on
    (else a flood of addresses would silence every later warning of another kind unseen).
    """

    def __init__(self, on_warning: Callable[[str], None]) -> None:
        self.on_warning = on_warning
        self.keys: set[str] = set()
        self.key_bytes = 0
        self.unwarned = 0
        """New keys not warned about because the key set was full."""

    def __call__(self, key: str, text: str) -> None:
        if key not in self.keys:
            if self.key_bytes + len(key) + _KEY_OVERHEAD > WARN_KEY_BYTES:
                self.unwarned += 1
                if self.unwarned == 1:
                    self.on_warning(
                        f"{text} (too many different warnings: new ones are counted, not shown)"
                    )
                return
            self.keys.add(key)
            self.key_bytes += len(key) + _KEY_OVERHEAD
            self.on_warning(text)

    def forget(self, key: str) -> None:
        """Warn about ``key`` again next time (the trouble ended: a TCP peer reconnected)."""
        if key in self.keys:
            self.keys.remove(key)
            self.key_bytes -= len(key) + _KEY_OVERHEAD

    def __contains__(self, key: object) -> bool:
        return key in self.keys
