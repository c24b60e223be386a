"""The recording format (issue #15): written line by line, read back byte-exact, bad files named."""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osc_strategies import VALID, mutated
from oscsync.files.recording import (
    MAX_DATAGRAM,
    MAX_LINE,
    MAX_VIEW,
    ReadReport,
    RecordingError,
    RecordingWriter,
    read_recording,
)
from oscsync.osc import codec
from oscsync.osc import timetag as tt

# Every type tag oscsync decodes, including liblo's aliases (S c t I), arrays, MIDI and RGBA,
# written byte by byte: the keep-mode promise is about bytes, not about what an encoder makes.
EVERY_TYPE = (
    b"/every\x00\x00"
    + b",ifdsbhTFNSctImr[ii]\x00\x00\x00\x00"
    + (7).to_bytes(4, "big")
    + b"\x3f\xc0\x00\x00"  # f 1.5
    + b"\x3f\xf8\x00\x00\x00\x00\x00\x00"  # d 1.5
    + b"str\x00"
    + b"\x00\x00\x00\x03abc\x00"  # b
    + (2**40).to_bytes(8, "big")  # h
    + b"sym\x00"  # S
    + (65).to_bytes(4, "big")  # c
    + tt.to_bytes(0xDD9D15A7922F48C2)  # t
    + b"\x00\x90\x3c\x7f"  # m
    + b"\xff\x00\x00\xff"  # r
    + (1).to_bytes(4, "big")
    + (2).to_bytes(4, "big")
)
NESTED = codec.encode_bundle(
    0xDD9D15A700000000,
    [
        codec.encode_message("/a", [1]),
        codec.encode_bundle(tt.IMMEDIATELY, [EVERY_TYPE, codec.encode_message("/b", ["x"])]),
    ],
)
HEADER = {
    "host": "studio",
    "clock": "system",
    "started_unix": 1_795_779_000.25,
    "listen": "127.0.0.1:9001",
    "software": "oscsync test",
}


def write_recording(datagrams: list[bytes], spacing: float = 0.01) -> str:
    out = io.StringIO()
    writer = RecordingWriter(out, monotonic_start=100.0)
    writer.write_header(**HEADER)
    for index, data in enumerate(datagrams):
        writer.add(
            data, "127.0.0.1:5000", 1_795_779_000.25 + index * spacing, 100.0 + index * spacing
        )
    writer.close(100.0 + len(datagrams) * spacing, {"kernel-buffer-full": 3})
    return out.getvalue()


def read_all(text: str, **kwargs: object) -> tuple[list[bytes], ReadReport]:
    report = ReadReport()
    datagrams = list(read_recording(io.StringIO(text), report=report, **kwargs))  # type: ignore[arg-type]
    return [d.data for d in datagrams], report


def test_recording_keeps_every_type_and_nested_bundles_byte_exact() -> None:
    text = write_recording([EVERY_TYPE, NESTED])
    data, report = read_all(text)
    assert data == [EVERY_TYPE, NESTED]
    assert report.header["host"] == "studio" and report.header["version"] == 1
    lines = [json.loads(line) for line in text.splitlines()]
    every = lines[1]["osc"][0]
    assert every["address"] == "/every" and every["types"] == "ifdsbhTFNSctImr[ii]"
    nested = lines[2]["osc"]
    assert [m["address"] for m in nested] == ["/a", "/every", "/b"]
    assert nested[0]["timetag"] == "dd9d15a7.00000000"
    assert nested[1]["timetag"] == "00000000.00000001"


def test_recording_has_arrival_times_source_and_closing_loss_counts() -> None:
    text = write_recording([codec.encode_message("/x", [1]), b"junk!"], spacing=0.5)
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[1]["m"] == 0.0 and lines[2]["m"] == 0.5
    assert lines[2]["t"] == 1_795_779_000.75
    assert lines[1]["from"] == "127.0.0.1:5000" and lines[1]["size"] == 12
    assert lines[2]["osc"] is None and lines[2]["error"] == "bad-size"
    assert lines[3] == {
        "end": True,
        "m": 1.0,
        "datagrams": 2,
        "bytes": 17,
        "dropped": {"kernel-buffer-full": 3},
        "dropped_total": 3,
        "malformed": {"bad-size": 1},
    }
    data, report = read_all(text)
    assert data == [codec.encode_message("/x", [1]), b"junk!"]
    assert report.closing is not None and report.closing["dropped_total"] == 3


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(VALID, mutated().filter(bool)), min_size=1, max_size=8))
def test_recording_round_trip_is_byte_identical_for_any_datagram(datagrams: list[bytes]) -> None:
    data, _ = read_all(write_recording(datagrams))
    assert data == datagrams


def test_recording_is_readable_while_being_written(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with path.open("w") as out:
        writer = RecordingWriter(out, monotonic_start=0.0)
        writer.write_header(**HEADER)
        writer.add(b"/a\x00\x00,\x00\x00\x00", "127.0.0.1:1", 1.0, 0.0)
        writer.flush()
        with path.open() as reader:
            report = ReadReport()
            assert [d.data for d in read_recording(reader, report=report)] == [
                b"/a\x00\x00,\x00\x00\x00"
            ]
            assert report.closing is None  # still recording: no closing line yet


def test_recording_truncated_last_line_names_the_line() -> None:
    text = write_recording([codec.encode_message("/x", [1])] * 3)
    cut = text[: text.rindex("\n", 0, len(text) - 1) - 20]  # inside the last datagram line
    with pytest.raises(RecordingError) as caught:
        read_all(cut)
    assert caught.value.line == 4 and caught.value.reason == "truncated"
    assert "line 4" in str(caught.value)


def test_recording_damaged_middle_line_is_an_error_or_a_counted_skip() -> None:
    lines = write_recording([codec.encode_message("/x", [n]) for n in range(4)]).splitlines(True)
    lines[2] = lines[2][:30] + "\x00garbage" + lines[2][30:]
    record = json.loads(lines[3])
    record["raw"] = "***"
    lines[3] = json.dumps(record) + "\n"
    text = "".join(lines)
    with pytest.raises(RecordingError, match=r"^line 3: damaged line"):
        read_all(text)
    data, report = read_all(text, skip_bad=True)
    assert data == [codec.encode_message("/x", [0]), codec.encode_message("/x", [3])]
    assert report.skipped == {"damaged": 2} and report.first_skipped_line == 3


@pytest.mark.parametrize("text", [False, True])
def test_the_largest_datagram_a_recording_holds_is_read_back(text: bool) -> None:
    """Issue 27, item 11: a TCP packet of 1 MB made a 3.3 MB line that the reader refused (its
    limit was 1 MiB). Whatever the writer makes, the reader takes: a packet of the largest size a
    listener accepts, as a blob or as a string of control characters (6 JSON characters a byte
    in the decoded view, which is then left out with its length)."""
    room = MAX_DATAGRAM - 32
    value: str | bytes = "\x01" * room if text else (bytes(range(256)) * (room // 256 + 1))[:room]
    packet = codec.encode_message("/big", [value])
    assert MAX_DATAGRAM - 32 < len(packet) <= MAX_DATAGRAM
    lines = write_recording([packet, codec.encode_message("/next", [1])])
    record = json.loads(lines.splitlines()[1])
    assert record["osc"] is None and record["view_omitted"] > MAX_VIEW
    assert "error" not in record  # a valid packet, only too long to show
    data, report = read_all(lines)
    assert data == [packet, codec.encode_message("/next", [1])] and not report.skipped


def test_a_udp_datagrams_decoded_view_is_always_written() -> None:
    packet = codec.encode_message("/every", ["\x01" * 65_000])  # 6 characters a byte in JSON
    record = json.loads(write_recording([packet]).splitlines()[1])
    assert record["osc"][0]["args"] == ["\x01" * 65_000]


def test_a_line_over_the_limit_is_skipped_whole_with_skip_bad() -> None:
    lines = write_recording([codec.encode_message("/x", [n]) for n in range(3)]).splitlines(True)
    lines[2] = '{"m":0,"raw":"' + "A" * (MAX_LINE + 10) + '"}\n'
    text = "".join(lines)
    with pytest.raises(RecordingError, match=r"^line 3: line longer than") as caught:
        read_all(text)
    assert caught.value.reason == "too-long"
    data, report = read_all(text, skip_bad=True)
    assert data == [codec.encode_message("/x", [0]), codec.encode_message("/x", [2])]
    assert report.skipped == {"too-long": 1} and report.first_skipped_line == 3
    assert report.closing is not None  # the lines after it are read as lines


def test_recording_wrong_version_is_refused() -> None:
    text = write_recording([]).replace('"version":1', '"version":2', 1)
    with pytest.raises(RecordingError, match="version 2 is newer") as caught:
        read_all(text, skip_bad=True)  # a header problem is never skipped
    assert caught.value.line == 1


@pytest.mark.parametrize("text", ["", "hello\n", '{"some":"json"}\n', "[1,2]\n"])
def test_recording_not_a_recording_is_refused(text: str) -> None:
    with pytest.raises(RecordingError) as caught:
        read_all(text)
    assert caught.value.reason in ("empty", "not-a-recording")


def test_recording_raw_field_is_the_base64_of_the_datagram() -> None:
    line = write_recording([NESTED]).splitlines()[1]
    assert base64.b64decode(json.loads(line)["raw"]) == NESTED


@pytest.mark.parametrize(
    "line",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"m":1e400,"raw":"L3gAACwAAAA="}',
        '{"m":' + "9" * 400 + ',"raw":"L3gAACwAAAA="}',
        '{"m":-1,"raw":"L3gAACwAAAA="}',
        '{"m":true,"raw":"L3gAACwAAAA="}',
        '{"m":0,"raw":""}',
        '{"m":0,"raw":12}',
    ],
)
def test_recording_hostile_lines_are_damaged_lines(line: str) -> None:
    text = write_recording([]).splitlines(keepends=True)
    with pytest.raises(RecordingError) as caught:
        read_all(text[0] + line + "\n")
    assert caught.value.line == 2 and caught.value.reason == "damaged"
    with pytest.raises(RecordingError) as caught:
        read_all(line + "\n")  # as a header: not a recording
    assert caught.value.line == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_recording_any_text_is_datagrams_or_a_recording_error(junk: str) -> None:
    header = write_recording([]).splitlines(keepends=True)[0]
    for text in (junk, header + junk):
        with contextlib.suppress(RecordingError):  # anything else fails the test
            read_all(text, skip_bad=True)


class _RefusesTheClosingLine(io.StringIO):
    """A file whose disk fills up exactly when the closing line is written (write raises)."""

    def write(self, text: str) -> int:
        if text.startswith('{"end"'):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


def test_a_closing_line_that_cannot_be_written_is_not_taken_off_the_lost_datagrams() -> None:
    out = _RefusesTheClosingLine()
    writer = RecordingWriter(out, monotonic_start=0.0)
    writer.write_header(**HEADER)
    for monotonic in (0.2, 0.4, 0.45):  # the first two flushed, the third still buffered
        writer.add(b"/a\x00\x00,\x00\x00\x00", "127.0.0.1:5000", 1_795_779_000.0, monotonic)
    with pytest.raises(OSError):
        writer.close(1.0, {})
    assert (writer.lost, writer.stats.datagrams) == (1, 2)
