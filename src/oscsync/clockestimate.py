"""A peer clock's offset *and* frequency, from the lower envelopes of the one-way delays.

Pure: no sockets, no threads, no clock reading. It is fed time-stamped exchanges and asked for an
estimate at a time it is given, so the tests drive it through simulated links on exact numbers.

The model (issue #11). The peer's clock reads ``θ(t)`` seconds more than ours at our time ``t``,
with ``θ(t) = θ + f·(t − now)`` over the window (``f`` the frequency error, ±500 ppm at most on
real crystals). One ping/pong exchange (NTP's T1..T4, RFC 5905 §8) is *two* one-way samples:

* forward, our T1 to the peer's T2:   ``x = T2 − T1 = θ(T1) + d_out``,
* reverse, the peer's T3 to our T4:   ``z = T4 − T3 = d_back − θ(T4)``,

where the delays ``d`` are never below the path's minimum ``D``. So ``x − f·(t − now)`` stays at or
above ``θ + D``, and ``z + f·(t − now)`` at or above ``D − θ``; the samples that found the link
empty lie on those floors. For a trial frequency ``f`` let ``A(f)`` and ``B(f)`` be the two minima;
then ``θ̂ = (A − B)/2`` and ``D̂ = (A + B)/2``. A wrong ``f`` tilts the floors, and the samples at
the window's ends pull them down; the fit takes the ``f`` that leaves the least total height of
samples above the two floors (Moon, Skelly & Towsley, INFOCOM 1999, fit one direction that way
with a linear programme; one slope for both directions makes it well posed). ``A`` and ``B`` are
concave and piecewise linear in ``f`` (minima of lines), bending at the slopes of the lower convex
hulls of the two point sets, so the best ``f`` is found exactly by trying those few slopes.

Why per direction: with symmetric jitter the minimum of ``n`` one-way delays sits ``~w/n`` above the
floor (``w`` the jitter's width), in each direction independently, while the *round trip* of the
best exchange needs both halves quiet at once, which a minimum-RTT filter (NTP, and
:func:`oscsync.clocksync.choose`) waits for far longer.

What no two-way method can see: a *fixed* asymmetry (the path one way is 3 ms longer than the
other) shifts ``θ̂`` by half of it. :attr:`ClockEstimate.bound` assumes equal minimum delays each
way, and ``docs/protocol.md`` says so.

The bound. Above its floor, a direction's samples come at some density; the excess of the
minimum over the true floor is then roughly exponential, with the same mean ``s`` as the gaps
between the smallest residuals, which are measured (the k-th smallest residual over k−1). The
offset error ``(e_back − e_out)/2`` of two such excesses is within ``1.5·s`` 95 % of the time
(Laplace); the bound is :data:`BOUND_FACTOR` ``·s``, for the noise in ``s`` and in the slope, and
never more than the hard bound ``D̂`` (the delays cannot be negative).
``tests/test_clockestimate.py`` checks it covers the true error at least 95 % of the time on
uniform, exponential and Pareto links with drift.

A peer restart or a step of its clock puts new samples *below* one envelope, which jitter never
does (it only adds delay): :data:`RESTART_AFTER` such exchanges in a row clear the window
(:attr:`EnvelopeEstimator.restarts`), and the follower steps once, with a warning.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

WINDOW = 30.0
"""Seconds of samples the fit uses. Longer: a better floor and frequency, but a frequency that
changes (a laptop warming up: ~0.1 ppm/s) bends the envelope; 30 s at 100 probes a second gives
3,000 samples each way, a floor within ~w/3000 (10 µs for ±15 ms of jitter)."""
MAX_SAMPLES = 4096
"""Samples kept per direction, whatever the probe rate (bounded memory)."""
MAX_PPM = 1000.0
"""Largest frequency error believed (crystals: ±100 ppm; ``--clock-drift`` allows ±500)."""
MIN_EXCHANGES = 3
"""Exchanges before an estimate is given (fewer: the first pong alone would be trusted)."""
GAP_SAMPLES = 8
"""Smallest residuals whose spacing measures how fast the floor is found (see the bound)."""
BOUND_FACTOR = 3.5
"""95 % of a Laplace(s) difference over two is 1.5·s; more for the noise in s and in the slope
(simulated: the 95th percentile of error/bound is 0.9 with 3.5; tests/test_clockestimate.py)."""
STEP_THRESHOLD = 0.002
"""An exchange this far below an envelope (or 8 bounds, if more) cannot be jitter: a clock step."""
RESTART_AFTER = 3
"""Consecutive impossible exchanges that mean the peer's clock really moved (one is a fluke or a
forgery; three in a row from the chosen peer's address, matching our pings, is a restart)."""
MIN_BOUND = 50e-6
"""No bound is smaller: timestamps are taken in Python, some µs from the wire and not equally so
each way (measured through netem on loopback with no delay: 45 µs of offset error)."""
MIN_FREQUENCY_SPAN = 2.0
"""Seconds of samples before a frequency is fitted (until then it is taken as 0): over the 10 ms of
a start burst, jitter alone makes any slope up to the limit fit, and a map that runs 1,000 ppm
wrong puts a tick 1.5 s ahead 1.5 ms off (measured on loopback)."""
MIN_SETTLED = 20
"""Samples per direction before an exchange below the envelope counts as impossible: a young
window's envelope is still far above the floor, and new minima are expected."""


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """What the estimator believes at our time :attr:`at` (seconds on the caller's time scale)."""

    at: float
    offset: float
    """Seconds the peer's clock is ahead of ours at :attr:`at` (negative: behind)."""
    frequency: float
    """How fast the offset grows, seconds per second (× 1e6 = ppm; positive: the peer runs fast)."""
    bound: float
    """The true offset is within this many seconds of :attr:`offset`, 95 % of the time, assuming
    the minimum delay is the same both ways."""
    delay: float
    """The minimum one-way delay of the path, as seen by the fit (seconds)."""
    forward: int
    reverse: int
    """Samples in the window, each way."""
    span: float
    """Seconds between the oldest and the newest sample."""

    @property
    def ppm(self) -> float:
        return self.frequency * 1e6

    def offset_at(self, t: float) -> float:
        """The offset extrapolated to our time ``t``."""
        return self.offset + self.frequency * (t - self.at)


BUCKET = 0.1
"""Seconds per bucket of the envelope: only the lowest sample of each bucket can matter to the
hull (the slope moves a point by at most 1,000 ppm × 0.1 s = 0.1 µs within one), so the fit reads
300 bucket minima for a 30 s window instead of 3,000 samples at 100 probes/s (4.6 ms -> ~0.6 ms,
which the follower's receive thread holds the GIL for: the scheduler's tolerance is 1 ms)."""


class _Direction:
    """One direction's points ``(t, y)``, sorted by ``t``, trimmed to the window, and the lowest
    point of each :data:`BUCKET`."""

    def __init__(self, max_samples: int) -> None:
        self.ts: list[float] = []
        self.ys: list[float] = []
        self.max_samples = max_samples
        self._keys: list[int] = []
        self._lowest: dict[int, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, t: float, y: float) -> None:
        # Pongs can arrive out of order (reordering links): insert in place.
        index = bisect.bisect_right(self.ts, t)
        self.ts.insert(index, t)
        self.ys.insert(index, y)
        if len(self.ts) > self.max_samples:
            del self.ts[0], self.ys[0]
        key = math.floor(t / BUCKET)
        lowest = self._lowest.get(key)
        if lowest is None:
            bisect.insort(self._keys, key)
            self._lowest[key] = (t, y)
        elif y < lowest[1]:
            self._lowest[key] = (t, y)

    def trim(self, oldest: float) -> None:
        cut = bisect.bisect_left(self.ts, oldest)
        if cut:
            del self.ts[:cut], self.ys[:cut]
        first = math.floor(self.ts[0] / BUCKET) if self.ts else math.inf
        drop = bisect.bisect_left(self._keys, first)
        for key in self._keys[:drop]:
            del self._lowest[key]
        del self._keys[:drop]

    def clear(self) -> None:
        self.ts.clear()
        self.ys.clear()
        self._keys.clear()
        self._lowest.clear()

    def lowest(self) -> list[tuple[float, float]]:
        """The lowest point of each bucket, in time order."""
        lowest = self._lowest
        return [lowest[key] for key in self._keys]

    def hull(self, origin: float) -> list[tuple[float, float]]:
        """The lower convex hull of the points, times relative to ``origin`` (monotone chain)."""
        lower: list[tuple[float, float]] = []
        for t, y in self.lowest():
            point = (t - origin, y)
            while len(lower) >= 2:
                (t0, y0), (t1, y1) = lower[-2], lower[-1]
                # Drop the middle point if it is not below the chord (cross product <= 0).
                if (t1 - t0) * (point[1] - y0) - (y1 - y0) * (point[0] - t0) <= 0:
                    lower.pop()
                else:
                    break
            lower.append(point)
        return lower


def _floor(hull: Sequence[tuple[float, float]], slope: float) -> float:
    """min over the points of ``y − slope·t``: attained on a hull vertex."""
    return min(y - slope * t for t, y in hull)


def _edge_slopes(hull: Sequence[tuple[float, float]]) -> list[float]:
    slopes = []
    for (t0, y0), (t1, y1) in itertools.pairwise(hull):
        if t1 > t0:
            slopes.append((y1 - y0) / (t1 - t0))
    return slopes


class EnvelopeEstimator:
    """Offset and frequency of a peer's clock from ping/pong exchanges (times in seconds).

    Feed :meth:`add_exchange` with T1 and T4 on our time scale and T2 and T3 on the peer's (any
    common origin: the follower uses seconds since its first ping), then ask :meth:`estimate`.
    """

    def __init__(
        self,
        *,
        window: float = WINDOW,
        max_samples: int = MAX_SAMPLES,
        max_ppm: float = MAX_PPM,
        min_exchanges: int = MIN_EXCHANGES,
    ) -> None:
        if window <= 0 or max_samples < 2 or max_ppm < 0 or min_exchanges < 1:
            raise ValueError("window, max_samples, max_ppm and min_exchanges must be positive")
        self.window = window
        self.max_freq = max_ppm * 1e-6
        self.min_exchanges = min_exchanges
        self._out = _Direction(max_samples)
        self._back = _Direction(max_samples)
        self._exchanges = 0
        self._suspects: list[tuple[float, float, float, float]] = []
        self._last: ClockEstimate | None = None
        self.restarts = 0
        """Times the window was cleared because the peer's clock moved (see the module doc)."""
        self.accepted = 0

    def add_exchange(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        """Take one exchange; False if it was held back as impossible (a possible clock step).

        The caller has already refused exchanges that are not well formed (T4 before T1, a
        negative turnaround): see :func:`oscsync.clocksync.exchange_problem`.
        """
        if self._is_impossible(t1, t2, t3, t4):
            self._suspects.append((t1, t2, t3, t4))
            if len(self._suspects) < RESTART_AFTER:
                return False
            suspects, self._suspects = self._suspects, []
            self._out.clear()
            self._back.clear()
            self._exchanges = 0
            self._last = None
            self.restarts += 1
            for exchange in suspects:
                self._take(*exchange)
            return True
        self._suspects.clear()
        self._take(t1, t2, t3, t4)
        return True

    def _take(self, t1: float, t2: float, t3: float, t4: float) -> None:
        self._out.add(t1, t2 - t1)
        self._back.add(t4, t4 - t3)
        self._exchanges += 1
        self.accepted += 1
        newest = max(self._out.ts[-1], self._back.ts[-1])
        self._out.trim(newest - self.window)
        self._back.trim(newest - self.window)

    def _is_impossible(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        if min(len(self._out), len(self._back)) < MIN_SETTLED:
            return False
        # The last estimate, extrapolated, is good enough to judge by (and costs nothing).
        estimate = self._last
        if estimate is None or abs(t4 - estimate.at) > 1.0:
            estimate = self.estimate(t4)
        if estimate is None:
            return False
        slack = max(STEP_THRESHOLD, 8 * estimate.bound)
        floor = estimate.delay
        # Below the forward floor: the peer's clock went back; below the reverse: forward.
        out_low = (t2 - t1) < estimate.offset_at(t1) + floor - slack
        back_low = (t4 - t3) < floor - estimate.offset_at(t4) - slack
        return out_low or back_low

    @property
    def exchanges(self) -> int:
        """Exchanges in the window."""
        return min(len(self._out), len(self._back))

    def clear(self) -> None:
        self._out.clear()
        self._back.clear()
        self._suspects.clear()
        self._exchanges = 0
        self._last = None

    def estimate(self, now: float) -> ClockEstimate | None:
        """The offset at our time ``now``, the frequency and the bound; None until
        :data:`MIN_EXCHANGES` exchanges are in."""
        if min(len(self._out), len(self._back)) < self.min_exchanges:
            return None
        out_hull = self._out.hull(now)
        back_hull = self._back.hull(now)
        # The fit (Moon et al.'s linear programme, both directions sharing one slope): the f
        # that puts the two floors as high as they go under all the samples, i.e. minimises the
        # samples' total height above them, n·(mean − floor) each way. That cost is convex and
        # piecewise linear in f, bending only where A(f) or B(f) bends (at a forward hull slope,
        # or minus a reverse one), so its minimum is at one of those candidates or a limit.
        span = max(self._out.ts[-1], self._back.ts[-1]) - min(self._out.ts[0], self._back.ts[0])
        limit = self.max_freq if span >= MIN_FREQUENCY_SPAN else 0.0
        candidates = [0.0, -limit, limit]
        candidates += [s for s in _edge_slopes(out_hull) if -limit <= s <= limit]
        candidates += [-s for s in _edge_slopes(back_hull) if -limit <= -s <= limit]
        n_out, n_back = len(self._out), len(self._back)
        tilt = sum(self._back.ts) - n_back * now - (sum(self._out.ts) - n_out * now)
        best_f, best_a, best_b = 0.0, 0.0, 0.0
        best_cost = float("inf")
        for f in candidates:
            a = _floor(out_hull, f)
            b = min(y + f * t for t, y in back_hull)
            cost = -n_out * a - n_back * b + f * tilt
            if cost < best_cost - 1e-15 or (
                abs(cost - best_cost) <= 1e-15 and abs(f) < abs(best_f)
            ):
                best_f, best_a, best_b, best_cost = f, a, b, cost
        offset = (best_a - best_b) / 2
        delay = (best_a + best_b) / 2
        s_out = self._gap_scale(self._out, now, best_a, best_f, +1)
        s_back = self._gap_scale(self._back, now, best_b, best_f, -1)
        bound = BOUND_FACTOR * max(s_out, s_back)
        # The hard bound: delays are not negative, so θ is within D̂ of θ̂ (when f is right).
        bound = min(bound, max(delay, 0.0)) if delay > 0 else bound
        estimate = ClockEstimate(
            at=now,
            offset=offset,
            frequency=best_f,
            bound=max(bound, MIN_BOUND),
            delay=delay,
            forward=len(self._out),
            reverse=len(self._back),
            span=span,
        )
        self._last = estimate
        return estimate

    @staticmethod
    def _gap_scale(direction: _Direction, now: float, floor: float, f: float, sign: int) -> float:
        """Mean spacing of the smallest residuals above the fitted floor (seconds)."""
        residuals = heapq.nsmallest(
            GAP_SAMPLES, (y - sign * f * (t - now) - floor for t, y in direction.lowest())
        )
        k = len(residuals)
        if k < 2:
            return float("inf")
        return max(residuals[-1], 0.0) / (k - 1)
