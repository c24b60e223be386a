"""Timetags: known vectors, exact round trips over the whole era, formatting and parsing."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from oscsync.osc import timetag as tt

ALL_TIMETAGS = st.integers(min_value=0, max_value=tt.MAX_TIMETAG)
UNIX_NS = st.integers(
    min_value=tt.UNIX_MIN * 1_000_000_000,
    max_value=int(tt.UNIX_MAX * 1_000_000_000) - 1,
)


def test_unix_epoch_is_known_vector() -> None:
    assert tt.format_hex(tt.from_unix(0)) == "83aa7e80.00000000"
    assert tt.NTP_UNIX_OFFSET == 0x83AA7E80


def test_liblo_example_vector() -> None:
    stamp = tt.parse("dd9d15a7.922f48c2")
    assert tt.split(stamp) == (0xDD9D15A7, 0x922F48C2)
    assert tt.format_hex(stamp) == "dd9d15a7.922f48c2"


def test_half_second_and_one_unit() -> None:
    assert tt.from_unix(0.5) == (0x83AA7E80 << 32) | 0x80000000
    assert tt.from_unix(Fraction(1, 2**32)) == (0x83AA7E80 << 32) | 1


def test_immediately_is_one() -> None:
    assert tt.IMMEDIATELY == 1
    assert tt.describe(tt.IMMEDIATELY) == "immediately"
    assert tt.parse("immediately") == 1


@given(ALL_TIMETAGS)
def test_exact_round_trip_through_fraction(stamp: int) -> None:
    assert tt.from_unix(tt.to_unix_exact(stamp)) == stamp


@given(ALL_TIMETAGS)
def test_round_trip_through_float_within_one_double_step(stamp: int) -> None:
    # A double near 2**31 s has 2**-22 s steps; within that, nearest-unit conversion is exact.
    seconds = tt.to_unix(stamp)
    assume(seconds <= tt.UNIX_MAX)  # the last ~2**-22 s of the era round up past its end
    back = tt.from_unix(seconds)
    assert abs(back - stamp) <= 2**10
    assert tt.from_unix(tt.to_unix(back)) == back


@given(UNIX_NS)
def test_nanoseconds_round_trip_exactly(ns: int) -> None:
    assert tt.to_unix_ns(tt.from_unix_ns(ns)) == ns


@given(ALL_TIMETAGS)
def test_nanoseconds_are_within_half_unit(stamp: int) -> None:
    error = abs(Fraction(tt.to_unix_ns(stamp), 10**9) - tt.to_unix_exact(stamp))
    assert error <= Fraction(1, 2 * 10**9)


@given(ALL_TIMETAGS)
def test_bytes_round_trip(stamp: int) -> None:
    assert tt.from_bytes(tt.to_bytes(stamp)) == stamp
    assert len(tt.to_bytes(stamp)) == 8


@given(ALL_TIMETAGS)
def test_hex_round_trip(stamp: int) -> None:
    assert tt.parse(tt.format_hex(stamp)) == stamp


@given(st.integers(min_value=0, max_value=(1 << 32) - 2).map(lambda s: s << 32))
def test_iso_and_unix_text_round_trip_on_whole_seconds(stamp: int) -> None:
    assert tt.parse(tt.format_iso(stamp)) == stamp
    assert tt.parse(tt.format_unix(stamp)) == stamp


@given(UNIX_NS)
def test_unix_text_round_trips_nanoseconds(ns: int) -> None:
    stamp = tt.from_unix_ns(ns)
    assert tt.to_unix_ns(tt.parse(tt.format_unix(stamp))) == ns
    assert tt.to_unix_ns(tt.parse(tt.format_iso(stamp))) == ns


def test_ntp_and_unix_formats_differ_by_the_epoch_offset() -> None:
    stamp = tt.from_unix(Fraction(1764014762_25, 100))
    assert tt.format_unix(stamp) == "1764014762.250000000"
    assert tt.format_ntp(stamp) == f"{1764014762 + tt.NTP_UNIX_OFFSET}.250000000"
    assert tt.format_iso(stamp) == "2025-11-24T20:06:02.250000000Z"


def test_iso_parsing_with_zone_and_without() -> None:
    utc = tt.parse("2026-11-24T20:06:02.5Z")
    assert tt.parse("2026-11-24T20:06:02.5") == utc
    assert tt.parse("2026-11-24T21:06:02.5+01:00") == utc
    assert tt.to_unix_exact(utc) % 1 == Fraction(1, 2)


def test_range_ends() -> None:
    assert tt.from_unix(tt.UNIX_MIN) == 0
    assert tt.format_iso(0) == "1900-01-01T00:00:00.000000000Z"
    # The last NTP unit of the era is 0.23 ns before 06:28:16, which is what nanoseconds show.
    assert tt.format_iso(tt.MAX_TIMETAG) == "2036-02-07T06:28:16.000000000Z"
    assert tt.format_hex(tt.MAX_TIMETAG) == "ffffffff.ffffffff"
    # One second after the end of era 0 is in era 1 (RFC 5905 §6): the wire value wraps.
    assert tt.from_unix(tt.UNIX_MAX + 1) == (1 << 32) - 1
    with pytest.raises(tt.TimetagError):
        tt.from_unix(tt.UNIX_MAX + 1 + 2**32)  # era 2 (2172): not accepted
    with pytest.raises(tt.TimetagError):
        tt.from_unix(tt.UNIX_MIN - 1)
    with pytest.raises(tt.TimetagError):
        tt.to_bytes(-1)


def test_add_seconds_and_difference() -> None:
    base = tt.from_unix(1000)
    later = tt.add_seconds(base, 0.25)
    assert tt.difference(later, base) == 0.25
    assert tt.add_seconds(later, -0.25) == base


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "dd9d15a7", "1.2.3", "2026-13-01T00:00:00Z", "zz9d15a7.922f48c2"]
)
def test_bad_text_raises_timetag_error(text: str) -> None:
    with pytest.raises(tt.TimetagError):
        tt.parse(text)


# -- issue 20, item 13: NTP era 1 (2036-02-07 06:28:16 UTC and after) -------------------------

ROLLOVER = tt.UNIX_MAX + Fraction(1, 2**32)
"""The first instant of era 1, in Unix seconds (its wire value is 0)."""


def test_ntp_era_1_from_unix_wraps_and_reads_back_near_now() -> None:
    assert tt.from_unix(ROLLOVER) == 0
    after = ROLLOVER + Fraction(5, 2)
    stamp = tt.from_unix(after)
    assert stamp == (2 << 32) | 0x80000000
    assert tt.to_unix_exact(stamp, near=after - 1) == after
    assert tt.to_unix_exact(stamp, near=ROLLOVER - 3) == after  # just before: nearest is era 1
    assert tt.to_unix_exact(stamp) == after - 2**32  # no "now": era 0, as before
    before = tt.from_unix(ROLLOVER - 1)
    assert tt.to_unix_exact(before, near=after) == ROLLOVER - 1
    assert tt.to_unix_ns(stamp, near=float(after)) == int(after * 10**9)


@given(st.integers(min_value=-(2**40), max_value=2**40), ALL_TIMETAGS)
def test_ntp_era_1_difference_and_add_seconds_wrap(delta_units: int, stamp: int) -> None:
    seconds = Fraction(delta_units, 2**32)
    moved = tt.add_seconds(stamp, seconds)
    assert 0 <= moved <= tt.MAX_TIMETAG
    assert tt.difference(moved, stamp) == delta_units / 2**32
    near = tt.to_unix_exact(stamp) + 2**31 - 2**20  # any "now" that puts stamp in era 0 or 1
    assert tt.to_unix_exact(moved, near=near + seconds) - tt.to_unix_exact(stamp, near=near) == (
        seconds
    )


def test_ntp_era_1_difference_across_the_rollover() -> None:
    just_before = tt.from_unix(ROLLOVER - Fraction(1, 4))
    just_after = tt.from_unix(ROLLOVER + Fraction(1, 4))
    assert just_after < just_before  # the wire values wrapped...
    assert tt.difference(just_after, just_before) == 0.5  # ...the difference did not
    assert tt.add_seconds(just_before, 0.5) == just_after


def test_ntp_era_1_formats_near_now() -> None:
    now = float(ROLLOVER) + 1.5
    stamp = tt.from_unix(now)
    assert tt.format_iso(stamp, now) == "2036-02-07T06:28:17.500000000Z"
    assert tt.format_unix(stamp, now) == f"{int(ROLLOVER) + 1}.500000000"
    assert tt.format_ntp(stamp, now) == f"{2**32 + 1}.500000000"
    assert tt.format_hex(stamp, now) == "00000001.80000000"
    assert tt.parse(tt.format_iso(stamp, now)) == stamp


@pytest.mark.parametrize(
    ("text", "stamp"),
    [
        ("0000000000000001", 1),
        ("dd9d15a7922f48c2", 0xDD9D15A7922F48C2),
        ("0xDD9D15A7922F48C2", 0xDD9D15A7922F48C2),
    ],
)
def test_undotted_hex_is_the_timetag_not_unix_seconds(text: str, stamp: int) -> None:
    # Issue 28: 16 hex digits were read as Unix seconds (0000000000000001 was 1970-01-01 00:00:01).
    assert tt.parse(text) == stamp


def test_hex_of_the_wrong_length_names_both_hex_forms() -> None:
    with pytest.raises(tt.TimetagError, match=r"'dd9d15a7922f48c2' \(16 digits\)"):
        tt.parse("dd9d15a7922f48c")


@pytest.mark.parametrize(
    "text",
    ["9" * 400, "1e5000", "9" * 60 + "e999", "1e100000000", "1e-100000000"],
)
def test_a_number_far_out_of_range_is_a_timetag_error_at_once(text: str) -> None:
    """``send --at 1e5000`` printed a traceback (OverflowError) and ``--at 1e100000000``
    computed 10**100000000 for minutes."""
    with pytest.raises(tt.TimetagError, match="is not a timetag"):
        tt.parse(text)
