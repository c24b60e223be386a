"""The text and JSON lines ``oscsync dump`` prints, for every kind of packet."""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osc_strategies import VALID
from oscsync.apps import dump
from oscsync.apps.dump import json_line, text_line
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.terminal import display

SOURCE = ("127.0.0.1", 9000)
ARRIVAL = 1_795_551_084.375


@settings(max_examples=300, deadline=None)
@given(VALID, st.one_of(st.none(), st.floats(min_value=1e9, max_value=2e9)))
def test_every_json_line_is_json_with_the_decoded_values(
    packet: bytes, dispatched: float | None
) -> None:
    for message in codec.decode(packet):
        received = Received(message, SOURCE, ARRIVAL)
        record = json.loads(json_line(received, ARRIVAL, dispatched))
        assert record["address"] == message.address
        assert record["types"] == message.types
        assert record["source"] == "127.0.0.1:9000"
        assert record["arrival"] == ARRIVAL
        stamp = message.timetag
        assert record["timetag"] == (None if stamp is None else tt.format_hex(stamp))
        if stamp is None or stamp == tt.IMMEDIATELY:
            assert record["timetag_unix"] is None and record["headroom_ms"] is None
        else:
            # Read in the era nearest the arrival (RFC 5905 §6): 1900's values are 2036's.
            unix = tt.to_unix(stamp, near=ARRIVAL)
            assert abs(unix - ARRIVAL) <= 2**31
            assert record["timetag_unix"] == unix
            assert math.isclose(record["headroom_ms"], (unix - ARRIVAL) * 1000)
        assert ("dispatched" in record) == (dispatched is not None)
        assert record["args"] == _expected_json_args(message)


def _expected_json_args(message: codec.Message) -> list[object]:
    """What ``--jsonl`` shows for each argument, by its type tag, arrays included (written
    apart from display.json_args: recursion is fine for the arrays hypothesis makes)."""
    tags = iter(tag for tag in message.types if tag not in "[]")

    def shown(value: object) -> object:
        if isinstance(value, list):
            return [shown(item) for item in value]
        tag = next(tags)
        if tag == "b":
            assert isinstance(value, bytes)
            return value.hex()
        if tag == "t":
            assert isinstance(value, int)
            return tt.format_hex(value)
        if tag == "m":
            assert isinstance(value, tuple)
            return list(value)
        if isinstance(value, float) and not math.isfinite(value):
            return repr(value)
        return value

    return [shown(value) for value in message.args]


def test_json_line_escapes_controls_and_keeps_text() -> None:
    message = codec.Message("/x\u009b", ("\x1b[2J", "naïve"), "ss")
    line = json_line(Received(message, SOURCE, ARRIVAL), ARRIVAL)
    assert line.isascii() and "\x1b" not in line
    assert json.loads(line)["args"] == ["\x1b[2J", "naïve"]


def test_non_finite_floats_are_strings_not_invalid_json() -> None:
    message = codec.Message("/f", (float("inf"), float("nan")), "fd")
    record = json.loads(json_line(Received(message, SOURCE, ARRIVAL), ARRIVAL))
    assert record["args"] == ["inf", "nan"]


def test_text_line_shows_timetag_and_headroom() -> None:
    stamp = tt.from_unix(ARRIVAL + 0.25)
    message = codec.Message("/tick", (3,), "i", stamp)
    line = text_line(Received(message, SOURCE, ARRIVAL), ARRIVAL)
    assert line.endswith(f"@{tt.format_hex(stamp)} (+250.000 ms)  /tick ,i 3")


# -- issue 20, items 5 and 9: invisible characters, strict JSON ------------------------------

HIDDEN = {
    "\u200b": "\\u200b",  # zero-width space (Cf)
    "\u200f": "\\u200f",  # right-to-left mark (Cf)
    "\u202e": "\\u202e",  # right-to-left override (Cf)
    "\u2066": "\\u2066",  # left-to-right isolate (Cf)
    "\U000e0041": "\\U000e0041",  # tag character (Cf)
    "\u00a0": "\\xa0",  # no-break space (Zs)
    "\u3000": "\\u3000",  # ideographic space (Zs)
    "\u2028": "\\u2028",  # line separator (Zl)
    "\u2029": "\\u2029",  # paragraph separator (Zp)
    "\ue000": "\\ue000",  # private use (Co)
    "\U000e0080": "\\U000e0080",  # unassigned (Cn)
    "\ud800": "\\ud800",  # lone surrogate (Cs)
    "\x1b": "\\x1b",
    "\x9b": "\\x9b",
}


def test_escape_invisible_format_characters() -> None:
    for hidden, shown in HIDDEN.items():
        assert display.escape(f"a{hidden}b") == f"a{shown}b"
        assert display.printable(f"a{hidden}b") == f"a{shown}b"
    kept = "plain text, é, ñ, 日本語, emoji 😀, a\u0301"
    assert display.escape(kept) == kept
    # printable() leaves text escape() made alone: warnings quoting escaped text stay readable.
    assert display.printable(display.escape("a\\b\x1b")) == "a\\\\b\\x1b"


def test_escape_invisible_format_characters_in_dump_lines() -> None:
    address = "/ok\u202etxt.exe"
    message = codec.Message(address, ("x\u200by",), "s", None)
    line = text_line(Received(message, SOURCE, ARRIVAL), ARRIVAL)
    assert "\u202e" not in line and "\u200b" not in line
    assert "/ok\\u202etxt.exe" in line and "x\\u200by" in line


def _strict_json(line: str) -> object:
    """Parse as RFC 8259 JSON with no lone surrogates (what jq accepts)."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    record = json.loads(line, parse_constant=refuse)
    pending = [record]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            value.encode("utf-8")  # raises on a lone surrogate
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
    return record


def test_jsonl_lone_surrogate_char_is_strict_json() -> None:
    packet = _char_message(0xD800)
    (message,) = codec.decode(packet)
    line = json_line(Received(message, SOURCE, ARRIVAL), ARRIVAL)
    record = _strict_json(line)
    assert isinstance(record, dict) and record["args"] == ["\ufffd"]
    if shutil.which("jq"):  # the documented `dump --jsonl | jq` pipeline
        done = subprocess.run(["jq", "-c", ".args"], input=line, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def _char_message(code: int) -> bytes:
    return b"/c\x00\x00,c\x00\x00" + struct.pack(">i", code)


CHAR_CODES = st.one_of(
    st.integers(min_value=0xD800, max_value=0xDFFF),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(CHAR_CODES, min_size=1, max_size=4), st.one_of(st.none(), st.just(2e9)))
def test_jsonl_every_line_is_strict_json_property(
    codes: list[int], dispatched: float | None
) -> None:
    payload = b"".join(struct.pack(">i", code) for code in codes)
    tags = ("," + "c" * len(codes)).encode() + b"\x00"
    packet = b"/c\x00\x00" + tags + b"\x00" * (-len(tags) % 4) + payload
    if not all(0 <= code <= 0x10FFFF for code in codes):
        # Beyond Unicode: dropped as what it is (issue 28), never masked into a character.
        with pytest.raises(codec.DecodeError, match="bad-char"):
            codec.decode(packet)
        return
    for message in codec.decode(packet):
        _strict_json(json_line(Received(message, SOURCE, ARRIVAL), ARRIVAL, dispatched))
        assert text_line(Received(message, SOURCE, ARRIVAL), ARRIVAL).isprintable()


def test_array_depth_formatters_handle_the_deepest_allowed_array() -> None:
    depth = codec.MAX_ARRAY_DEPTH
    tags = ("," + "[" * depth + "s" + "]" * depth).encode() + b"\x00"
    packet = b"/a\x00\x00" + tags + b"\x00" * (-len(tags) % 4) + b"x\x1b\x00\x00"
    (message,) = codec.decode(packet)
    received = Received(message, SOURCE, ARRIVAL)
    record = _strict_json(json_line(received, ARRIVAL))
    assert isinstance(record, dict)
    assert json.dumps(record["args"]).count("[") == depth + 1
    assert "\x1b" not in text_line(received, ARRIVAL)


def test_ntp_era_1_dump_lines_read_the_timetag_in_the_era_of_now() -> None:
    arrival = float(tt.UNIX_MAX) - 0.25  # 0.25 s before 2036-02-07 06:28:16
    stamp = tt.from_unix(arrival + 0.5)  # era 1 on the wire
    message = codec.Message("/tick", (1,), "i", stamp)
    received = Received(message, SOURCE, arrival)
    record = _strict_json(json_line(received, arrival, arrival + 0.75))
    assert isinstance(record, dict)
    assert record["timetag"] == "00000000.40000000"
    assert record["timetag_unix"] == arrival + 0.5
    assert record["headroom_ms"] == 500.0 and record["lateness_ms"] == 250.0
    assert "@00000000.40000000 (+500.000 ms)" in text_line(received, arrival)


def test_array_depth_formatters_never_recurse_on_a_hand_made_deep_message() -> None:
    deep: list[object] = [1]
    for _ in range(5000):
        deep = [deep]
    types = "[" * 5001 + "i" + "]" * 5001
    received = Received(codec.Message("/deep", (deep,), types, None), SOURCE, ARRIVAL)
    assert display.TOO_DEEP in text_line(received, ARRIVAL)
    assert _strict_json(json_line(received, ARRIVAL))["args"] == [display.TOO_DEEP]  # type: ignore[index]
    nested = display.json_args(codec.Message("/n", ([[b"\x01"], "x\ud800"],), "[[b]s]", None))
    assert nested == [[["01"], "x\ufffd"]]


# -- issue 18: the output path --------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=0, max_value=2**33, allow_nan=False))
def test_clock_text_matches_datetime_to_the_microsecond(unix: float) -> None:
    import datetime

    expected = datetime.datetime.fromtimestamp(unix, tz=datetime.timezone.utc)
    assert dump.clock_text(unix) == expected.strftime("%H:%M:%S.%f")


@settings(max_examples=300, deadline=None)
@given(VALID, st.one_of(st.none(), st.floats(min_value=1e9, max_value=2e9)))
def test_number_fast_paths_print_what_the_general_formatters_print(
    packet: bytes, dispatched: float | None
) -> None:
    for message in codec.decode(packet):
        if not set(message.types) <= set("ihfd"):
            continue
        received = Received(message, SOURCE, ARRIVAL)
        record = json.loads(json_line(received, ARRIVAL, dispatched))
        assert record["args"] == json.loads(json.dumps(display.json_args(message)))
        line = text_line(received, ARRIVAL, dispatched)
        assert line.endswith(f",{message.types} {display.format_args(message)}".rstrip())


def _dumped(dumper: dump.Dumper, *addresses: str) -> None:
    for address in addresses:
        message = codec.Message(address, (1,), "i")
        dumper.write(Received(message, SOURCE, ARRIVAL), ARRIVAL)


def test_dumper_batches_lines_until_the_receive_loop_flushes() -> None:
    out = io.StringIO()
    dumper = dump.Dumper(out, flush_each=False)
    _dumped(dumper, "/a", "/b")
    assert out.getvalue() == "" and dumper.written == 0
    dumper.flush()
    assert [line.split()[-3] for line in out.getvalue().splitlines()] == ["/a", "/b"]
    assert dumper.written == 2


def test_dumper_batch_is_bounded_in_bytes() -> None:
    out = io.StringIO()
    dumper = dump.Dumper(out, flush_each=False)
    line = len(text_line(Received(codec.Message("/a", (1,), "i"), SOURCE, ARRIVAL), ARRIVAL)) + 1
    _dumped(dumper, *["/a"] * (dump._FLUSH_BYTES // line + 1))
    assert dumper.written == dump._FLUSH_BYTES // line + 1  # written without a flush() call


def test_dumper_counts_messages_after_count_as_not_printed() -> None:
    out = io.StringIO()
    dumper = dump.Dumper(out, count=2, flush_each=False)
    _dumped(dumper, "/a", "/b", "/c")
    assert dumper.done.is_set() and (dumper.written, dumper.skipped) == (2, 1)
    assert len(out.getvalue().splitlines()) == 2  # the count'th line flushes at once


@settings(max_examples=300, deadline=None)
@given(VALID)
def test_lines_printed_on_arrival_are_the_general_lines(packet: bytes) -> None:
    """``Dumper.print_now``'s one-step renderers print exactly what text_line/json_line do."""
    for message in codec.decode(packet):
        received = Received(message, ("::1", 9000), ARRIVAL)
        assert dump._text_now(received) == text_line(received, ARRIVAL)
        assert dump._json_now(received) == json_line(received, ARRIVAL)


def test_lines_rendered_from_a_cached_shape_match_the_general_lines() -> None:
    """The per-(address, types) pieces are reused: later lines (a NaN, an infinity, another
    source) still print exactly what text_line/json_line do (issue 18)."""
    for value, source in ((0.5, ("127.0.0.1", 1)), (math.nan, ("::1", 2)), (-math.inf, ("h", 3))):
        message = codec.Message("/shape/reuse", (7, value), "if")
        received = Received(message, source, ARRIVAL)
        assert dump._json_now(received) == json_line(received, ARRIVAL)
        assert dump._text_now(received) == text_line(received, ARRIVAL)


def test_arrays_show_each_value_by_its_type_tag() -> None:
    # Issue 28: a timetag, an infinitum or a colour in an array prints as it does outside one.
    stamp = 0xDD9D15A7922F48C2
    message = codec.Message("/a", ([stamp, float("inf"), [b"\x01"]], 0xFF0000FF), "[tI[b]]r", None)
    assert display.json_args(message) == [["dd9d15a7.922f48c2", "inf", ["01"]], 0xFF0000FF]
    assert display.format_args(message) == '[["dd9d15a7.922f48c2", "inf", ["01"]], 4278190335]'
    assert display.format_args(codec.Message("/c", (0xFF0000FF,), "r", None)) == "rgba:ff0000ff"


def test_strings_in_arrays_are_escaped_once_and_reach_no_terminal_raw() -> None:
    """JSON writes ESC as \\u001b and a quote as \\": shown as JSON says them, not doubled to
    \\\\u001b; what JSON leaves raw (C1 CSI, DEL, zero-width space) is escaped all the same."""
    message = codec.Message("/a", (["\x1b[2J", 'say "hi"', "\x9b2J\x7f\u200b"],), "[sss]", None)
    shown = display.format_args(message)
    assert shown == '[["\\u001b[2J", "say \\"hi\\"", "\\x9b2J\\x7f\\u200b"]]'
    assert shown.isprintable()
    assert json.loads(shown.replace("\\x9b2J\\x7f", ""))[0][:2] == ["\x1b[2J", 'say "hi"']
