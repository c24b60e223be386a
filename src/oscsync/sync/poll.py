"""How often a follower in a room pings its leader: fast while it acquires, then backing off
while its estimate stays good, fast again at the first sign of trouble (NTP's poll interval,
RFC 5905 §13, on a faster scale).

Pure: it is told the time, the estimate's bound and what went wrong, and answers how long to
wait before the next ping; :class:`~oscsync.sync.follow.ClockFollower` uses it once the leader's
multicast sync messages (:mod:`oscsync.sync.room`) give it the reverse direction for free.
Without them the follower pings as before issue #33 (``follow.INTERVAL``): the forward and the
reverse floor then both rest on its own pings.
"""

from __future__ import annotations

from dataclasses import dataclass

ACQUIRE_INTERVAL = 0.01
ACQUIRE_TIME = 10.0
"""100 pings a second for the first 10 s (with the leader's 100 sync messages a second): the
frequency is fitted on both directions while both are dense, and the path's delay is remembered
from 1,000 forward samples (simulated, 64 followers on ±15 ms links: the onset spread p99 10-20 s
after start was 0.6 ms after 5 s at 200 a second, 0.4 ms after 10 s at 100)."""
MAX_INTERVAL = 0.5
"""Two pings a second once backed off: 4 packets a second with the pongs, 4.2 with the status
reports (the goal: 5 per follower), against 200 before issue #33."""
BACKOFF_EVERY = 1.0
"""Seconds at one interval before it doubles (0.01 to 0.5 s takes 6 s)."""
GOOD_BOUND = 0.5e-3
"""The interval grows only while the estimate's bound is at most this (the servo's lock bound)."""
TROUBLE_BOUND = 1.0e-3
"""A bound above this is trouble: fast again."""
RECOVER_TIME = 3.0
"""Seconds at the acquiring rate after trouble, before backing off again."""


@dataclass(frozen=True)
class PollSettings:
    """A :class:`PollPolicy`'s numbers (the module constants say why each default)."""

    acquire_interval: float = ACQUIRE_INTERVAL
    acquire_time: float = ACQUIRE_TIME
    max_interval: float = MAX_INTERVAL
    backoff_every: float = BACKOFF_EVERY
    good_bound: float = GOOD_BOUND
    trouble_bound: float = TROUBLE_BOUND
    recover_time: float = RECOVER_TIME

    def __post_init__(self) -> None:
        if not (0 < self.acquire_interval <= self.max_interval) or self.backoff_every <= 0:
            raise ValueError("poll intervals must be positive, the acquiring one the shortest")


class PollPolicy:
    """The interval before the next ping (seconds) for a follower that hears sync messages."""

    def __init__(self, settings: PollSettings, now: float) -> None:
        self.settings = settings
        self.interval = settings.acquire_interval
        self._fast_until = now + settings.acquire_time
        self._since = now
        self.troubles = 0
        """Times :meth:`trouble` brought the fast rate back."""

    def trouble(self, now: float) -> None:
        """Something went wrong (a sample refused as impossible, the leader's clock moved, no
        answer for a while): ping fast again for :data:`RECOVER_TIME`."""
        settings = self.settings
        if self.interval > settings.acquire_interval or now >= self._fast_until:
            self.troubles += 1
        self.interval = settings.acquire_interval
        self._fast_until = max(self._fast_until, now + settings.recover_time)
        self._since = now

    def next_interval(self, now: float, bound: float) -> float:
        """How long to wait before the next ping, given the estimate's ``bound`` now (inf
        before the first estimate)."""
        settings = self.settings
        if bound > settings.trouble_bound and self.interval > settings.acquire_interval:
            self.trouble(now)
        if now < self._fast_until:
            return self.interval
        if bound <= settings.good_bound and now - self._since >= settings.backoff_every:
            self.interval = min(settings.max_interval, self.interval * 2)
            self._since = now
        return self.interval

    @property
    def backed_off(self) -> bool:
        """True once the interval has reached its maximum."""
        return self.interval >= self.settings.max_interval
