"""One threshold for "late" in every command, and two kinds: arrived late, played late."""

from __future__ import annotations

import pytest

from oscsync.lateness import LATE_THRESHOLD, ON_TIME, Lateness, classify, counts_text

DUE = 1000.0


@pytest.mark.parametrize(
    ("arrival", "played", "expected"),
    [
        (DUE - 0.1, DUE, ON_TIME),  # early, played on time
        (DUE - 0.1, DUE + 0.0009, Lateness(played_after=0.0009)),  # within the threshold
        (DUE - 0.1, DUE + 0.002, Lateness(played_late=True, played_after=0.002)),  # the timer
        (DUE + 0.0005, DUE + 0.0007, Lateness(played_after=0.0007)),  # a little after: on time
        (DUE + 0.0005, DUE + 0.0015, Lateness(arrived_late=True, played_after=0.0015)),
        (DUE + 0.5, DUE + 0.5, Lateness(arrived_late=True, played_after=0.5)),
    ],
)
def test_late_is_more_than_the_threshold_after_the_timetag_and_says_why(
    arrival: float, played: float, expected: Lateness
) -> None:
    got = classify(DUE, arrival, played)
    assert (got.arrived_late, got.played_late) == (expected.arrived_late, expected.played_late)
    assert got.played_after == pytest.approx(expected.played_after)
    assert got.late == (got.arrived_late or got.played_late)


def test_the_threshold_is_one_millisecond_and_both_counts_are_always_shown() -> None:
    assert LATE_THRESHOLD == 0.001
    assert counts_text(0, 0) == "arrived late 0  played late 0"
    assert counts_text(2, 1) == "arrived late 2  played late 1"
