"""OSC timetags: exact conversions between NTP 64-bit fixed point, Unix seconds and text.

An OSC timetag is an NTP timestamp (OSC 1.0, "OSC-timetag"): the high 32 bits count seconds since
**1900-01-01 00:00 UTC** (the NTP epoch), the low 32 bits are a binary fraction of a second, so one
unit is 2**-32 s (about 233 picoseconds). The special value ``1`` (:data:`IMMEDIATELY`) means "as
soon as it arrives".

Unix time counts seconds since **1970-01-01 00:00 UTC**; the two epochs are
:data:`NTP_UNIX_OFFSET` = 2,208,988,800 s apart. python-osc's builders take Unix seconds as a float,
so the workshop's "seconds since 1900" describes the wire format, not what you pass to python-osc.

Here a timetag is a plain ``int`` (0 .. 2**64-1) and every conversion is integer arithmetic:

* ``from_unix_ns(to_unix_ns(t)) == t`` is not promised (a nanosecond is coarser than an NTP unit),
  but ``to_unix_ns(from_unix_ns(ns)) == ns`` is, and ``from_unix(to_unix_exact(t)) == t`` always;
* ``from_unix(x)`` for a float ``x`` gives the timetag nearest to the exact binary value of ``x``.

**Eras** (RFC 5905 §6). 64 bits hold 2**32 s, about 136 years: era 0 ends on 2036-02-07
06:28:16 UTC and era 1 starts again at ``0``. A timetag on the wire does not say its era, so every
conversion to absolute time takes ``near`` (Unix seconds, normally the injected clock's now) and
picks the era that puts the timetag within ±68 years of it; without ``near`` it is read as era 0
(1900 .. 2036), which is right until 2036. :func:`difference` and :func:`add_seconds` need no era:
they work modulo 2**64, as RFC 5905 computes differences, and are right across the rollover for
timetags less than 68 years apart. :func:`from_unix` accepts times in eras 0 and 1
(1900 .. 2172) and returns the 64-bit wire value.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from fractions import Fraction

NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""

IMMEDIATELY = 1
"""The OSC timetag that means "now" (OSC 1.0: 63 zero bits followed by a one)."""

FRACTION_UNITS = 1 << 32
ERA_UNITS = 1 << 64
"""NTP units in one era (2**32 s, about 136 years)."""
MAX_TIMETAG = ERA_UNITS - 1
UNIX_MIN = -NTP_UNIX_OFFSET
"""The earliest Unix second a timetag can hold (1900-01-01)."""
UNIX_MAX = Fraction(MAX_TIMETAG, FRACTION_UNITS) - NTP_UNIX_OFFSET
"""The latest Unix time of era 0 (2036-02-07 06:28:15.99...); later times wrap to era 1."""
ERAS = 2
"""Eras :func:`from_unix` accepts: 0 and 1, 1900 .. 2172."""
_HALF_ERA = ERA_UNITS >> 1
_OFFSET_UNITS = NTP_UNIX_OFFSET * FRACTION_UNITS

_NS = 1_000_000_000
_HEX_RE = re.compile(r"^([0-9a-fA-F]{1,8})\.([0-9a-fA-F]{1,8})$")
_UNDOTTED_HEX_RE = re.compile(r"^(?:0[xX])?([0-9a-fA-F]{16})$")
"""The 64 bits as one hex number (``dd9d15a7922f48c2``, ``0x0000000000000001``): 16 digits are
never Unix seconds, which would be 30 million years from now."""


class TimetagError(ValueError):
    """A value that is not a timetag, or a time a timetag cannot hold."""


def _check(tt: int) -> int:
    if not 0 <= tt <= MAX_TIMETAG:
        raise TimetagError(f"timetag {tt} is outside 0 .. 2**64-1 (NTP era 0, 1900 .. 2036)")
    return tt


def _round_half_even(numerator: int, denominator: int) -> int:
    return round(Fraction(numerator, denominator))


def _wrap(units: int, seconds: float) -> int:
    """NTP units since 1900 (any era) as the 64-bit wire value; eras 0 and 1 only."""
    if not 0 <= units < ERAS * ERA_UNITS:
        raise TimetagError(
            f"{seconds:.3f} s since 1970 cannot be an NTP timetag (eras 0 and 1: 1900 .. 2172)"
        )
    return units & MAX_TIMETAG


def from_unix(seconds: float | int | Fraction) -> int:
    """The timetag nearest to ``seconds`` since the Unix epoch (exact for ints and Fractions).

    Times from 2036-02-07 06:28:16 on are in NTP era 1: their wire value starts again at 0.
    """
    exact = Fraction(seconds)
    return _wrap(round((exact + NTP_UNIX_OFFSET) * FRACTION_UNITS), float(exact))


def from_unix_ns(ns: int) -> int:
    """The timetag nearest to ``ns`` nanoseconds since the Unix epoch."""
    units = _round_half_even((ns + NTP_UNIX_OFFSET * _NS) * FRACTION_UNITS, _NS)
    return _wrap(units, ns / _NS)


def unwrap(tt: int, near: float | Fraction | None = None) -> int:
    """NTP units since 1900 of ``tt`` in the era nearest ``near`` (Unix seconds; RFC 5905 §6).

    The result is within ±68 years of ``near``; with ``near`` None it is ``tt`` itself (era 0).
    """
    _check(tt)
    if near is None:
        return tt
    pivot = int((near + NTP_UNIX_OFFSET) * FRACTION_UNITS)
    return tt + ((pivot - tt + _HALF_ERA) // ERA_UNITS) * ERA_UNITS


def to_unix_exact(tt: int, near: float | Fraction | None = None) -> Fraction:
    """Unix seconds as an exact fraction (in the era nearest ``near``, see :func:`unwrap`)."""
    return Fraction(unwrap(tt, near), FRACTION_UNITS) - NTP_UNIX_OFFSET


def to_unix(tt: int, near: float | Fraction | None = None) -> float:
    """Unix seconds as a float (nearest double; about 0.24 µs resolution today), in the era
    nearest ``near`` (Unix seconds, e.g. the clock's now; None: era 0)."""
    # int / int is correctly rounded in Python: the same double as float(Fraction), 10x faster.
    return (unwrap(tt, near) - _OFFSET_UNITS) / FRACTION_UNITS


def to_unix_ns(tt: int, near: float | Fraction | None = None) -> int:
    """Nanoseconds since the Unix epoch, rounded to nearest (era nearest ``near``)."""
    return _round_half_even(unwrap(tt, near) * _NS, FRACTION_UNITS) - NTP_UNIX_OFFSET * _NS


def split(tt: int) -> tuple[int, int]:
    """(seconds since 1900, fraction in 2**-32 units)."""
    _check(tt)
    return tt >> 32, tt & 0xFFFFFFFF


def from_parts(seconds: int, fraction: int) -> int:
    """The timetag with these NTP seconds (since 1900) and 32-bit fraction."""
    if not (0 <= seconds < 1 << 32 and 0 <= fraction < 1 << 32):
        raise TimetagError(f"NTP seconds {seconds} or fraction {fraction} out of 32-bit range")
    return (seconds << 32) | fraction


def from_bytes(data: bytes) -> int:
    """Decode the 8 big-endian bytes of a timetag on the wire."""
    if len(data) != 8:
        raise TimetagError(f"a timetag is 8 bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def to_bytes(tt: int) -> bytes:
    """The 8 big-endian bytes of a timetag on the wire."""
    return _check(tt).to_bytes(8, "big")


def add_seconds(tt: int, seconds: float | Fraction) -> int:
    """``tt`` moved by ``seconds`` (may be negative), rounded to the nearest NTP unit.

    Modulo 2**64: a time moved past 2036-02-07 06:28:16 wraps into era 1 (RFC 5905 §6).
    """
    return (_check(tt) + round(Fraction(seconds) * FRACTION_UNITS)) & MAX_TIMETAG


def difference(a: int, b: int) -> float:
    """``a - b`` in seconds, for timetags less than 68 years apart in any eras.

    Computed modulo 2**64 as a signed 64-bit value (RFC 5905 §6), so a timetag just after the
    2036 rollover (era 1, a small number) is later than one just before it.
    """
    return (((a - b + _HALF_ERA) & MAX_TIMETAG) - _HALF_ERA) / FRACTION_UNITS


# -- formatting -------------------------------------------------------------------------------


def format_hex(tt: int, near: float | Fraction | None = None) -> str:
    """liblo's notation: 8 hex digits of seconds since 1900, a dot, 8 of fraction.

    The wire's own 64 bits, so the same in every era (``near`` is accepted and not needed).
    """
    secs, frac = split(tt)
    return f"{secs:08x}.{frac:08x}"


def format_unix(tt: int, near: float | Fraction | None = None) -> str:
    """Unix seconds with nanosecond digits, e.g. ``1764014762.571000000`` (era nearest
    ``near``)."""
    ns = to_unix_ns(tt, near)
    sign = "-" if ns < 0 else ""
    secs, rest = divmod(abs(ns), _NS)
    return f"{sign}{secs}.{rest:09d}"


def format_ntp(tt: int, near: float | Fraction | None = None) -> str:
    """Seconds since 1900 (the wire's epoch) with nanosecond digits; past 2036 (era 1, nearest
    ``near``) the count goes on above 2**32."""
    units = unwrap(tt, near)
    secs, frac = units >> 32, units & 0xFFFFFFFF
    ns = _round_half_even(frac * _NS, FRACTION_UNITS)
    if ns == _NS:  # the fraction rounded up to a whole second
        secs, ns = secs + 1, 0
    return f"{secs}.{ns:09d}"


def format_iso(tt: int, near: float | Fraction | None = None) -> str:
    """ISO-8601 UTC with nanoseconds, e.g. ``2026-11-24T20:06:02.571000000Z`` (era nearest
    ``near``)."""
    ns = to_unix_ns(tt, near)
    secs, rest = divmod(ns, _NS)
    stamp = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(seconds=secs)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{rest:09d}Z"


Formatter = Callable[[int, "float | Fraction | None"], str]

FORMATS: dict[str, Formatter] = {
    "hex": format_hex,
    "unix": format_unix,
    "ntp": format_ntp,
    "iso": format_iso,
}
"""Formatters by the name the CLI uses for them; each takes ``(timetag, near)``."""


def describe(tt: int) -> str:
    """Human text for any timetag: ``immediately`` or the hex form."""
    return "immediately" if tt == IMMEDIATELY else format_hex(tt)


# -- parsing ----------------------------------------------------------------------------------


def parse(text: str) -> int:
    """A timetag from liblo hex (``dd9d15a7.922f48c2``, or undotted: 16 hex digits, ``0x``
    allowed), ISO-8601, Unix seconds or ``immediately``.

    ISO-8601 without a zone is taken as UTC (timetags are UTC). Decimal Unix seconds are read
    exactly (``1764014762.5`` is that instant, not the nearest double).
    """
    value = text.strip()
    if value.lower() in ("immediately", "immediate", "now+0"):
        return IMMEDIATELY
    match = _HEX_RE.match(value)
    if match and len(match.group(1)) == 8 and len(match.group(2)) == 8:
        return from_parts(int(match.group(1), 16), int(match.group(2), 16))
    undotted = _UNDOTTED_HEX_RE.match(value)
    if undotted:
        return int(undotted.group(1), 16)
    exponent = _EXPONENT_RE.search(value)
    if len(value) <= _MAX_NUMBER_TEXT and (exponent is None or len(exponent.group(1)) <= 3):
        # Bounded first: Fraction("1e100000000") computes 10**100000000 (minutes), and a
        # number past a float ("9" * 400, "1e5000") raised OverflowError (a traceback).
        try:
            return from_unix(Fraction(value))
        except (ValueError, ZeroDivisionError, OverflowError):
            pass
    return _parse_iso(value)


_MAX_NUMBER_TEXT = 64
"""Unix seconds longer than this are no time in eras 0 and 1 (exact to the attosecond: 30)."""
_EXPONENT_RE = re.compile(r"[eE][+-]?0*(\d+)$")


_ISO_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


def _parse_iso(value: str) -> int:
    match = _ISO_RE.match(value)
    if not match:
        raise TimetagError(
            f"{value!r} is not a timetag: use hex like 'dd9d15a7.922f48c2' (8 digits, a dot, 8 "
            "digits) or 'dd9d15a7922f48c2' (16 digits), Unix seconds, or ISO-8601 like "
            "'2026-11-24T20:06:02.5Z'"
        )
    date, hour, minute, second, digits, zone = match.groups()
    try:
        day = _dt.date.fromisoformat(date)
        base = _dt.datetime(day.year, day.month, day.day, int(hour), int(minute), int(second or 0))
    except ValueError as exc:
        raise TimetagError(f"{value!r} is not a valid date and time: {exc}") from None
    offset = 0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        zone_digits = zone[1:].replace(":", "")
        offset = sign * (int(zone_digits[:2]) * 3600 + int(zone_digits[2:]) * 60)
    whole = int((base - _dt.datetime(1970, 1, 1)).total_seconds()) - offset
    fraction = Fraction(int(digits), 10 ** len(digits)) if digits else Fraction(0)
    return from_unix(whole + fraction)
