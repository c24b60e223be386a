"""The JACK harness's frame -> time mapping, without JACK: a driver clock that stalls."""

from __future__ import annotations

import random

import pytest

from jackharness import STEP_S, STEP_WINDOW, FrameClock

RATE = 48_000
PERIOD = 256


def _cycles(
    count: int, stall_at: int | None = None, stall: float = 0.0, seed: int = 1
) -> list[tuple[int, float]]:
    """(first frame, callback time) of ``count`` cycles of an anchored driver: each callback
    0-2 ms late (the scheduler), never early; at ``stall_at`` the driver wakes ``stall`` s late
    and restarts its timer there, so every later frame is ``stall`` s later."""
    rng = random.Random(seed)
    anchor = 1000.0
    cycles = []
    for k in range(count):
        if k == stall_at:
            anchor += stall
        cycles.append((k * PERIOD, anchor + k * PERIOD / RATE + rng.uniform(0, 0.002)))
    return cycles


@pytest.mark.parametrize("stall", [0.030, 0.0035])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jack_driver_slip_frames_after_a_stall_are_mapped_at_once_not_slewed(
    stall: float, seed: int
) -> None:
    """A driver stall (30 ms: the failure's size) is one step of the frame clock: frames on
    either side map to their own stretch's phase, within the callbacks' earliest lateness,
    even when our own callbacks were late just before it."""
    cycles = _cycles(2000, stall_at=1000, stall=stall, seed=seed)
    cycles[997:1000] = [(frame, mono + 0.001) for frame, mono in cycles[997:1000]]
    clock = FrameClock.fit(cycles, RATE)
    assert [index for index, _ in clock.steps] == [1000]
    assert clock.steps[0][1] == pytest.approx(stall, abs=1e-4)
    assert clock.phase_at(999) == pytest.approx(1000.0, abs=1e-4)
    assert clock.phase_at(1000) == pytest.approx(1000.0 + stall, abs=1e-4)
    assert clock.phase_at(1999) == pytest.approx(1000.0 + stall, abs=1e-4)


def test_jack_driver_slip_late_callbacks_alone_are_no_step() -> None:
    """Our own callbacks late for fewer than STEP_WINDOW cycles in a row (a busy test process)
    move no phase: the driver's clock did not step."""
    cycles = _cycles(600)
    late = [(frame, mono + 0.010) for frame, mono in cycles[300 : 300 + STEP_WINDOW - 1]]
    cycles[300 : 300 + STEP_WINDOW - 1] = late
    clock = FrameClock.fit(cycles, RATE)
    assert clock.steps == []
    assert clock.phase_at(310) == pytest.approx(1000.0, abs=1e-4)
    assert STEP_S < 0.010
