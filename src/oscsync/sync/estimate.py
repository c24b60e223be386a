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
hulls of the two point sets, so the cost is known exactly by trying those few slopes.

The frequency is the *posterior mean* over those slopes, not the cost's optimum (issue #11: the
optimum wandered, 3 of 5 ``oscsync clock`` runs within ±5 ppm): where the cost is nearly flat the
optimum jumps between hull vertices, while the mean sits in the middle
(:func:`_posterior_frequency`). If the two floors also *creep* the same way (a path's minimum
delay moving, as a loaded machine's does) no shared slope fits both and the frequency is off by
up to the creep: each direction's own slope (:func:`_centre_slope`) measures it, and the
frequency's bound widens to :data:`CREEP_FACTOR` times it.

Why per direction: with symmetric jitter the minimum of ``n`` one-way delays sits ``~w/n`` above the
floor (``w`` the jitter's width), in each direction independently, while the *round trip* of the
best exchange needs both halves quiet at once, which a minimum-RTT filter (NTP, and
:func:`oscsync.sync.ping.choose`) waits for far longer.

What no two-way method can see: a *fixed* asymmetry (the path one way is 3 ms longer than the
other) shifts ``θ̂`` by half of it. :attr:`ClockEstimate.bound` assumes equal minimum delays each
way, and ``docs/protocol.md`` says so.

The bound. Above its floor, a direction's samples come at some density; the excess of the
minimum over the true floor is then roughly exponential, with the same mean ``s`` as the gaps
between the smallest residuals, which are measured (the k-th smallest residual over k−1). The
offset error ``(e_back − e_out)/2`` of two such excesses is within ``1.5·s`` 95 % of the time
(Laplace); the bound is :data:`BOUND_FACTOR` ``·s`` (for the noise in ``s`` and in the slope),
at most the hard bound ``D̂`` (delays cannot be negative), plus :data:`TIMESTAMP_ALLOWANCE` for
what the timestamps themselves get wrong (the simulated links have none, the real ones do:
replayed, 17 ``oscsync clock`` runs through netem with a core busy, the bound covered 15 when it
was only floored at 50 µs, 17 with the allowance added). The
frequency's bound is the posterior's 95 % interval plus the allowance over the span.
``tests/test_clockestimate.py`` checks both cover the truth at least 95 % of the time on uniform,
exponential and Pareto links with drift, creep and a timestamp asymmetry.

A peer restart or a step of its clock puts new samples *below* one envelope, which jitter never
does (it only adds delay). So does a forger who sees the pings and answers first (issue #27
item 2: a burst of forged pongs stepped a follower +5000 ms). Such exchanges are held back
(:attr:`EnvelopeEstimator.refused`, ``offset-jump``), and only a *run* of them confirms that the
peer's clock really moved: at least :data:`RESTART_AFTER`, spanning :data:`CONFIRM_SPAN` seconds,
all agreeing on one offset (each exchange says the offset lies between ``T3 − T4`` and
``T2 − T1``; the run's ranges must overlap), and no ordinary exchange between them that rules
the run's offset out. Then the window is cleared and refilled with the run
(:attr:`EnvelopeEstimator.restarts`), and the follower steps once, with a warning. A shorter
burst, or one whose answers disagree, never moves the clock.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import Counter, deque
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
CREEP_FACTOR = 1.5
"""The frequency's bound is at least this many times the creep both floors show (the shared
slope may be off by more than the creep itself: simulated at 10 µs/s, up to 1.6 times it)."""
STEP_THRESHOLD = 0.002
"""An exchange this far below an envelope (or 8 bounds, if more) cannot be jitter: a clock step."""
RESTART_AFTER = 8
"""Impossible exchanges in a row, at least, before the peer's clock is believed to have moved."""
CONFIRM_SPAN = 2.0
"""Seconds a run of impossible exchanges must span to confirm a step of the peer's clock (from
the first one's T4 to the last one's). Without a key, anyone who sees the pings can answer them
first; a forged burst shorter than this never moves the clock. The price: a peer whose clock
really stepped is followed this much later (ticks in between keep the old map)."""
MAX_SUSPECTS = 2048
"""Impossible exchanges kept while a run is being confirmed (2 s at 200 pings a second is 400)."""
TIMESTAMP_ALLOWANCE = 50e-6
"""Added to every bound: timestamps are taken in Python, some µs from the wire and not equally so
each way, an asymmetry no two-way method sees (issue #11: ``oscsync clock`` through netem on
loopback with a fixed 20 ms each way, no jitter, erred +27, +28 and +38 µs with a core busy)."""
MIN_FREQUENCY_SPAN = 2.0
"""Seconds of samples before a frequency is fitted (until then it is taken as 0): over the 10 ms of
a start burst, jitter alone makes any slope up to the limit fit, and a map that runs 1,000 ppm
wrong puts a tick 1.5 s ahead 1.5 ms off (measured on loopback)."""
MEMORY_BUCKET = 1.0
"""Seconds per bucket of the path-delay memory (:attr:`EnvelopeEstimator.delay_memory`): the
lowest round trip of each is kept, so 10 minutes cost 600 numbers."""
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
    frequency_bound: float = math.inf
    """The true frequency is within this many s/s of :attr:`frequency`, 95 % of the time: the
    posterior's interval plus :data:`TIMESTAMP_ALLOWANCE` over :attr:`span` (``inf`` before
    :data:`MIN_FREQUENCY_SPAN` seconds of samples)."""

    @property
    def ppm(self) -> float:
        return self.frequency * 1e6

    @property
    def ppm_bound(self) -> float:
        return self.frequency_bound * 1e6

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

    def trim(self, oldest: float) -> list[tuple[float, float]]:
        """Forget the points before ``oldest``; returns the lowest point of each bucket
        forgotten whole (what :attr:`EnvelopeEstimator.delay_memory` keeps of them)."""
        cut = bisect.bisect_left(self.ts, oldest)
        if cut:
            del self.ts[:cut], self.ys[:cut]
        first = math.floor(self.ts[0] / BUCKET) if self.ts else math.inf
        drop = bisect.bisect_left(self._keys, first)
        if not drop:
            return []
        dropped = [self._lowest.pop(key) for key in self._keys[:drop]]
        del self._keys[:drop]
        return dropped

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


def _posterior_frequency(
    fits: Sequence[tuple[float, float, float]],
    mean_out: float,
    mean_back: float,
    scale_out: float,
    scale_back: float,
) -> tuple[float, float]:
    """The posterior mean of the frequency and its 95 % half-width.

    Model: above its floor each direction's samples lie like a Poisson process whose excess near
    the floor is exponential with the measured mean gap ``scale`` (per sample: ``scale·n``).
    With the floor's height integrated out, the frequency's log-likelihood is
    ``(A(f) + f·t̄_out)/s_out + (B(f) − f·t̄_back)/s_back`` (``t̄`` the mean sample time before
    now): the linear programme's cost, weighted. It is linear between the candidates ``fits``
    (``(f, A(f), B(f))``, sorted, every bend included), so it integrates exactly.

    Why the mean and not the optimum: a handful of hull corners decide the cost near its
    optimum, and real floors wobble by tens of µs (timestamps, a loaded relay), so the cost is
    nearly flat over a range of ``f`` and the optimum jumps to a corner of it; the mean stays in
    the middle (``oscsync clock`` through netem with a core busy, 17 runs of 10-30 s replayed:
    frequency error rms 2.6 ppm at the optimum, 1.95 ppm at the mean, worst 4.7 and 3.9;
    simulated uniform ±15 ms, 40 runs, no wobble: 2.1 and 2.3 ppm).
    """
    logs = [(a + f * mean_out) / scale_out + (b - f * mean_back) / scale_back for f, a, b in fits]
    top = max(logs)
    pieces: list[tuple[float, float, float, float, float, float]] = []  # f0 f1 e0 e1 k mass
    total = moment = 0.0
    for (f0, _, _), (f1, _, _), l0, l1 in zip(fits, fits[1:], logs, logs[1:], strict=False):
        width = f1 - f0
        if width <= 0:
            continue
        e0, e1 = math.exp(l0 - top), math.exp(l1 - top)
        rise = l1 - l0
        if abs(rise) < 1e-6:  # flat: the trapezoid is exact to O(rise²)
            mass = width * (e0 + e1) / 2
            first = mass * (f0 + f1) / 2
            k = 0.0
        else:
            k = rise / width
            mass = (e1 - e0) / k
            first = (f1 * e1 - f0 * e0) / k - (e1 - e0) / (k * k)
        pieces.append((f0, f1, e0, e1, k, mass))
        total += mass
        moment += first
    if not pieces or total <= 0:
        return fits[0][0], math.inf
    mean = moment / total

    def quantile(q: float) -> float:
        left = q * total
        for index, (f0, f1, e0, e1, k, mass) in enumerate(pieces):
            if left > mass and index < len(pieces) - 1:
                left -= mass
                continue
            if k == 0.0:
                return min(f1, f0 + left / e0) if e0 > 0 else f0
            # The piece's integral from f0 to x is (e(x) − e0)/k = left: solve for x from the
            # piece's larger end, so an end that underflowed to 0 is never divided by.
            reached = max(e0 + k * left, 1e-300)
            x = f1 + math.log(reached / e1) / k if k > 0 else f0 + math.log(reached / e0) / k
            return min(f1, max(f0, x))
        return pieces[-1][1]

    return mean, max(mean - quantile(0.025), quantile(0.975) - mean)


def _centre_slope(hull: Sequence[tuple[float, float]], mean: float) -> float:
    """One direction's floor slope: the hull edge over the samples' mean time (the optimum of
    Moon et al.'s linear programme for that direction alone)."""
    edges = list(itertools.pairwise(hull))
    for (t0, y0), (t1, y1) in edges:
        if t1 >= mean and t1 > t0:
            return (y1 - y0) / (t1 - t0)
    if not edges:
        return 0.0
    (t0, y0), (t1, y1) = edges[-1]
    return (y1 - y0) / (t1 - t0) if t1 > t0 else 0.0


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
        frequency_fit: str = "mean",
        delay_memory: float = 0.0,
    ) -> None:
        if window <= 0 or max_samples < 2 or max_ppm < 0 or min_exchanges < 1:
            raise ValueError("window, max_samples, max_ppm and min_exchanges must be positive")
        if frequency_fit not in ("mean", "optimum"):
            raise ValueError("frequency_fit is 'mean' or 'optimum'")
        self.frequency_fit = frequency_fit
        """``mean``: the posterior mean (:func:`_posterior_frequency`); ``optimum``: the linear
        programme's optimum, as before issue #11 (``benchmarks/clock_sync.py`` compares them on
        the same exchanges)."""
        self.window = window
        self.delay_memory = delay_memory
        """Seconds the path's minimum delay is remembered beyond :attr:`window` (0: not at all,
        the estimate of issue #11). A follower that hears the leader's multicast sync messages
        (``oscsync.sync.room``) has the reverse direction densely, 20 samples a second, but
        pings only a few times a second once locked: over one window the forward floor would
        rest on ~60 samples, milliseconds above the truth. The path's minimum delay does not
        drift as the clocks do, so each forward sample that leaves the window is kept as a
        round trip through the reverse floor of its time, ``(T2 − T1) + B(T1)``, whose floor is
        twice that delay (PTP's mean path delay, from occasional delay requests); the offset is
        then that delay minus the reverse floor now."""
        self._memory: dict[int, tuple[float, float]] = {}
        self.max_freq = max_ppm * 1e-6
        self.min_exchanges = min_exchanges
        self._out = _Direction(max_samples)
        self._back = _Direction(max_samples)
        self._exchanges = 0
        self._suspects: list[tuple[float, float, float, float]] = []
        self._run_low = -math.inf
        self._run_high = math.inf
        self._last: ClockEstimate | None = None
        self.restarts = 0
        """Times the window was cleared because the peer's clock moved (see the module doc)."""
        self.last_step = 0.0
        """Seconds the offset moved at the last restart (the new estimate minus the old)."""
        self.held_offset: float | None = None
        """The offset the last exchange held back and not used since implied, if any."""
        self._discarded = 0
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        """Samples not taken, by reason: ``offset-jump`` (an exchange held back: below an
        envelope by more than the bound allows), ``offset-jump-disagrees`` (dropped from a run
        of those because the run's offsets did not agree), ``offset-jump-sync`` (a one-way
        sample, :meth:`add_reverse`, refused for the same reason)."""

    def add_exchange(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        """Take one exchange; False if it was held back as impossible (a possible clock step).

        The caller has already refused exchanges that are not well formed (T4 before T1, a
        negative turnaround): see :func:`oscsync.sync.ping.exchange_problem`.
        """
        if self._is_impossible(t1, t2, t3, t4):
            self._hold((t1, t2, t3, t4))
            suspects = self._suspects
            if len(suspects) < RESTART_AFTER or suspects[-1][3] - suspects[0][3] < CONFIRM_SPAN:
                return False
            before = self._last
            self._suspects = []
            self.held_offset = None  # the run held back is the new window: all used
            self._run_low, self._run_high = -math.inf, math.inf
            self._out.clear()
            self._back.clear()
            self._memory.clear()
            self._exchanges = 0
            self._last = None
            self.restarts += 1
            for exchange in suspects:
                self._take(*exchange)
            after = self.estimate(t4)
            if before is not None and after is not None:
                self.last_step = after.offset - before.offset_at(t4)
            return True
        if self._suspects and self._contradicts_run(t1, t2, t3, t4):
            # An exchange on the old clock: the run was a burst, not a step.
            self._discarded += len(self._suspects)
            self._suspects.clear()
            self._run_low, self._run_high = -math.inf, math.inf
        self._take(t1, t2, t3, t4)
        return True

    def _contradicts_run(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        """Whether an ordinary exchange rules out the run's offset. After a small step some
        exchanges still fit under the old envelope and the new offset alike: those leave the
        run alone (a 30 ms step through ±15 ms of jitter: 7 % of them)."""
        slack = TIMESTAMP_ALLOWANCE + self.max_freq * (t4 - self._suspects[0][3])
        return max(self._run_low, t3 - t4) > min(self._run_high, t2 - t1) + slack

    def _hold(self, exchange: tuple[float, float, float, float]) -> None:
        """Add an impossible exchange to the run being confirmed; keep only the newest ones that
        agree on an offset (each says it lies within ``[T3 − T4, T2 − T1]``, widened by what the
        frequency can move it over the run and the timestamps' allowance)."""
        self.refused["offset-jump"] += 1
        t1, t2, t3, t4 = exchange
        self.held_offset = ((t2 - t1) + (t3 - t4)) / 2
        low, high = t3 - t4, t2 - t1
        suspects = self._suspects
        if suspects:
            slack = TIMESTAMP_ALLOWANCE + self.max_freq * (t4 - suspects[0][3])
            if max(self._run_low, low) > min(self._run_high, high) + slack:
                # It disagrees with the run: keep the newest exchanges that agree with it.
                kept = [exchange]
                run_low, run_high = low, high
                for older in reversed(suspects):
                    o1, o2, o3, o4 = older
                    wider = TIMESTAMP_ALLOWANCE + self.max_freq * (t4 - o4)
                    new_low, new_high = max(run_low, o3 - o4), min(run_high, o2 - o1)
                    if new_low > new_high + wider:
                        break
                    kept.append(older)
                    run_low, run_high = new_low, new_high
                self.refused["offset-jump-disagrees"] += len(suspects) + 1 - len(kept)
                kept.reverse()
                self._suspects = kept
                self._run_low, self._run_high = run_low, run_high
                return
        suspects.append(exchange)
        self._run_low, self._run_high = max(self._run_low, low), min(self._run_high, high)
        if len(suspects) > MAX_SUSPECTS:
            del suspects[0]

    def add_reverse(self, t3: float, t4: float) -> bool:
        """Take a one-way sample from the peer alone: its send time T3 (its clock), our arrival
        T4: a leader's multicast sync message (``oscsync.sync.room``). False if it was refused:
        below the reverse envelope by more than jitter can explain (a step of the peer's clock,
        or a forgery). A refused sample never moves the clock; a real step is confirmed by
        exchanges (:meth:`add_exchange`), which the follower then asks for at once."""
        if self._reverse_is_impossible(t3, t4):
            self.refused["offset-jump-sync"] += 1
            return False
        self._back.add(t4, t4 - t3)
        self._trim_to_window(max(self._out.ts[-1] if self._out.ts else t4, t4))
        return True

    def _reverse_is_impossible(self, t3: float, t4: float) -> bool:
        if len(self._back) < MIN_SETTLED or len(self._out) < self.min_exchanges:
            return False
        judged = self._judge_by(t4)
        if judged is None:
            return False
        estimate, slack = judged
        return (t4 - t3) < estimate.delay - estimate.offset_at(t4) - slack

    def _judge_by(self, t4: float) -> tuple[ClockEstimate, float] | None:
        """The estimate a new sample is judged by, and the slack it is allowed: the last one,
        extrapolated (it costs nothing), unless it is more than a second old."""
        estimate = self._last
        if estimate is None or abs(t4 - estimate.at) > 1.0:
            estimate = self.estimate(t4)
        if estimate is None:
            return None
        return estimate, max(STEP_THRESHOLD, 8 * estimate.bound)

    def _trim_to_window(self, newest: float) -> None:
        self._freeze(self._out.trim(newest - self.window))
        self._back.trim(newest - self.window)

    def _freeze(self, points: list[tuple[float, float]]) -> None:
        """Keep forward points leaving the window as round trips (see :attr:`delay_memory`)."""
        estimate = self._last
        if self.delay_memory <= 0 or not points or estimate is None:
            return
        memory = self._memory
        for t, y in points:
            # y = θ(t) + d_out, and the reverse floor at t is D − θ(t): their sum is d_out + D.
            round_trip = y + estimate.delay - estimate.offset_at(t)
            key = math.floor(t / MEMORY_BUCKET)
            kept = memory.get(key)
            if kept is None or round_trip < kept[1]:
                memory[key] = (t, round_trip)
        oldest = points[-1][0] - self.delay_memory
        for key in [key for key, (t, _) in memory.items() if t < oldest]:
            del memory[key]

    def _take(self, t1: float, t2: float, t3: float, t4: float) -> None:
        self._out.add(t1, t2 - t1)
        self._back.add(t4, t4 - t3)
        self._exchanges += 1
        self.accepted += 1
        self._trim_to_window(max(self._out.ts[-1], self._back.ts[-1]))

    def _is_impossible(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        if min(len(self._out), len(self._back)) < MIN_SETTLED:
            return False
        judged = self._judge_by(t4)
        if judged is None:
            return False
        estimate, slack = judged
        floor = estimate.delay
        # Below the forward floor: the peer's clock went back; below the reverse: forward.
        out_low = (t2 - t1) < estimate.offset_at(t1) + floor - slack
        back_low = (t4 - t3) < floor - estimate.offset_at(t4) - slack
        return out_low or back_low

    @property
    def unused_jumps(self) -> int:
        """Exchanges held back as ``offset-jump`` that no confirmed step put to use: runs
        broken by an ordinary exchange, answers that disagreed with their run, and the run
        still waiting for confirmation."""
        return self._discarded + self.refused["offset-jump-disagrees"] + len(self._suspects)

    @property
    def exchanges(self) -> int:
        """Exchanges in the window."""
        return min(len(self._out), len(self._back))

    def clear(self) -> None:
        self._out.clear()
        self._back.clear()
        self._memory.clear()
        self._discarded += len(self._suspects)
        self._suspects.clear()
        self._run_low, self._run_high = -math.inf, math.inf
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
        mean_out = sum(self._out.ts) / n_out - now
        mean_back = sum(self._back.ts) / n_back - now
        fits = []
        for f in sorted(set(candidates)):
            a = _floor(out_hull, f)
            b = min(y + f * t for t, y in back_hull)
            fits.append((f, a, b))
        # The linear programme's optimum (its cost per sample each way), to measure the scales.
        best_f, best_a, best_b = min(
            fits,
            key=lambda fit: (
                -n_out * (fit[1] + fit[0] * mean_out) - n_back * (fit[2] - fit[0] * mean_back),
                abs(fit[0]),
            ),
        )
        s_out = self._gap_scale(self._out, now, best_a, best_f, +1)
        s_back = self._gap_scale(self._back, now, best_b, best_f, -1)
        frequency, frequency_bound = best_f, math.inf
        if limit > 0 and math.isfinite(s_out) and math.isfinite(s_back):
            # With a delay memory the forward samples are sparse once locked, and the dense
            # ones of the start all lie in its first seconds: their floor's slope is weak
            # evidence (simulated: 20-100 ppm off 10-25 s after start) that its scale would
            # weigh as strong. The reverse direction (the leader's sync messages) alone gives
            # the frequency then.
            forward_scale = max(s_out, 1e-9)
            if self.delay_memory > 0 and not self._forward_is_dense(now, span):
                forward_scale = math.inf
            frequency, frequency_bound = _posterior_frequency(
                fits, mean_out, mean_back, forward_scale, max(s_back, 1e-9)
            )
            # The floor itself wobbles by the timestamps' allowance (tens of µs, load-dependent):
            # over the span that tilts it by up to allowance/span (a fixed-delay netem link with
            # no jitter at all gave −3.3 and +2.0 ppm over 10 s, posterior ±1.7).
            frequency_bound += TIMESTAMP_ALLOWANCE / span
            # Each direction alone (Moon et al.'s own fit): the two floors' slopes differ by 2f
            # and share the path's creep, which one shared slope assumes away. A creep (a loaded
            # machine's relay, a filling queue) biases the frequency by up to its size
            # (simulated, 20 s at 100 pings/s creeping 10 µs/s: rms 7.7 ppm); so when it shows
            # above the bound, the bound widens to :data:`CREEP_FACTOR` times it. Fitting the two
            # separately instead would cure the bias but doubles the noise where there is no
            # creep (offset p99 on a ±15 ms link at 40 pings/s: 0.26 ms instead of under 0.25).
            creep = (_centre_slope(out_hull, mean_out) + _centre_slope(back_hull, mean_back)) / 2
            frequency_bound = max(frequency_bound, CREEP_FACTOR * abs(creep))
            if self.frequency_fit == "optimum":
                frequency = best_f
        best_a = _floor(out_hull, frequency)
        best_b = min(y + frequency * t for t, y in back_hull)
        offset = (best_a - best_b) / 2
        delay = (best_a + best_b) / 2
        bound = BOUND_FACTOR * max(s_out, s_back)
        if self._memory:
            # The path's delay from the lowest round trip, remembered or in the window; the
            # offset from the reverse floor now; the bound as above, the forward scale measured
            # on the round trips, the window's and the remembered ones together. (Taking the
            # memory only when it was lower left the bound to the window's sparse forward
            # samples whenever one of them was a few µs lower: 1.5 ms, fast pinging again.)
            round_trip = min(best_a + best_b, min(kept for _, kept in self._memory.values()))
            delay = round_trip / 2
            offset = delay - best_b
            s_round = self._round_trip_scale(now, frequency, best_b, round_trip)
            bound = BOUND_FACTOR * max(s_round, s_back)
        # The hard bound: delays are not negative, so θ is within D̂ of θ̂ (when f is right).
        bound = min(bound, max(delay, 0.0)) if delay > 0 else bound
        estimate = ClockEstimate(
            at=now,
            offset=offset,
            frequency=frequency,
            bound=bound + TIMESTAMP_ALLOWANCE,
            frequency_bound=frequency_bound,
            delay=delay,
            forward=len(self._out),
            reverse=len(self._back),
            span=span,
        )
        self._last = estimate
        return estimate

    def _forward_is_dense(self, now: float, span: float) -> bool:
        """Whether the newer half of the window has forward samples at a quarter of the
        reverse ones' rate at least (a follower still acquiring, or pinging as before #33)."""
        half = now - span / 2
        forward = len(self._out) - bisect.bisect_left(self._out.ts, half)
        reverse = len(self._back) - bisect.bisect_left(self._back.ts, half)
        return 4 * forward >= reverse

    def _round_trip_scale(
        self, now: float, frequency: float, reverse_floor: float, floor: float
    ) -> float:
        """:meth:`_gap_scale` of the round trips: the window's forward points through today's
        reverse floor, and the remembered ones."""
        window = (y - frequency * (t - now) + reverse_floor - floor for t, y in self._out.lowest())
        remembered = (round_trip - floor for _, round_trip in self._memory.values())
        residuals = heapq.nsmallest(GAP_SAMPLES, itertools.chain(window, remembered))
        k = len(residuals)
        if k < 2:
            return float("inf")
        return max(residuals[-1], 0.0) / (k - 1)

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


FILTER_SIZE = 64
"""Exchanges the minimum-delay filter chooses from (16 s at 4 pings a second, as before #11)."""
DRIFT_TOLERANCE = 15e-6
"""NTP's PHI: an old exchange's bound grows this much per second of age."""


class MinimumDelayFilter(EnvelopeEstimator):
    """The estimate before issue #11, behind the same interface, for ``benchmarks/clock_sync.py``.

    NTP's clock filter in its simplest form (:func:`oscsync.sync.ping.choose`, here on seconds):
    of the last ``filter_size`` exchanges, the one whose round trip is shortest (half of it, plus
    :data:`DRIFT_TOLERANCE` per second of age, is its bound) gives the offset; no frequency.
    """

    def __init__(self, filter_size: int = FILTER_SIZE) -> None:
        super().__init__(min_exchanges=1)
        self._recent: deque[tuple[float, float, float, float]] = deque(maxlen=filter_size)

    def add_exchange(self, t1: float, t2: float, t3: float, t4: float) -> bool:
        self._recent.append((t1, t2, t3, t4))
        self.accepted += 1
        return True

    @property
    def exchanges(self) -> int:
        return len(self._recent)

    def clear(self) -> None:
        self._recent.clear()

    def estimate(self, now: float) -> ClockEstimate | None:
        def bound(exchange: tuple[float, float, float, float]) -> float:
            t1, t2, t3, t4 = exchange
            return max((t4 - t1) - (t3 - t2), 0.0) / 2 + DRIFT_TOLERANCE * max(0.0, now - t4)

        if not self._recent:
            return None
        best = min(reversed(self._recent), key=bound)  # reversed: on a tie, the newest wins
        t1, t2, t3, t4 = best
        return ClockEstimate(
            at=now,
            offset=((t2 - t1) + (t3 - t4)) / 2,
            frequency=0.0,
            bound=bound(best),
            delay=((t4 - t1) - (t3 - t2)) / 2,
            forward=len(self._recent),
            reverse=len(self._recent),
            span=now - self._recent[0][0],
        )
