"""The text and JSON lines ``oscsync dump`` prints, for every kind of packet."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from osc_strategies import VALID
from oscsync import codec
from oscsync import timetag as tt
from oscsync.apps.dump import json_line, text_line
from oscsync.transport import Received

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
            assert record["timetag_unix"] == tt.to_unix(stamp)
            assert math.isclose(record["headroom_ms"], (tt.to_unix(stamp) - ARRIVAL) * 1000)
        assert ("dispatched" in record) == (dispatched is not None)
        for value, tag, shown in zip(message.args, message.types, record["args"]):
            if tag == "b":
                assert shown == value.hex()
            elif tag in "fd" and not math.isfinite(value):
                assert shown == repr(value)
            else:
                assert shown == value


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
