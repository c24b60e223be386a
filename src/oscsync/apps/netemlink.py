"""netem's link model: each datagram's fate drawn from seeded distributions, held until due.

What the relay (:mod:`oscsync.apps.netem`) does to a datagram between receiving and sending it.
Each direction has its own :class:`Impairment`, drawn from its own seeded generator, so a seeded
run makes the same decisions for the n-th datagram of a direction every time. A datagram is lost
with probability ``loss``; otherwise it is sent after a delay drawn from the distribution, and
with probability ``duplicate`` a second copy follows with its own delay (Linux netem re-enqueues
its clone the same way). With ``reorder`` off, a datagram never leaves before the one ahead of it
(its delay is stretched instead), as on a link that queues.

A :class:`Link` keeps the delays on a :class:`~oscsync.scheduler.Scheduler` (one timer thread and
a heap, not a sleep or a thread per datagram), capped at ``queue_limit`` held datagrams and
``queue_bytes`` held bytes; what does not fit is dropped, counted by reason and warned about
once. It sends each copy when due with the function it was given, and counts what was sent, lost,
duplicated and dropped in each direction, with the delays achieved.
"""

from __future__ import annotations

import errno
import math
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from oscsync.clock import Clock
from oscsync.osc import timetag as tt
from oscsync.scheduler import Dispatch, Scheduler
from oscsync.stats import Gauge, RunningStats, WarnOnce

DISTRIBUTIONS = ("uniform", "normal", "pareto", "exponential")
PARETO_SHAPE = 3.0
"""Shape of the Pareto tail: 3 is heavy (occasional long stalls, like Wi-Fi retries) yet still
has a finite standard deviation, so ``--jitter`` can mean the same thing for every distribution."""

DEFAULT_QUEUE_LIMIT = 10_000
DEFAULT_QUEUE_BYTES = 32 * 1024 * 1024
"""Bytes held at once (#20 item 1): the item cap alone let 10,000 datagrams of 64 KB, held by
``--delay 10s``, take 641 MB. 32 MiB holds 10 s of 1,000 datagrams/s of up to 2.9 KB each."""
HELD_OVERHEAD = 448
"""Bytes one held copy costs beyond its payload (heap entry, scheduler item, delivery, bytes
header, floats): 390-445 measured with tracemalloc on CPython 3.11 for 0-1,000-byte datagrams,
rounded up. Counted so that a flood of empty datagrams meets the byte bound too."""
DELAY_SAMPLES = 100_000
"""Achieved delays kept per direction for the percentiles in the report (the most recent)."""

Send = Callable[[bytes], object]
"""Sends one copy on its way (raises OSError, or :class:`SenderExpired`, when it cannot)."""


@dataclass(frozen=True)
class ImpairmentSpec:
    """What to do to each datagram; times in seconds, probabilities in 0..1."""

    delay: float = 0.0
    jitter: float = 0.0
    dist: str = "uniform"
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: bool = True

    def __post_init__(self) -> None:
        if self.dist not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}")
        if not (self.delay >= 0 and self.jitter >= 0):
            raise ValueError("delay and jitter must be 0 or more seconds")
        if not (0 <= self.loss <= 1 and 0 <= self.duplicate <= 1):
            raise ValueError("loss and duplicate are probabilities between 0 and 1")

    @property
    def expected_std(self) -> float:
        """Standard deviation of the delay asked for (before delays below 0 are clamped)."""
        return self.jitter / math.sqrt(3) if self.dist == "uniform" else self.jitter

    def describe(self) -> str:
        text = f"delay {self.delay * 1e3:g} ms"
        if self.jitter:
            text += f" ± {self.jitter * 1e3:g} ms {self.dist}"
        text += f", loss {self.loss * 100:g}%, duplicate {self.duplicate * 100:g}%"
        if self.jitter and not self.reorder:
            text += ", no reordering"
        return text


class Impairment:
    """Draws the fate of each datagram of one direction from a seeded generator."""

    def __init__(self, spec: ImpairmentSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        if spec.dist == "pareto" and spec.jitter:
            # Shifted Pareto(shape a, scale m) with the asked mean and standard deviation:
            # std = m·sqrt(a / ((a-1)^2 (a-2))), mean of the Pareto part = a·m / (a-1).
            a = PARETO_SHAPE
            self._pareto_scale = spec.jitter / math.sqrt(a / ((a - 1) ** 2 * (a - 2)))
            self._pareto_shift = spec.delay - a * self._pareto_scale / (a - 1)

    def delay(self) -> float:
        """One delay in seconds (never negative)."""
        spec, rng = self.spec, self.rng
        if not spec.jitter:
            return spec.delay
        if spec.dist == "uniform":
            value = rng.uniform(spec.delay - spec.jitter, spec.delay + spec.jitter)
        elif spec.dist == "normal":
            value = rng.gauss(spec.delay, spec.jitter)
        elif spec.dist == "exponential":  # delay + Exp(mean jitter): issue #11's Wi-Fi model
            value = spec.delay + rng.expovariate(1.0 / spec.jitter)
        else:
            value = self._pareto_shift + self._pareto_scale * rng.paretovariate(PARETO_SHAPE)
        return max(0.0, value)

    def decide(self) -> list[float]:
        """Delays of the copies to send: [] lost, [d] once, [d1, d2] duplicated.

        Always draws the same number of random values per datagram, so one decision does not
        shift the ones after it between runs with different loss settings.
        """
        spec, rng = self.spec, self.rng
        lost = rng.random() < spec.loss
        duplicated = rng.random() < spec.duplicate
        first, second = self.delay(), self.delay()
        if lost:
            return []
        return [first, second] if duplicated else [first]


@dataclass
class DirectionStats:
    """Counters of one direction (``forward``: towards ``--forward``; ``reverse``: replies)."""

    received: int = 0
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    delays: RunningStats = field(default_factory=lambda: RunningStats(recent=DELAY_SAMPLES))

    def line(self, name: str) -> str:
        text = (
            f"{name}: {self.received} in, {self.sent} out "
            f"({self.lost} lost, {self.duplicated} duplicated"
        )
        if self.dropped:
            text += ", dropped " + ", ".join(f"{k} {n}" for k, n in sorted(self.dropped.items()))
        text += ")"
        d = self.delays
        if d.count:
            text += (
                f"; delay mean {d.mean * 1e3:.2f} ms, std {d.std * 1e3:.2f} ms, "
                f"min {d.minimum * 1e3:.2f}, p50 {d.percentile(0.5) * 1e3:.2f}, "
                f"p99 {d.percentile(0.99) * 1e3:.2f}, max {d.maximum * 1e3:.2f} ms"
            )
        return text


class Direction:
    """One direction of the link: its impairment, its counters, when its last copy is due."""

    def __init__(self, name: str, impairment: Impairment) -> None:
        self.name = name
        self.impairment = impairment
        self.stats = DirectionStats()
        self.last_due = -math.inf


def seeded_rng(seed: int | None, direction: str) -> random.Random:
    # String seeds are hashed deterministically (unlike hash()), so a seed means the same draws
    # in every process; each direction gets its own stream.
    return (
        random.Random(f"oscsync-netem/{seed}/{direction}") if seed is not None else random.Random()
    )


class SenderExpired(Exception):
    """A held datagram's upstream socket was closed (idle or evicted) before it was due."""


class Upstream(Protocol):
    """The relay's upstream socket of the sender a datagram came from or goes back to."""

    last_seen: float
    """Its idle time counts from here: from the last copy's due time, once it holds copies."""

    def hold(self) -> None:
        """One more copy waits to leave from its socket (it is not closed meanwhile)."""

    def unhold(self) -> None:
        """A copy it held was not queued after all."""


def _size(count: int) -> str:
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"


@dataclass
class QueueStats:
    """What the delay queue held: now and at most, in datagrams and bytes."""

    items: Gauge = field(default_factory=Gauge)
    bytes: Gauge = field(default_factory=Gauge)

    def hold(self, size: int) -> None:
        self.items.add()
        self.bytes.add(size)

    def release(self, size: int) -> None:
        self.items.remove()
        self.bytes.remove(size)

    def line(self) -> str:
        return (
            f"queue: held at most {self.items.peak} datagrams, {_size(self.bytes.peak)} "
            f"(payload + {HELD_OVERHEAD} B each)"
        )


class Link:
    """Both directions of the impaired link: draws each datagram's copies, holds them until due."""

    def __init__(
        self,
        spec: ImpairmentSpec,
        *,
        clock: Clock,
        warn_once: WarnOnce,
        seed: int | None = None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
    ) -> None:
        self.clock = clock
        self.spec = spec
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self._warn_once = warn_once
        self.forward = Direction("forward", Impairment(spec, seeded_rng(seed, "forward")))
        self.reverse = Direction("reverse", Impairment(spec, seeded_rng(seed, "reverse")))
        self.queue = QueueStats()
        # spin=0: a relay's sub-millisecond overshoot is far below the jitter it adds, and a
        # spinning timer thread would hold the GIL against every other thread in the process.
        # No horizon: the delays are our own draws (a Pareto tail may pass 60 s), and what is
        # held is bounded by queue_limit and queue_bytes, so a refusal always means "queue-full".
        self.scheduler = Scheduler(
            clock,
            spin=0.0,
            max_items=queue_limit,
            horizon=math.inf,
            late_tolerance=math.inf,
        )
        self.lock = threading.Lock()
        """Guards both directions' counters and the queue's byte count."""

    def start(self) -> None:
        self.scheduler.start()

    def carry(
        self, direction: Direction, data: bytes, send: Send, sender: Upstream | None = None
    ) -> None:
        clock = self.clock
        arrival = clock.monotonic()
        stats = direction.stats
        with self.lock:
            stats.received += 1
            delays = direction.impairment.decide()
            if not delays:
                stats.lost += 1
                return
            if len(delays) > 1:
                stats.duplicated += 1
            dues = []
            for delay in delays:
                due = arrival + delay
                if not self.spec.reorder:
                    due = max(due, direction.last_due)
                    direction.last_due = due
                dues.append(due)
        if sender is not None:
            # Idle counts from when the last datagram leaves, so a long --delay does not close
            # the socket its held datagrams will leave from.
            sender.last_seen = max(sender.last_seen, *dues)
        size = len(data) + HELD_OVERHEAD
        for due in dues:
            if not self._hold(size, stats):
                continue
            stamp = tt.from_unix(clock.monotonic_to_wall(due))
            action = _Delivery(self, direction, data, send, arrival, size)
            leaves_upstream = sender is not None and direction is self.forward
            if leaves_upstream:
                sender.hold()  # type: ignore[union-attr]
            if not self.scheduler.submit(stamp, action):
                if leaves_upstream:
                    sender.unhold()  # type: ignore[union-attr]
                self._release(size)
                self._drop(
                    stats,
                    "queue-full",
                    f"delay queue full ({self.queue_limit} datagrams held): dropping (counted)",
                )

    def _hold(self, size: int, stats: DirectionStats) -> bool:
        """Reserve ``size`` bytes of the queue; False (dropped, counted) when it would overflow."""
        queue = self.queue
        with self.lock:
            if queue.bytes.now + size <= self.queue_bytes:
                queue.hold(size)
                return True
        self._drop(
            stats,
            "queue-bytes",
            f"delay queue holds {self.queue_bytes / 1024 / 1024:g} MiB: dropping (counted)",
        )
        return False

    def _release(self, size: int) -> None:
        with self.lock:
            self.queue.release(size)

    def _drop(self, stats: DirectionStats, reason: str, warning: str) -> None:
        with self.lock:
            stats.dropped[reason] += 1
        self._warn_once(reason, warning)

    def _delivered(
        self, direction: Direction, achieved: float, ok: bool, reason: str, size: int
    ) -> None:
        with self.lock:
            self.queue.release(size)
            if ok:
                direction.stats.sent += 1
                direction.stats.delays.add(achieved)
            else:
                direction.stats.dropped[reason] += 1

    def refuse(self, reason: str) -> None:
        """Count a datagram that never entered the link (its sender got no upstream socket)."""
        with self.lock:
            self.forward.stats.received += 1
            self.forward.stats.dropped[reason] += 1

    def close(self) -> None:
        """Stop the timer thread; copies still held are counted as ``held-at-exit``."""
        self.scheduler.close()
        held = self.scheduler.stats().dropped.get("closed", 0)
        if held:
            self.forward.stats.dropped["held-at-exit"] += held


@dataclass(slots=True, eq=False)  # an action: compared by identity
class _Delivery:
    """The scheduled send of one copy of a datagram."""

    link: Link
    direction: Direction
    data: bytes
    send: Send
    arrival: float
    size: int

    def __call__(self, dispatch: Dispatch) -> None:
        try:
            self.send(self.data)
        except SenderExpired:
            ok, reason = False, "sender-expired"
        except (ConnectionRefusedError, ConnectionResetError):
            ok, reason = False, "send-refused"
        except BlockingIOError:
            ok, reason = False, "buffer-full"
        except OSError as exc:
            ok, reason = False, errno.errorcode.get(exc.errno or 0, "send-error")
        else:
            ok, reason = True, ""
        self.link._delivered(
            self.direction, dispatch.dispatched - self.arrival, ok, reason, self.size
        )
