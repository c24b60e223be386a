"""A simulated two-way link for the clock estimator and servo: exact, seeded, no sockets, no sleeps.

Times are seconds on the follower's (local) clock; the peer's clock reads
``t + offset(t)`` with ``offset(t) = skew + ppm·1e-6·t (+ step after step_at)``. Each probe is a
ping at ``k / rate`` whose two one-way delays are drawn from ``dist`` (plus ``creep·t`` both ways
and ``asymmetry`` outbound, when given); exchanges are delivered in the order their pongs arrive
(a jittery link reorders them), some are lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Delay = Callable[[random.Random], float]


def uniform(base: float = 0.020, jitter: float = 0.015) -> Delay:
    return lambda rng: base + rng.uniform(-jitter, jitter)


def exponential(base: float = 0.020, mean: float = 0.010) -> Delay:
    return lambda rng: base + rng.expovariate(1.0 / mean)


def pareto(base: float = 0.020, scale: float = 0.005, shape: float = 3.0) -> Delay:
    return lambda rng: base + scale * (rng.paretovariate(shape) - 1.0)


@dataclass(frozen=True)
class Exchange:
    t1: float
    t2: float
    t3: float
    t4: float


@dataclass
class SimLink:
    delay: Delay
    skew: float = 0.150
    ppm: float = 50.0
    rate: float = 20.0
    loss: float = 0.0
    step: float = 0.0
    step_at: float = float("inf")
    seed: int = 1
    turnaround: float = 0.0002
    creep: float = 0.0
    """Seconds per second the path's delay grows, both ways alike (a loaded machine's relay, a
    queue filling): the minimum delay moves, the clocks do not."""
    asymmetry: float = 0.0
    """Seconds added to every outbound delay only: invisible to any two-way method."""

    def offset(self, t: float) -> float:
        """The true (peer − local) offset at local time ``t``."""
        jump = self.step if t >= self.step_at else 0.0
        return self.skew + self.ppm * 1e-6 * t + jump

    def exchanges(self, duration: float, start: float = 0.0) -> Iterator[Exchange]:
        """Every answered exchange whose pong arrives before ``duration``, in arrival order."""
        rng = random.Random(self.seed)
        pending: list[Exchange] = []
        k = 0
        while True:
            t1 = start + k / self.rate
            k += 1
            if t1 >= duration:
                break
            out = self.delay(rng) + self.creep * t1 + self.asymmetry
            back = self.delay(rng) + self.creep * t1
            if rng.random() < self.loss:
                continue
            arrived = t1 + out
            answered = arrived + rng.uniform(0, self.turnaround)
            t4 = answered + back
            pending.append(
                Exchange(t1, arrived + self.offset(arrived), answered + self.offset(answered), t4)
            )
        pending.sort(key=lambda e: e.t4)
        yield from (e for e in pending if e.t4 < duration)
