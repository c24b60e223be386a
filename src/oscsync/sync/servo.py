"""The follower's map from a peer's clock onto ours: continuous once locked, slewed, never stepped.

Pure: fed estimates (:class:`~oscsync.sync.estimate.ClockEstimate`) with our time, asked to map
times; no sockets, threads or clock reading.

Translating each timetag with the newest offset estimate (what ``metronome listen --sync`` did
before issue #11) makes every onset jump by however much the estimate moved since the last tick:
0.9 ms of inter-onset jitter on a ±15 ms link. Like NTP's discipline (RFC 5905 §11) and linuxptp's
servo, the map here is a line ``offset(t) = phase + rate·(t − anchor)`` re-anchored at each update
*where it is*, so it never jumps; only its rate changes: the estimator's frequency, plus a
correction ``error / time_constant`` that pulls it onto the estimate, limited to ``max_slew``
(500 ppm: a 1 ms error is gone in 2 s, and a tick period of 0.25 s changes by at most 125 µs).

States: ``acquiring`` — from the first estimate the map exists (:attr:`Servo.usable`: timetags
can be translated) and follows each estimate *directly*, because the first ones, from a handful
of exchanges, are milliseconds off and slewing that away at 500 ppm would take seconds (the demo
measured 0.3 ms still to go after 5 s); ``locked`` once the estimate's bound is below
``lock_bound`` (0.5 ms) or ``max_acquire`` (5 s) has passed: from then on the map is only slewed;
and ``lost`` (no update for ``lost_after`` seconds: the map keeps running at its last rate,
holdover). Once locked, an error above ``step_threshold`` (50 ms) is not slewed (that would take
100 s) but stepped, once, and counted in :attr:`Servo.steps`; so is the first estimate after the
peer restarted (``restarted=True``), whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass

from oscsync.sync.estimate import ClockEstimate

ACQUIRING = "acquiring"
LOCKED = "locked"
LOST = "lost"

MAX_SLEW = 500e-6
"""Largest rate correction on top of the estimated frequency (NTP's slew limit is 500 ppm)."""
STEP_THRESHOLD = 0.050
"""Errors above this are stepped (once, with a warning) rather than slewed."""
TIME_CONSTANT = 2.0
"""Seconds in which the slew removes the error (a P loop; the estimator supplies the frequency,
so no integral term is needed). Estimates move by ~10 µs between updates: ÷2 s = 5 ppm of rate
change, 1.25 µs over a 0.25 s tick."""
LOST_AFTER = 5.0
"""Seconds without an update before the state says ``lost``."""
LOCK_BOUND = 0.5e-3
"""An estimate this good ends acquisition: from here on, slewing the rest away is quick."""
MAX_ACQUIRE = 5.0
"""Seconds of acquisition at most (a link whose bound never gets below :data:`LOCK_BOUND`)."""


@dataclass(frozen=True, slots=True)
class ServoEvent:
    """Something the follower may say: ``synced`` (first estimate), ``locked`` (acquisition
    over) or ``stepped``."""

    kind: str
    error: float
    """Seconds the map was off the estimate at that moment (0 for ``locked``)."""


@dataclass(frozen=True, slots=True)
class ServoLimits:
    """How a :class:`Servo` disciplines its map (the module constants say why each default)."""

    max_slew: float = MAX_SLEW
    step_threshold: float = STEP_THRESHOLD
    time_constant: float = TIME_CONSTANT
    lost_after: float = LOST_AFTER
    lock_bound: float = LOCK_BOUND
    max_acquire: float = MAX_ACQUIRE

    def __post_init__(self) -> None:
        if (
            self.max_slew < 0
            or self.step_threshold <= 0
            or self.time_constant <= 0
            or self.lost_after <= 0
        ):
            raise ValueError("servo limits must be positive")


@dataclass(frozen=True, slots=True)
class _Line:
    """``offset(t) = phase + frequency·(t − anchor) + slew·min(t − anchor, slew_for)``.

    One value, replaced whole at each update: a thread translating a timetag while another
    updates sees the old line or the new one, never half of each.
    """

    phase: float = 0.0
    anchor: float = 0.0
    frequency: float = 0.0
    slew: float = 0.0
    slew_for: float = 0.0
    """``|error / slew|``: the whole error is gone after this many seconds; then the slew stops."""


class Servo:
    """The map ``peer = local + offset(local)``, disciplined by estimates."""

    def __init__(self, limits: ServoLimits = ServoLimits()) -> None:
        self.limits = limits
        self._line = _Line()
        self._usable_since: float | None = None
        self._locked = False
        self.frequency = 0.0
        """The estimator's frequency at the last update (s/s), without the slew."""
        self.error = 0.0
        """Estimate minus map at the last update (seconds): what is still being slewed away."""
        self.estimate_bound = 0.0
        self.steps = 0
        self.updates = 0

    # -- the map ------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """True once there is a map (from the first estimate): timetags can be translated."""
        return self._usable_since is not None

    @property
    def locked(self) -> bool:
        """True once acquisition ended: from then on the map is slewed, not stepped."""
        return self._locked

    def offset_at(self, t: float) -> float:
        """Seconds the peer's clock is ahead of ours at our time ``t``, by the map.

        The slew stops once it has removed the error it was set for, so a map left alone (the
        peer went silent) runs on at the estimated frequency instead of overshooting.
        """
        line = self._line
        elapsed = t - line.anchor
        slewed = min(elapsed, line.slew_for) if elapsed > 0 else elapsed
        return line.phase + line.frequency * elapsed + line.slew * slewed

    def to_local(self, peer_time: float) -> float:
        """Our time at which the peer's clock reads ``peer_time``: solves t + offset(t) = peer."""
        line = self._line
        phase, anchor, f, s = line.phase, line.anchor, line.frequency, line.slew
        t = (peer_time - phase + (f + s) * anchor) / (1.0 + f + s)
        if t - anchor > line.slew_for:
            t = (peer_time - phase - s * line.slew_for + f * anchor) / (1.0 + f)
        return t

    def to_peer(self, t: float) -> float:
        return t + self.offset_at(t)

    @property
    def slew(self) -> float:
        """The correction currently added to the frequency, s/s."""
        return self._line.slew

    # -- discipline ---------------------------------------------------------------------------

    def state(self, now: float) -> str:
        if self._usable_since is None:
            return ACQUIRING
        if now - self._line.anchor > self.limits.lost_after:
            return LOST
        return LOCKED if self._locked else ACQUIRING

    def bound(self, now: float) -> float:
        """How far the map may be from the truth at ``now``: the estimate's bound, the error
        still being slewed, and 15 ppm (NTP's PHI) for each second since the last update."""
        if self._usable_since is None:
            return float("inf")
        return self.estimate_bound + abs(self.error) + 15e-6 * max(0.0, now - self._line.anchor)

    def update(
        self, estimate: ClockEstimate, now: float, *, restarted: bool = False
    ) -> ServoEvent | None:
        """Take a new estimate at our time ``now``; returns what happened, if worth saying."""
        limits = self.limits
        target = estimate.offset_at(now)
        self.frequency = estimate.frequency
        self.estimate_bound = estimate.bound
        self.updates += 1
        if not self._locked:
            error = target - self.offset_at(now) if self._usable_since is not None else 0.0
            self._line = _Line(target, now, estimate.frequency)
            self.error = 0.0
            if self._usable_since is None:
                self._usable_since = now
                event = "synced"
            else:
                event = ""
            if (
                estimate.bound <= limits.lock_bound
                or now - self._usable_since >= limits.max_acquire
            ):
                self._locked = True
                return ServoEvent("locked", error)
            return ServoEvent(event, error) if event else None
        error = target - self.offset_at(now)
        if restarted or abs(error) > limits.step_threshold:
            self._line = _Line(target, now, estimate.frequency)
            self.steps += 1
            self.error = 0.0
            return ServoEvent("stepped", error)
        slew = max(-limits.max_slew, min(limits.max_slew, error / limits.time_constant))
        slew_for = abs(error / slew) if slew else 0.0
        self._line = _Line(self.offset_at(now), now, estimate.frequency, slew, slew_for)
        self.error = error
        return None


class SteppingServo(Servo):
    """The map before issue #11, for ``benchmarks/clock_sync.py``: each estimate replaces it, so
    every update makes the onsets jump by however much the estimate moved (0.9 ms of inter-onset
    jitter on a ±15 ms link); it is usable and "locked" from the first estimate."""

    def update(
        self, estimate: ClockEstimate, now: float, *, restarted: bool = False
    ) -> ServoEvent | None:
        first = self._usable_since is None
        self._line = _Line(estimate.offset_at(now), now, estimate.frequency)
        self.frequency = estimate.frequency
        self.estimate_bound = estimate.bound
        self.error = 0.0
        self.updates += 1
        if first:
            self._usable_since = now
            self._locked = True
            return ServoEvent("synced", 0.0)
        return None
