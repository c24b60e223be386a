"""A delay-locked loop: a sound card's frame counter mapped to the monotonic clock, filtered.

An audio callback learns the time only by reading a clock when it runs, and when it runs jitters
(thread wake-up, the GIL, the host's own timing) by tens to hundreds of microseconds, while the
frames it writes are played at a perfectly regular rate. Placing a sound from each callback's raw
time moves the sound by that jitter (issue #14 measured 34 % of gaps within ±1 frame that way).
The loop below is the second-order DLL of Fons Adriaensen, "Using a DLL to filter time" (LAC
2005), the one JACK uses for ``jack_get_cycle_times``: it predicts when the next block starts from
the filtered period, compares with the measured time, and corrects both by a fraction of the
error. With a bandwidth of 0.1 Hz and callbacks every few milliseconds, the callback jitter is
averaged over thousands of blocks, while the loop still follows a sound card whose crystal runs
some ppm off the system clock.

Written per frame rather than per period, so blocks of varying size (some host APIs) are fine.
Pure arithmetic, no clock of its own: tests feed it noisy times and check what it returns.
"""

from __future__ import annotations

import math

DEFAULT_BANDWIDTH_HZ = 0.1
"""Measured on JACK's dummy driver (issue #14): the callback times wander by tens of µs over a
fraction of a second, and only a narrow loop keeps the frame <-> time slope steady enough for
onsets 250 ms apart to be within ±1 frame of each other (1 Hz: 44 % of gaps, 0.1 Hz: 100 %)."""
LOCK_BANDWIDTH_HZ = 1.0
LOCK_TIME_S = 2.0
"""A loop this narrow takes ~10 s to settle from one noisy first reading, so it starts at
:data:`LOCK_BANDWIDTH_HZ` and narrows by a factor e every :data:`LOCK_TIME_S` seconds (0.1 Hz
after 4.6 s; simulated with 300 µs of jitter, the mapping is within 1 frame of the truth after
2 s)."""
CLAMP_S = 0.0005
SUSPECTS = 4
RELOCK_AFTER_S = 0.020
"""A measured block time this far from the prediction (:data:`SUSPECTS` times in a row) means the
stream skipped (an xrun the host did not flag, a restart): start over instead of slewing for
seconds."""


class DelayLockedLoop:
    """Filtered time of frame ``n`` of a stream whose nominal rate is ``rate`` frames a second."""

    def __init__(
        self,
        rate: float,
        *,
        bandwidth_hz: float = DEFAULT_BANDWIDTH_HZ,
        lock_bandwidth_hz: float = LOCK_BANDWIDTH_HZ,
        lock_time_s: float = LOCK_TIME_S,
        relock_after_s: float = RELOCK_AFTER_S,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of frames a second, not {rate}")
        self.rate = float(rate)
        self.bandwidth_hz = bandwidth_hz
        self.lock_bandwidth_hz = max(lock_bandwidth_hz, bandwidth_hz)
        self.lock_time_s = lock_time_s
        self.relock_after_s = relock_after_s
        self.locks = 0
        """How many times the loop (re)started from a raw measurement, the first time included."""
        self._frame = 0
        self._time = 0.0
        self._period = 1.0 / self.rate  # seconds per frame, filtered
        self._locked = False
        self._lock_frame = 0
        self.slips = 0
        """Xruns after which the mapping moved by whole blocks and kept its lock."""
        self._suspects: list[tuple[float, int, float]] = []
        self._skip_block: int | None = None

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def seconds_per_frame(self) -> float:
        return self._period

    def reset(self) -> None:
        """Forget the lock: the next :meth:`update` starts from its measurement (restart)."""
        self._locked = False
        self._period = 1.0 / self.rate
        self._suspects.clear()
        self._skip_block = None

    def after_xrun(self, block: int) -> None:
        """The host flagged an xrun: the stream may have moved on by whole blocks of ``block``
        frames without us. JACK drops a late client's whole cycle (measured on the dummy driver:
        the onsets after an xrun were exactly 256 frames early). The next :data:`SUSPECTS`
        readings decide, by the least delayed of them: a whole number of blocks shifts the
        mapping and keeps the lock (and its sub-frame accuracy); anything else re-locks."""
        if self._locked and block > 0:
            self._skip_block = block
            self._suspects.clear()

    def update(self, frame: int, measured: float) -> float:
        """Frame ``frame`` starts a block and the clock read ``measured`` for it; return the
        filtered time of that frame."""
        if not self._locked:
            return self._lock(frame, measured, 1.0 / self.rate)
        frames = frame - self._frame
        if frames <= 0:
            return self.time_of(frame)
        predicted = self._time + frames * self._period
        error = measured - predicted
        if self._skip_block is not None or abs(error) > self.relock_after_s:
            return self._suspect(frame, measured, error)
        self._suspects.clear()
        # One callback that ran very late moves the loop by at most this much: the filter
        # averages jitter, it should not chase a stall (measured: a 4 ms stall moved onsets by
        # 2-6 frames right after a lock, when the loop is still wide).
        error = max(-CLAMP_S, min(CLAMP_S, error))
        # Adriaensen's coefficients for a critically damped loop: omega = 2π·B·T over the interval
        # T since the last update (clamped: the loop is only stable for omega well below 1).
        locked_for = (frame - self._lock_frame) / self.rate
        bandwidth = max(
            self.bandwidth_hz, self.lock_bandwidth_hz * math.exp(-locked_for / self.lock_time_s)
        )
        omega = min(2 * math.pi * bandwidth * frames * self._period, 0.5)
        self._time = predicted + math.sqrt(2) * omega * error
        self._period += omega * omega * error / frames
        self._frame = frame
        return self._time

    def _suspect(self, frame: int, measured: float, error: float) -> float:
        """A reading after an xrun, or far off: keep the mapping until :data:`SUSPECTS` of them
        are in, then shift by whole blocks or re-lock from the least delayed one."""
        self._suspects.append((error, frame, measured))
        if len(self._suspects) < SUSPECTS:
            return self.time_of(frame)
        error, first_frame, first_measured = min(self._suspects)
        block, self._skip_block = self._skip_block, None
        self._suspects.clear()
        if block is not None:
            block_s = block * self._period
            blocks = round(error / block_s)
            if abs(error - blocks * block_s) <= min(block_s / 4, 0.001):
                self._time += blocks * block_s
                self.slips += blocks != 0
                return self.time_of(frame)
        self._lock(first_frame, first_measured, self._period)  # the rate is still known
        return self.time_of(frame)

    def _lock(self, frame: int, measured: float, period: float) -> float:
        self._frame = self._lock_frame = frame
        self._time = measured
        self._period = period
        self._locked = True
        self.locks += 1
        return measured

    def time_of(self, frame: int) -> float:
        """Filtered time of ``frame`` (extrapolated from the last update)."""
        return self._time + (frame - self._frame) * self._period

    def frame_at(self, t: float) -> float:
        """The (fractional) frame that the loop maps to time ``t``."""
        return self._frame + (t - self._time) / self._period
