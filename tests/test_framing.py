"""SLIP and size-prefix framing: round trips, streams cut anywhere, junk, and limits (issue #16)."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from oscsync.net import framing
from oscsync.net.framing import (
    FramingError,
    SizePrefixDecoder,
    SlipDecoder,
    StreamDecoder,
    size_encode,
    slip_encode,
)

END, ESC = b"\xc0", b"\xdb"
Decoder = SlipDecoder | SizePrefixDecoder | StreamDecoder

# Packets made mostly of the bytes SLIP has to escape, so every escape path is exercised.
special_bytes = st.binary(min_size=1, max_size=64) | st.lists(
    st.sampled_from([0xC0, 0xDB, 0xDC, 0xDD, 0x00, 0x2F]), min_size=1, max_size=64
).map(bytes)
packets = st.lists(special_bytes, min_size=1, max_size=12)


def feed_in_pieces(decoder: Decoder, stream: bytes, cuts: list[int]) -> list[framing.Decoded]:
    out: list[framing.Decoded] = []
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(points):
        out.extend(decoder.feed(stream[a:b]))
    return out


def test_slip_frame_is_double_end_with_both_escapes() -> None:
    assert slip_encode(b"a\xc0b\xdbc") == b"\xc0a\xdb\xdcb\xdb\xddc\xc0"


def test_size_frame_is_big_endian_int32_then_packet() -> None:
    assert size_encode(b"/x\x00\x00,\x00\x00\x00") == b"\x00\x00\x00\x08/x\x00\x00,\x00\x00\x00"


@given(packets, st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_slip_round_trip_of_any_bytes_cut_anywhere(sent: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(slip_encode(p) for p in sent)
    assert feed_in_pieces(SlipDecoder(), stream, cuts) == sent


@given(packets, st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_size_round_trip_of_any_bytes_cut_anywhere(sent: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(size_encode(p) for p in sent)
    assert feed_in_pieces(SizePrefixDecoder(), stream, cuts) == sent


@settings(max_examples=300)
@given(
    st.lists(st.tuples(special_bytes, st.binary(max_size=40)), min_size=1, max_size=10),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_slip_junk_between_frames_never_costs_a_frame_nor_invents_one(
    frames_and_junk: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    # Junk (any bytes, END and ESC included) written between frames: every sent frame still comes
    # out, in order, and anything else that comes out is a piece of the junk, never a new packet.
    stream = b"".join(junk + slip_encode(frame) for frame, junk in frames_and_junk)
    out = feed_in_pieces(SlipDecoder(), stream, cuts)
    frames = [item for item in out if isinstance(item, bytes)]
    sent = [frame for frame, _ in frames_and_junk]
    remaining = iter(frames)
    assert all(any(got == want for got in remaining) for want in sent), (sent, frames)
    junk_pieces = {
        piece
        for _, junk in frames_and_junk
        for piece in junk.split(END)
        if piece and ESC not in piece
    }
    for got in frames:
        assert got in sent or got in junk_pieces or _unescapes_from_junk(got, frames_and_junk)
    assert all(
        isinstance(item, FramingError) and not item.fatal for item in out if item not in frames
    )


def _unescapes_from_junk(got: bytes, frames_and_junk: list[tuple[bytes, bytes]]) -> bool:
    for _, junk in frames_and_junk:
        for piece in junk.split(END):
            try:
                if piece and SlipDecoder().feed(END + piece + END) == [got]:
                    return True
            except FramingError:
                pass
    return False


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=4000), max_size=30))
def test_stream_decoder_never_raises_on_random_bytes(noise: bytes, cuts: list[int]) -> None:
    decoder = StreamDecoder(max_frame=256)
    out = feed_in_pieces(decoder, noise, cuts)
    assert all(isinstance(item, (bytes, FramingError)) for item in out)
    assert decoder.buffered <= 256


def test_slip_bad_escape_is_counted_and_the_next_frame_still_arrives() -> None:
    out = SlipDecoder().feed(END + b"ab\xdbX" + END + slip_encode(b"/ok"))
    assert isinstance(out[0], FramingError) and out[0].reason == "bad-slip-escape"
    assert out[1:] == [b"/ok"]


def test_slip_unterminated_frame_longer_than_the_limit_is_dropped_as_it_grows() -> None:
    decoder = SlipDecoder(max_frame=100)
    out = decoder.feed(END + b"x" * 60)
    assert out == [] and decoder.buffered == 60
    out = decoder.feed(b"x" * 60)
    assert [e.reason for e in out if isinstance(e, FramingError)] == ["frame-too-large"]
    assert decoder.buffered == 0
    # The rest of the oversized frame is skipped without being kept, then decoding resumes.
    assert decoder.feed(b"x" * 10_000) == [] and decoder.buffered == 0
    assert decoder.feed(END + slip_encode(b"/after")) == [b"/after"]


def test_size_prefix_past_the_limit_is_fatal() -> None:
    decoder = SizePrefixDecoder(max_frame=1024)
    out = decoder.feed(struct.pack(">i", 1025) + b"x" * 10)
    assert len(out) == 1 and isinstance(out[0], FramingError)
    assert out[0].reason == "bad-size" and out[0].fatal
    assert decoder.buffered == 0
    assert decoder.feed(size_encode(b"/late")) == []  # nothing after a broken stream


def test_size_prefix_negative_is_fatal() -> None:
    out = SizePrefixDecoder().feed(struct.pack(">i", -4))
    assert isinstance(out[0], FramingError) and out[0].fatal


def test_size_prefix_zero_is_an_empty_frame_counted_and_skipped() -> None:
    out = SizePrefixDecoder().feed(struct.pack(">i", 0) + size_encode(b"/x"))
    assert isinstance(out[0], FramingError) and out[0].reason == "empty-frame"
    assert out[1:] == [b"/x"]


def test_stream_decoder_detects_slip_from_a_leading_end_byte() -> None:
    decoder = StreamDecoder()
    assert decoder.framing is None
    assert decoder.feed(slip_encode(b"/a")) == [b"/a"]
    assert decoder.framing == "slip"


def test_stream_decoder_takes_anything_else_as_a_size_prefix() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(size_encode(b"/a")[:2]) == []
    assert decoder.framing == "size"
    assert decoder.feed(size_encode(b"/a")[2:]) == [b"/a"]


def test_a_one_megabyte_frame_crosses_both_framings_intact() -> None:
    blob = bytes(range(256)) * 4096
    for encode, decoder in ((slip_encode, StreamDecoder()), (size_encode, StreamDecoder())):
        stream = encode(blob)
        out: list[framing.Decoded] = []
        for at in range(0, len(stream), 65536):
            out.extend(decoder.feed(stream[at : at + 65536]))
        assert out == [blob]


def test_stream_decoder_takes_a_stream_starting_with_a_packet_as_slip() -> None:
    # Senders that write END only after each packet (RFC 1055's original form) start with the
    # packet itself; liblo's detect_slip accepts them too.
    for packet in (b"/chat\x00\x00\x00,\x00\x00\x00", b"#bundle\x00" + bytes(8)):
        decoder = StreamDecoder()
        assert decoder.feed(packet + END + packet + END) == [packet, packet]
        assert decoder.framing == "slip"
