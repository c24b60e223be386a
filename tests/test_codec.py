"""Decoding and encoding OSC: exact values and timetags, nested bundles, every malformed shape."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oscsync import codec
from oscsync import timetag as tt

# /chat ,s "hello"
CHAT = (
    b"/chat\x00\x00\x00"  # address, padded to 8
    b",s\x00\x00"  # type tags
    b"hello\x00\x00\x00"  # string, padded to 8
)

# #bundle, timetag dd9d15a7.922f48c2, one element: CHAT
BUNDLE = (
    b"#bundle\x00\xdd\x9d\x15\xa7\x92\x2f\x48\xc2" + struct.pack(">i", len(CHAT)) + CHAT  # timetag
)


def test_plain_message() -> None:
    (message,) = codec.decode(CHAT)
    assert message == codec.Message("/chat", ("hello",), "s", None)


def test_bundle_keeps_exact_timetag() -> None:
    (message,) = codec.decode(BUNDLE)
    assert message.timetag == tt.parse("dd9d15a7.922f48c2")
    assert message.address == "/chat"


def test_nested_bundles_use_innermost_timetag_in_order() -> None:
    inner = codec.encode_bundle(2000 << 32, [codec.encode_message("/b", [2])])
    outer = codec.encode_bundle(
        1000 << 32,
        [codec.encode_message("/a", [1]), inner, codec.encode_message("/c", [3])],
    )
    messages = codec.decode(outer)
    assert [(m.address, m.args, m.timetag) for m in messages] == [
        ("/a", (1,), 1000 << 32),
        ("/b", (2,), 2000 << 32),
        ("/c", (3,), 1000 << 32),
    ]


def test_message_without_type_tags_has_no_args() -> None:
    assert codec.decode(b"/go\x00") == [codec.Message("/go", (), "", None)]


def test_every_native_type_round_trips_exactly() -> None:
    args = [7, -(2**40), 0.5, 1.0 / 3.0, "naïve ✓", b"\x00\xff", True, False, None, (1, 2, 3, 4)]
    types = "ihfdsbTFNm"
    (message,) = codec.decode(codec.encode_message("/all", args, types))
    assert message.types == types
    assert message.args[0:2] == (7, -(2**40))
    assert message.args[2] == 0.5
    assert message.args[3] == 1.0 / 3.0
    assert message.args[4:9] == ("naïve ✓", b"\x00\xff", True, False, None)
    assert tuple(message.args[9]) == (1, 2, 3, 4)


def test_float32_value_is_the_single_precision_one() -> None:
    (message,) = codec.decode(codec.encode_message("/f", [0.1], "f"))
    assert message.args[0] == struct.unpack(">f", struct.pack(">f", 0.1))[0]


def test_liblo_alias_types_are_decoded() -> None:
    # /x ,Sct I : symbol, char, timetag, infinitum (types liblo sends, python-osc does not know)
    data = (
        b"/x\x00\x00"  # address
        b",SctI\x00\x00\x00"  # type tags
        b"sym\x00"  # symbol
        + struct.pack(">i", ord("A"))  # char
        + b"\xdd\x9d\x15\xa7\x92\x2f\x48\xc2"
    )
    (message,) = codec.decode(data)
    assert message.types == "SctI"
    assert message.args == ("sym", "A", 0xDD9D15A7922F48C2, float("inf"))


MALFORMED = {
    "empty": b"",
    "bad-size": b"/abc\x00",
    "not-osc": b"hello world!",
    "truncated": b"/chat\x00\x00\x00,i\x00\x00",
    "bad-type-tag": b"/x\x00\x00,q\x00\x00",
    "bad-bundle": b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 400) + CHAT,
    "bad-address": b"x\x00\x00\x00",
}


@pytest.mark.parametrize(("reason", "data"), sorted(MALFORMED.items()))
def test_malformed_datagrams_raise_decode_error_with_reason(reason: str, data: bytes) -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(data)
    expected = "not-osc" if reason == "bad-address" else reason
    assert info.value.reason == expected


def test_type_tags_without_comma() -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(b"/x\x00\x00is\x00\x00")
    assert info.value.reason == "bad-type-tag"


def test_negative_and_misaligned_element_sizes() -> None:
    header = b"#bundle\x00" + b"\x00" * 8
    for size in (-4, 0, 3):
        with pytest.raises(codec.DecodeError) as info:
            codec.decode(header + struct.pack(">i", size) + CHAT)
        assert info.value.reason == "bad-bundle"


def test_truncated_bundle_header() -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(b"#bundle\x00\x00\x00\x00\x00")
    assert info.value.reason == "truncated"


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    packet = codec.encode_message("/deep", [1])
    for _ in range(3000):
        packet = codec.encode_bundle(tt.IMMEDIATELY, [packet])
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(packet)
    assert info.value.reason == "too-deep"


def test_nesting_at_the_limit_is_accepted() -> None:
    packet = codec.encode_message("/deep", [1])
    for level in range(codec.MAX_BUNDLE_DEPTH):
        packet = codec.encode_bundle(level + 2, [packet])
    (message,) = codec.decode(packet)
    assert message.timetag == 2  # the innermost bundle's


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(codec.DecodeError):
        codec.decode(data)


@pytest.mark.parametrize("address", ["chat", "/with space", "/a#b", ""])
def test_encode_rejects_bad_addresses(address: str) -> None:
    with pytest.raises(codec.EncodeError):
        codec.encode_message(address, [])


def test_encode_checks_types_against_values() -> None:
    with pytest.raises(codec.EncodeError):
        codec.encode_message("/x", [1, 2], "i")
    with pytest.raises(codec.EncodeError):
        codec.encode_message("/x", [1], "q")
    with pytest.raises(codec.EncodeError):
        codec.encode_message("/x", ["text"], "i")


def test_inferred_types() -> None:
    data = codec.encode_message("/x", [1, 2**40, 1.5, "s", b"b", True, False, None])
    (message,) = codec.decode(data)
    assert message.types == "ihfsbTFN"
