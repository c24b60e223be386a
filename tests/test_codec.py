"""Decoding and encoding OSC: exact values and timetags, nested bundles, every malformed shape."""

from __future__ import annotations

import contextlib
import re
import struct
import sys
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import osc_reference
from osc_strategies import ADDRESS, ARG, PATTERN, VALID, mutated
from oscsync.osc import codec
from oscsync.osc import timetag as tt

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


def test_a_deeply_nested_frame_is_decoded_without_a_copy_per_level() -> None:
    """Issue 27, item 7: each nesting level copied the bundle it held, so a 15 MiB TCP frame
    nested 63 deep peaked at 1 GB. Bundles are walked by offsets now: decoding copies the
    message's bytes once (and its blob once more), whatever the depth."""
    packet = codec.encode_message("/deep", [bytes(1 << 20)])
    for level in range(codec.MAX_BUNDLE_DEPTH - 1):
        packet = codec.encode_bundle(level + 2, [packet])
    tracemalloc.start()
    try:
        (message,) = codec.decode(packet)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.timetag == 2 and len(message.args[0]) == 1 << 20  # the innermost bundle
    assert peak <= 3 * len(packet)


def _outcomes(decode: Callable[[], list[codec.Message]]) -> object:
    try:
        # repr: a NaN inside an array compares unequal to itself, the same NaN as text does not
        return repr(decode())
    except codec.DecodeError as exc:
        return ("error", exc.reason)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(mutated(), VALID, st.binary(max_size=200).map(lambda raw: b"#bundle\x00" + raw)))
def test_bundles_are_walked_exactly_as_the_copying_walk_did(data: bytes) -> None:
    assert _outcomes(lambda: codec.decode(data)) == _outcomes(lambda: osc_reference.decode(data))


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


# -- issue 20: blob-size bomb and array depth ---------------------------------------------------


def _message_with(types: str, payload: bytes) -> bytes:
    tags = ("," + types).encode() + b"\x00"
    return b"/x\x00\x00" + tags + b"\x00" * (-len(tags) % 4) + payload


def _blob_bomb(pairs: int, size: int) -> bytes:
    """Blobs of ``size`` then ``-(size + 8)``: python-osc re-reads the same bytes each pair."""
    pair = struct.pack(">i", size) + b"A" * size + struct.pack(">i", -(size + 8))
    return _message_with("b" * (2 * pairs), pair)


def test_blob_bomb_negative_size_is_malformed() -> None:
    data = _blob_bomb(2000, 50_000)  # 54 KB on the wire; python-osc alone decodes 100 MB
    assert len(data) < 65_000
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(data)
    assert info.value.reason == "bad-blob"
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(_message_with("b", struct.pack(">i", -4)))
    assert info.value.reason == "bad-blob"


def test_blob_bomb_size_past_the_end_is_malformed() -> None:
    for size in (5, 8, 2**31 - 1):
        with pytest.raises(codec.DecodeError) as info:
            codec.decode(_message_with("b", struct.pack(">i", size) + b"abcd"))
        assert info.value.reason == "bad-blob"
    # A blob that fits, with its padding, still decodes; so does an empty one.
    (message,) = codec.decode(
        _message_with("bb", struct.pack(">ii", 3, 0)[:4] + b"abc\x00" + b"\x00" * 4)
    )
    assert message.args == (b"abc", b"")


def _wire_size(value: object) -> int:
    if isinstance(value, bytes):
        return 4 + len(value) + (-len(value) % 4)
    if isinstance(value, str):
        return len(value.encode()) // 4 * 4 + 4
    return 0 if value is None or isinstance(value, bool) else 4


# Payloads of int32 sizes (negative ones too), bytes, and the bomb's own pair (size S, S bytes,
# size -(S+8)): the shapes a blob bomb is built from.
BLOB_PAYLOAD = st.lists(
    st.one_of(
        st.integers(min_value=-64, max_value=64).map(lambda n: struct.pack(">i", n)),
        st.binary(min_size=4, max_size=16),
        st.integers(min_value=0, max_value=4).map(
            lambda n: struct.pack(">i", 4 * n) + b"A" * 4 * n + struct.pack(">i", -(4 * n + 8))
        ),
    ),
    max_size=12,
).map(b"".join)


BLOB_TYPES = st.one_of(
    st.text(alphabet="bbbisT", min_size=1, max_size=20),
    st.integers(min_value=1, max_value=12).map(lambda n: "b" * n),
)


@settings(max_examples=300)
@given(BLOB_PAYLOAD, BLOB_TYPES)
def test_blob_bomb_decoded_size_is_bounded_by_the_datagram(payload: bytes, types: str) -> None:
    data = _message_with(types, payload)
    data += b"\x00" * (-len(data) % 4)
    with contextlib.suppress(codec.DecodeError):
        (message,) = codec.decode(data)
        # Every argument has its own bytes: the read position never moves backwards.
        assert sum(_wire_size(value) for value in message.args) <= len(payload) + 3
        assert len(message.args) <= len(data)


def test_blob_bomb_footprint_counts_strings_blobs_and_arguments() -> None:
    small = codec.decode_message(codec.encode_message("/x", [1]))
    big = codec.decode_message(codec.encode_message("/x", [b"a" * 10_000, "s" * 5_000]))
    assert codec.footprint(big) >= 15_000 > codec.footprint(small)


def test_array_depth_is_bounded_like_bundle_depth() -> None:
    limit = codec.MAX_ARRAY_DEPTH
    ok = codec.decode(_message_with("[" * limit + "i" + "]" * limit, struct.pack(">i", 7)))
    nested = ok[0].args[0]
    for _ in range(limit - 1):
        nested = nested[0]
    assert nested == [7]
    for depth in (limit + 1, 3000):
        with pytest.raises(codec.DecodeError) as info:
            codec.decode(_message_with("[" * depth + "]" * depth, b""))
        assert info.value.reason == "too-deep"
    for unbalanced in ("[[]", "]", "[]]["):
        with pytest.raises(codec.DecodeError) as info:
            codec.decode(_message_with(unbalanced, b""))
        assert info.value.reason == "bad-type-tag"


def test_invalid_utf8_is_its_own_drop_reason() -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(_message_with("s", b"\xff\xfe\x00\x00"))
    assert info.value.reason == "invalid-utf8"
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(b"/\xc3\x28\x00")
    assert info.value.reason == "invalid-utf8"


# -- the fast path against python-osc (issue 18: decoding lever) ---------------------------------

FAST_TAGS = "ifsbTFNhdt"
ALL_TAGS = FAST_TAGS + "rmcSI[]"
_PADDED_STRING = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
).map(lambda text: _pad(text.encode() + b"\x00"))


def _pad(raw: bytes) -> bytes:
    return raw + b"\x00" * (-len(raw) % 4)


def _wire_arg(tag: str) -> st.SearchStrategy[bytes]:
    """Well-formed wire bytes for one argument of type ``tag`` (any bit pattern for numbers)."""
    if tag in "ifrmc":
        return st.binary(min_size=4, max_size=4)
    if tag in "hdt":
        return st.binary(min_size=8, max_size=8)
    if tag in "sS":
        return _PADDED_STRING
    if tag == "b":
        honest = st.binary(max_size=12).map(lambda blob: struct.pack(">i", len(blob)) + _pad(blob))
        # A size that lies (negative, or past the bytes that follow): the blob-bomb shapes.
        lying = st.tuples(st.integers(min_value=-20, max_value=20), st.binary(max_size=12)).map(
            lambda pair: struct.pack(">i", pair[0]) + _pad(pair[1])
        )
        return st.one_of(honest, lying)
    return st.just(b"")


def _damaged(draw: st.DrawFn, types: str) -> bytes:
    """A message with these type tags and well-formed arguments, then perhaps damaged: cut
    short, a byte changed, or bytes appended."""
    address = _pad(b"/" + draw(st.binary(max_size=6)).replace(b"\x00", b"a") + b"\x00")
    parts = [address, _pad(b"," + types.encode() + b"\x00")]
    for run in re.findall(r"[ifrmchdt]{2,}|.", types):
        if len(run) > 1:  # fixed-size arguments: any bit pattern, drawn at once
            size = sum(8 if tag in "hdt" else 4 for tag in run)
            parts.append(draw(st.binary(min_size=size, max_size=size)))
        else:
            parts.append(draw(_wire_arg(run)))
    data = bytearray(b"".join(parts))
    damage = draw(st.sampled_from(["none", "cut", "flip", "append"]))
    if damage == "cut" and data:
        del data[draw(st.integers(min_value=0, max_value=len(data) - 1)) :]
    elif damage == "flip" and data:
        data[draw(st.integers(min_value=0, max_value=len(data) - 1))] = draw(
            st.integers(min_value=0, max_value=255)
        )
    elif damage == "append":
        data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@st.composite
def fast_path_messages(draw: st.DrawFn) -> bytes:
    """A message with common type tags, perhaps damaged, or the tags mixed with others (the fast
    path must hand all of those on)."""
    types = draw(st.text(alphabet=FAST_TAGS, max_size=8))
    if draw(st.booleans()):
        types = draw(st.text(alphabet=FAST_TAGS + "rmcSI[]x,", max_size=8))
    return _damaged(draw, types)


@st.composite
def any_tag_messages(draw: st.DrawFn) -> bytes:
    """A message with any known type tags, arrays included, long runs among them (the general
    path reads runs of fixed-size tags and of constants at once), perhaps damaged."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from(list(ALL_TAGS)),
                st.tuples(st.sampled_from(list("ifhdrTFN")), st.integers(1, 140)).map(
                    lambda pair: pair[0] * pair[1]
                ),
                st.text(alphabet="ifhdr", min_size=60, max_size=140),
            ),
            max_size=8,
        )
    )
    return _damaged(draw, "".join(pieces))


def _outcome(decode: Callable[[], codec.Message]) -> object:
    try:
        message = decode()
    except codec.DecodeError as exc:
        return ("error", exc.reason)
    return (
        [_by_bits(value) for value in message.args],
        message.address,
        message.types,
        message.timetag,
    )


def _by_bits(value: object) -> object:
    """Floats by their bits, inside arrays too: NaN != NaN, and 0.0 == -0.0 must not hide a
    difference (a NaN in an array made two equal decodings compare unequal)."""
    if isinstance(value, float):
        return struct.pack(">d", value)
    if isinstance(value, list):
        return (list, [_by_bits(item) for item in value])
    return (type(value), value)


@settings(max_examples=3000, deadline=None)
@given(fast_path_messages(), st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)))
def test_fast_path_decodes_exactly_like_python_osc(data: bytes, stamp: int | None) -> None:
    fast = _outcome(lambda: codec.decode_message(data, stamp))
    reference = _outcome(lambda: osc_reference.decode_message(data, stamp))
    assert fast == reference


@settings(max_examples=600, deadline=None)
@given(any_tag_messages())
# A NaN inside an array (a draw found it once: the comparison was wrong, not the codec).
@example(b"/\x00\x00\x00,i[if]\x00\x00" + bytes(8) + b"\x7f\x81\x00\x00")
def test_general_path_decodes_exactly_like_python_osc(data: bytes) -> None:
    general = _outcome(lambda: codec._decode_message_general(data, None))
    assert general == _outcome(lambda: osc_reference.decode_message(data, None))
    assert _outcome(lambda: codec.decode_message(data)) == general


class _CountingBytes(bytes):
    """Bytes that count what their slices copy."""

    copied = 0

    def __getitem__(self, index: Any) -> Any:
        part = super().__getitem__(index)
        if isinstance(index, slice):
            _CountingBytes.copied += len(part)
        return part


@pytest.mark.parametrize("types", ["r" + "i" * 20_000, "s" * 20_000, "m" * 20_000])
def test_a_message_is_decoded_in_one_pass_over_its_bytes(types: str) -> None:
    """Issue 27, item 6: python-osc's readers copied the rest of the datagram for every argument,
    so one 16 MiB TCP frame of ``,r`` and small ints took minutes. Each argument now costs its
    own bytes: what the decoder copies is at most the message again."""
    width = {"r": 4, "i": 4, "s": 4, "m": 4}
    data = _pad(b"/a\x00") + _pad(f",{types}".encode() + b"\x00")
    data += b"\x00" * sum(width[tag] for tag in types)
    _CountingBytes.copied = 0
    message = codec.decode_message(_CountingBytes(data))
    assert len(message.args) == len(types)
    assert _CountingBytes.copied <= 2 * len(data)


def test_new_long_type_tag_strings_leave_no_memory_behind() -> None:
    """Issue 27, item 6: each message ``/a ,TTT...`` with a new 65 KB tag string left a ~5 MB
    plan in a cache capped at 256 entries (1.2 GB after 16.6 MB of UDP)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(40):
            tags = bytearray(b"T" * 65_000)
            tags[n] = ord("F")
            data = _pad(b"/a\x00") + _pad(b"," + bytes(tags) + b"\x00")
            assert len(codec.decode_message(data).args) == 65_000
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept <= codec._PLAN_CACHE_BYTES + codec._HEAD_CACHE_BYTES


def test_a_long_type_tag_string_costs_its_arguments_not_a_plan() -> None:
    """The longest tag string decodes into its arguments (8 bytes each in a tuple) and nothing
    much besides: a compiled plan took ~90 bytes per tag before issue 27."""
    count = codec.MAX_ARGUMENTS
    data = _pad(b"/a\x00") + _pad(b"," + b"TF" * (count // 2) + b"\x00")
    tracemalloc.start()
    try:
        message = codec.decode_message(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.args[:3] == (True, False, True) and len(message.args) == count
    assert peak <= 24 * count


def test_more_type_tags_than_a_datagram_can_carry_are_refused() -> None:
    """Issue 27, item 6: a 16 MiB TCP frame of ``,TTTT...`` decoded into 16 million arguments
    (436 MB). One type tag more than :data:`codec.MAX_ARGUMENTS` (more than fits a UDP datagram)
    is dropped with its own reason, before anything is decoded."""
    tags = b"," + b"T" * (codec.MAX_ARGUMENTS + 1) + b"\x00"
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(_pad(b"/a\x00") + _pad(tags))
    assert info.value.reason == "too-many-args"


def test_fast_path_plan_cache_is_bounded_in_bytes() -> None:
    for n in range(3000):
        types = format(n, "b").replace("0", "i").replace("1", "f")
        codec.decode_message(codec.encode_message("/x", [0] * len(types), types))
    assert codec._plans_size == sum(map(codec._plan_cost, codec._PLANS))
    assert codec._plans_size <= codec._PLAN_CACHE_BYTES


def test_fast_path_reads_timetag_args_unsigned_like_the_reference() -> None:
    data = _pad(b"/t\x00") + _pad(b",tT\x00") + b"\xff" * 8
    assert codec.decode_message(data).args == (2**64 - 1, True)
    assert osc_reference.decode_message(data, None).args == (2**64 - 1, True)


@settings(max_examples=500, deadline=None)
@given(fast_path_messages())
def test_fast_path_head_cache_decodes_exactly_like_python_osc(data: bytes) -> None:
    """Once a head (address and type tags) is remembered, the same head with its arguments
    cut short anywhere, or followed by more bytes, still decodes like the reference (#18)."""
    with contextlib.suppress(codec.DecodeError):
        codec.decode_message(data)  # remembers the head if it decodes on the fast path
    for variant in [data + b"\x00\x00\x00\x00"] + [data[:cut] for cut in range(len(data), -1, -1)]:
        fast = _outcome(lambda: codec.decode_message(variant))  # noqa: B023
        assert fast == _outcome(lambda: osc_reference.decode_message(variant, None))  # noqa: B023


def test_fast_path_head_cache_is_bounded_in_bytes() -> None:
    for n in range(2000):
        codec.decode_message(codec.encode_message(f"/head/{n:0100d}", [n], "i"))
    assert codec._heads_size == sum(map(codec._head_cost, codec._HEADS)) <= codec._HEAD_CACHE_BYTES
    codec.decode_message(codec.encode_message("/" + "x" * codec._HEAD_LIMIT, [1], "i"))
    assert all(len(head) <= codec._HEAD_LIMIT for head in codec._HEADS)


# -- issue 28: every OSC type, both ways ---------------------------------------------------------

STAMP = 0xDD9D15A7922F48C2


def test_aliased_types_inside_arrays_decode_as_outside_them() -> None:
    # ,c[ctI[c]]tI built by hand: chars, timetags and infinitum in arrays, nested, and outside.
    payload = struct.pack(">iiQiQ", ord("A"), ord("B"), STAMP, ord("C"), STAMP)
    (message,) = codec.decode(_message_with("c[ctI[c]]tI", payload))
    assert message.args == ("A", ["B", STAMP, float("inf"), ["C"]], STAMP, float("inf"))
    assert message.types == "c[ctI[c]]tI"


@pytest.mark.parametrize("code", [0x110000, 0x110041, 0x7FFFFFFF, -1, -(2**31)])
def test_char_beyond_unicode_is_dropped_as_what_it_is(code: int) -> None:
    for types in ("c", "[c]"):
        with pytest.raises(codec.DecodeError) as info:
            codec.decode(_message_with(types, struct.pack(">i", code)))
        assert info.value.reason == "bad-char"
        assert f"{code & 0xFFFFFFFF:#010x}" in info.value.detail


def test_chars_up_to_the_last_code_point_decode() -> None:
    for code in (0, 0x41, 0xD800, 0xFFFF, 0x1F600, 0x10FFFF):
        (message,) = codec.decode(_message_with("c", struct.pack(">i", code)))
        assert message.args == (chr(code),)


def test_encoder_writes_every_type_byte_for_byte() -> None:
    data = codec.encode_message(
        "/{a,b}/x",
        ["sym", "é", STAMP, 0xFF0000FF, (0, 0x90, 60, 100), b"", None, [7, float("inf")], "z"],
        "Sctrmb N[iI]s".replace(" ", ""),
    )
    assert data == (
        b"/{a,b}/x\x00\x00\x00\x00"  # a pattern with ',' (OSC 1.0 allows it)
        b",SctrmbN[iI]s\x00\x00\x00"
        b"sym\x00"
        + struct.pack(">i", 0xE9)  # 'c': the code point as an int32
        + struct.pack(">Q", STAMP)
        + b"\xff\x00\x00\xff"
        + b"\x00\x90\x3c\x64"
        + b"\x00\x00\x00\x00"  # an empty blob: its size, no bytes
        + struct.pack(">i", 7)
        + b"z\x00\x00\x00"
    )


def test_infer_types_spells_out_arrays() -> None:
    assert codec.infer_types([1, [2.0, "s", [True, b""]], []]) == "i[fs[Tb]][]"
    (message,) = codec.decode(codec.encode_message("/x", [1, (2.0, ["s"])]))
    assert message.types == "i[f[s]]" and message.args == (1, [2.0, ["s"]])


@pytest.mark.parametrize(
    ("types", "args", "needle"),
    [
        ("[i]", [1], "'[' needs a list"),
        ("[ii]", [[1]], "too few values"),
        ("[i]", [[1, 2]], "more values"),
        ("[i", [[1]], "without its ']'"),
        ("i]", [1], "closes no array"),
        ("c", ["ab"], "one character"),
        ("t", [-1], "64-bit NTP timetag"),
        ("r", [2**32], "RGBA"),
        ("m", [(1, 2, 3)], "4 bytes"),
        ("f", [1e300], "too large for a float32"),
        ("s", ["a\x00b"], "without NUL"),
        ("i", [True], "needs an integer"),
        ("[" * 65 + "]" * 65, [[]], "nested deeper"),
    ],
)
def test_encode_refuses_what_the_types_cannot_hold(
    types: str, args: list[object], needle: str
) -> None:
    with pytest.raises(codec.EncodeError) as info:
        codec.encode_message("/x", args, types)
    assert needle in str(info.value)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(ADDRESS, PATTERN), st.lists(ARG, max_size=6))
def test_every_type_round_trips_through_encode_and_decode(
    address: str, args: list[tuple[object, str]]
) -> None:
    values = [value for value, _ in args]
    types = "".join(tag for _, tag in args)
    (message,) = codec.decode(codec.encode_message(address, values, types))
    assert message == codec.Message(address, tuple(values), types, None)
    # And back again: a decoded message is what encode_message takes.
    assert codec.encode_message(*message[:2], message.types) == codec.encode_message(
        address, values, types
    )


PYTHON_OSC_SCALAR = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(lambda v: (v, "i")),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda v: (v, "h")),
    st.floats(width=32, allow_nan=False).map(lambda v: (v, "f")),
    st.floats(allow_nan=False).map(lambda v: (v, "d")),
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        max_size=20,
    ).map(lambda v: (v, "s")),
    st.binary(min_size=1, max_size=20).map(lambda v: (v, "b")),  # python-osc refuses b""
    st.binary(min_size=4, max_size=4).map(lambda v: (tuple(v), "m")),
    st.sampled_from([(True, "T"), (False, "F"), (None, "N")]),
)


@settings(max_examples=500, deadline=None)
@given(ADDRESS, st.lists(PYTHON_OSC_SCALAR, max_size=6))
def test_encoder_writes_what_python_osc_writes_for_the_types_it_has(
    address: str, args: list[tuple[object, str]]
) -> None:
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(address)
    for value, tag in args:
        builder.add_arg(value, tag)
    values = [value for value, _ in args]
    types = "".join(tag for _, tag in args)
    assert codec.encode_message(address, values, types) == builder.build().dgram


def test_both_caches_count_their_bytes_exactly_when_several_threads_decode() -> None:
    """Each receive thread (UDP, the TCP listener, each TCP sender) decodes on its own: two
    that miss one head at once must not both count it, nor one thread's ``+=`` lose what
    another counted, or the byte bound drifts from what the caches hold."""
    heads = [codec.encode_message(f"/race/{n:040d}", [n], "i") for n in range(400)]
    tags = [
        codec.encode_message(
            "/r", [0] * n.bit_length(), format(n, "b").replace("0", "i").replace("1", "f")
        )
        for n in range(1, 400)
    ]
    start = threading.Barrier(4)

    def decode_all(offset: int) -> None:
        start.wait()
        for _ in range(3):
            for data in heads[offset:] + heads[:offset] + tags[offset:] + tags[:offset]:
                codec.decode_message(data)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        codec._HEADS.clear()
        codec._PLANS.clear()
        codec._heads_size = codec._plans_size = 0
        workers = [threading.Thread(target=decode_all, args=(k * 7,)) for k in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert codec._heads_size == sum(map(codec._head_cost, codec._HEADS))
    assert codec._plans_size == sum(map(codec._plan_cost, codec._PLANS))
