"""Hypothesis strategies for valid OSC packets and for the ways real packets go wrong."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from oscsync.osc import codec
from oscsync.osc import timetag as tt

ADDRESS = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8),
    min_size=1,
    max_size=4,
).map(lambda parts: "/" + "/".join(parts))

PATTERN = st.lists(
    st.text(alphabet="abc09_-*?,{}[]!", min_size=1, max_size=8), min_size=1, max_size=3
).map(lambda parts: "/" + "/".join(parts))
"""Address patterns: OSC 1.0 lets an address hold ``* ? [ ] { } , !`` (``/{a,b}``)."""

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=40,
)

SCALAR = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(lambda v: (v, "i")),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda v: (v, "h")),
    st.floats(width=32, allow_nan=False).map(lambda v: (v, "f")),
    st.floats(allow_nan=False).map(lambda v: (v, "d")),
    TEXT.map(lambda v: (v, "s")),
    TEXT.map(lambda v: (v, "S")),
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF).map(lambda v: (v, "c")),
    st.integers(min_value=0, max_value=tt.MAX_TIMETAG).map(lambda v: (v, "t")),
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda v: (v, "r")),
    st.binary(min_size=4, max_size=4).map(lambda v: (tuple(v), "m")),
    st.binary(max_size=40).map(lambda v: (v, "b")),  # empty blobs too (valid OSC)
    st.sampled_from([(True, "T"), (False, "F"), (None, "N"), (float("inf"), "I")]),
)
"""One argument of every type :func:`~oscsync.osc.codec.encode_message` writes, as (the value
:func:`~oscsync.osc.codec.decode` gives back, its tag)."""


def _array(items: list[tuple[Any, str]]) -> tuple[Any, str]:
    return [value for value, _ in items], "[" + "".join(tag for _, tag in items) + "]"


ARG = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4).map(_array), max_leaves=8)
"""A scalar or an array (nested, empty or not) of them."""


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    args = draw(st.lists(ARG, max_size=6))
    values = [value for value, _ in args]
    types = "".join(tag for _, tag in args)
    address = draw(st.one_of(ADDRESS, PATTERN))
    return codec.encode_message(address, values, types)


def bundles(depth: int = 3) -> st.SearchStrategy[bytes]:
    stamp = st.one_of(st.just(tt.IMMEDIATELY), st.integers(min_value=2, max_value=tt.MAX_TIMETAG))

    def extend(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        return st.builds(
            lambda t, parts: codec.encode_bundle(t, parts), stamp, st.lists(children, max_size=4)
        )

    return st.recursive(messages(), extend, max_leaves=12)


VALID = st.one_of(messages(), bundles())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid packet broken in one of the ways the hardening issue lists."""
    packet = draw(VALID)
    kind = draw(
        st.sampled_from(
            ["truncate", "flip", "pad", "typetag", "size", "random", "huge", "deep", "empty"]
        )
    )
    if kind == "truncate":
        return packet[: draw(st.integers(min_value=0, max_value=max(len(packet) - 1, 0)))]
    if kind == "flip":
        at = draw(st.integers(min_value=0, max_value=len(packet) - 1))
        return packet[:at] + bytes([packet[at] ^ draw(st.integers(1, 255))]) + packet[at + 1 :]
    if kind == "pad":
        at = draw(st.integers(min_value=0, max_value=len(packet)))
        return packet[:at] + b"\x00" * draw(st.integers(1, 3)) + packet[at:]
    if kind == "typetag":
        comma = packet.find(b",")
        if comma < 0:
            return packet + b"x"
        return (
            packet[: comma + 1]
            + draw(st.sampled_from([b"q", b"[", b"]", b"\x01", b"Z"]))
            + packet[comma + 2 :]
        )
    if kind == "size":
        bogus = draw(st.sampled_from([-1, -4, 2**31 - 1, len(packet) * 4, 3]))
        header = codec.BUNDLE_PREFIX + b"\x00" * 8
        return header + struct.pack(">i", bogus) + packet
    if kind == "huge":
        text = "x" * draw(st.integers(min_value=1000, max_value=60000))
        return codec.encode_message("/huge", [text])[: draw(st.integers(8, 60000))]
    if kind == "deep":
        return nested(packet, draw(st.integers(min_value=65, max_value=3000)))
    if kind == "empty":
        return b""
    return draw(st.binary(min_size=1, max_size=300))


def nested(packet: bytes, levels: int) -> bytes:
    """``packet`` wrapped in ``levels`` bundles, built in linear time (10,000 levels is 200 KB)."""
    headers = []
    for level in range(levels):
        inner_size = len(packet) + 20 * (levels - level - 1)
        headers.append(
            codec.BUNDLE_PREFIX + tt.to_bytes(tt.IMMEDIATELY) + struct.pack(">i", inner_size)
        )
    return b"".join(headers) + packet
