"""The servo: continuous once locked (slewed at ≤ 500 ppm, never stepped), steps on big errors."""

from __future__ import annotations

import itertools

import pytest

from oscsync.sync.estimate import ClockEstimate, EnvelopeEstimator
from oscsync.sync.servo import ACQUIRING, LOCKED, LOST, MAX_SLEW, Servo
from simlink import SimLink, exponential, uniform


def _estimate(at: float, offset: float, ppm: float = 0.0, bound: float = 1e-4) -> ClockEstimate:
    return ClockEstimate(at, offset, ppm * 1e-6, bound, 0.02, 10, 10, 1.0)


def test_acquiring_until_the_first_estimate_then_locked_with_one_event() -> None:
    servo = Servo()
    assert servo.state(0.0) == ACQUIRING and not servo.usable
    event = servo.update(_estimate(1.0, 0.25), 1.0)
    assert event is not None and event.kind == "locked"
    assert servo.state(1.0) == LOCKED
    assert servo.offset_at(1.0) == 0.25
    assert servo.to_local(servo.to_peer(7.5)) == pytest.approx(7.5, abs=1e-12)


def test_small_errors_are_slewed_not_stepped_and_the_map_stays_continuous() -> None:
    servo = Servo()
    servo.update(_estimate(0.0, 0.0), 0.0)
    before = servo.offset_at(1.0)
    assert servo.update(_estimate(1.0, 0.010), 1.0) is None  # 10 ms off: slewed
    assert servo.offset_at(1.0) == before  # no jump at the update
    assert servo.slew == MAX_SLEW  # 10 ms / 2 s would be 5,000 ppm: limited to 500
    assert servo.offset_at(2.0) - servo.offset_at(1.0) == pytest.approx(MAX_SLEW)
    assert servo.steps == 0


def test_the_slew_stops_when_the_error_is_gone() -> None:
    servo = Servo()
    servo.update(_estimate(0.0, 0.0, ppm=100.0), 0.0)
    servo.update(_estimate(1.0, 100e-6 + 0.0002, ppm=100.0), 1.0)  # 0.2 ms to remove
    # Left alone (no more updates), the map removes 0.2 ms and then runs at 100 ppm.
    assert servo.offset_at(100.0) == pytest.approx(0.0002 + 100e-6 * 100.0, abs=1e-9)
    for t in (1.2, 3.0, 50.0):
        assert servo.to_local(servo.to_peer(t)) == pytest.approx(t, abs=1e-9)


def test_a_large_error_steps_once_and_says_so() -> None:
    servo = Servo()
    servo.update(_estimate(0.0, 0.0), 0.0)
    event = servo.update(_estimate(1.0, 0.080), 1.0)
    assert event is not None and event.kind == "stepped"
    assert event.error == pytest.approx(0.080)
    assert servo.offset_at(1.0) == 0.080 and servo.steps == 1


def test_a_peer_restart_steps_whatever_its_size() -> None:
    servo = Servo()
    servo.update(_estimate(0.0, 0.0), 0.0)
    event = servo.update(_estimate(1.0, 0.003), 1.0, restarted=True)
    assert event is not None and event.kind == "stepped" and servo.offset_at(1.0) == 0.003


def test_acquisition_follows_the_estimates_until_the_bound_is_small() -> None:
    servo = Servo()
    event = servo.update(_estimate(0.0, 0.004, bound=3e-3), 0.0)
    assert event is not None and event.kind == "synced"
    assert servo.usable and not servo.locked and servo.state(0.0) == ACQUIRING
    assert servo.update(_estimate(0.5, 0.001, bound=2e-3), 0.5) is None
    assert servo.offset_at(0.5) == 0.001  # followed directly while acquiring: no slow slew
    event = servo.update(_estimate(1.0, 0.0002, bound=0.4e-3), 1.0)
    assert event is not None and event.kind == "locked" and servo.state(1.0) == LOCKED
    assert servo.steps == 0
    # A link whose bound stays large still locks after MAX_ACQUIRE seconds.
    slow = Servo()
    slow.update(_estimate(0.0, 0.0, bound=5e-3), 0.0)
    assert not slow.locked
    slow.update(_estimate(5.0, 0.0, bound=5e-3), 5.0)
    assert slow.locked


def test_lost_after_five_silent_seconds_and_the_bound_grows() -> None:
    servo = Servo()
    servo.update(_estimate(0.0, 0.0, bound=1e-4), 0.0)
    assert servo.state(4.9) == LOCKED
    assert servo.state(5.1) == LOST
    assert servo.bound(10.0) == pytest.approx(1e-4 + 15e-6 * 10.0)
    servo.update(_estimate(6.0, 0.0), 6.0)
    assert servo.state(6.0) == LOCKED


@pytest.mark.parametrize(
    ("delay", "ppm"),
    [(uniform(), 50.0), (exponential(), 200.0), (uniform(), -500.0), (uniform(), 500.0)],
    ids=["uniform-50ppm", "exponential-200ppm", "uniform-minus-500ppm", "uniform-500ppm"],
)
def test_on_a_simulated_link_no_step_once_locked_and_ticks_stay_even(
    delay: object, ppm: float
) -> None:
    """Updates 10 times a second; ticks at 240 bpm translated through the map: no step, the
    slew stays ≤ 500 ppm, the inter-onset std ≤ 20 µs after 10 s and the error within goal."""
    link = SimLink(delay, skew=0.15, ppm=ppm, rate=40, seed=1)  # type: ignore[arg-type]
    estimator, servo = EnvelopeEstimator(), Servo()
    onsets: list[float] = []
    errors: list[float] = []
    next_update, next_tick = 0.0, 0.0
    for exchange in link.exchanges(40.0):
        estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
        now = exchange.t4
        if now >= next_update:
            next_update = now + 0.1
            estimate = estimator.estimate(now)
            if estimate is not None:
                before = servo.offset_at(now) if servo.locked else None
                servo.update(estimate, now)
                if before is not None:
                    assert servo.offset_at(now) == before  # continuous once locked
                assert abs(servo.slew) <= MAX_SLEW
        while servo.usable and next_tick <= now:
            # The leader's tick for peer time P plays at to_local(P); the true local time is
            # the t with t + offset(t) = P.
            peer_time = link.offset(next_tick) + next_tick
            onsets.append(servo.to_local(peer_time))
            errors.append(servo.to_local(peer_time) - next_tick)
            next_tick += 0.25
        if not servo.usable:
            next_tick = now
    assert servo.steps == 0
    late = [e for e, t in zip(errors, onsets) if t >= 10.0]
    intervals = [b - a for a, b in itertools.pairwise(onsets) if a >= 10.0]
    mean = sum(intervals) / len(intervals)
    std = (sum((i - mean) ** 2 for i in intervals) / (len(intervals) - 1)) ** 0.5
    assert std <= 20e-6
    assert max(abs(e) for e in late) <= 0.5e-3
