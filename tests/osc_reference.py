"""python-osc's message decoder with oscsync's checks in front: the reference the codec's own
one-pass decoder is cross-checked against (it was the codec's slow path until issue 27, item 6;
python-osc's readers copy the rest of the datagram for every argument, so it is too slow for
hostile input, but its values are the ones oscsync promises)."""

from __future__ import annotations

from typing import Any

from pythonosc import osc_message
from pythonosc.parsing import osc_types

from oscsync.osc import codec
from oscsync.osc.codec import DecodeError, Message


def decode_message(data: bytes, timetag: int | None = None) -> Message:
    """What ``codec.decode_message`` must return (or raise) for ``data``."""
    located = codec._locate_type_tags(data)
    types = ""
    aliased = ""
    if located is not None:
        tags, tag_start = located
        if not tags.startswith(","):
            raise DecodeError("bad-type-tag", f"type tags must start with ',' (got {tags[:16]!r})")
        types = tags[1:]
        if len(types) > codec.MAX_ARGUMENTS:
            raise DecodeError("too-many-args", "too many type tags")
        if not codec._KNOWN_TAGS.issuperset(types):
            raise DecodeError("bad-type-tag", "unknown type tag")
        aliased = types.translate(codec._ALIAS_TRANSLATION)
        if aliased != types:
            start = tag_start + 1
            data = data[:start] + aliased.encode() + data[start + len(types) :]
        codec._check_arrays(types)
        if "b" in types:
            codec._check_blobs(data, tag_start + len(tags), types)
    try:
        parsed = osc_message.OscMessage(data)
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid-utf8", f"a string is not UTF-8 ({exc.reason})") from None
    except (osc_message.ParseError, osc_types.ParseError, IndexError) as exc:
        raise DecodeError("truncated", f"arguments do not match type tags ({exc})") from None
    address: str = parsed.address
    if not address.startswith("/") or " " in address:
        raise DecodeError("bad-address", f"OSC address {address!r} is not valid")
    args: tuple[Any, ...] = tuple(parsed.params)
    if aliased != types:
        args = codec._unalias(types, args)
    return Message(address, args, types, timetag)


def decode(data: bytes, max_depth: int = codec.MAX_BUNDLE_DEPTH) -> list[Message]:
    """What ``codec.decode`` must return (or raise): the bundle walk as it was before issue 27
    (item 7), copying each nested bundle; messages are decoded by the codec."""
    if not data:
        raise DecodeError("empty", "empty datagram")
    if len(data) % 4:
        raise DecodeError("bad-size", "not a multiple of 4 bytes")
    if data[0:1] == b"/":
        return [codec.decode_message(data, None)]
    if not codec.is_bundle(data):
        raise DecodeError("not-osc", "neither a message nor a bundle")
    messages: list[Message] = []
    stack = [(data, 0, 0, 1)]
    while stack:
        bundle, pos, timetag, depth = stack.pop()
        if pos == 0:
            if len(bundle) < 16:
                raise DecodeError("truncated", "bundle shorter than its header")
            timetag = int.from_bytes(bundle[8:16], "big")
            pos = 16
        if pos >= len(bundle):
            continue
        if pos + 4 > len(bundle):
            raise DecodeError("truncated", "bundle element size cut short")
        size = int.from_bytes(bundle[pos : pos + 4], "big", signed=True)
        start = pos + 4
        if size <= 0 or size % 4 or start + size > len(bundle):
            raise DecodeError("bad-bundle", "element size does not fit the bundle")
        element = bundle[start : start + size]
        stack.append((bundle, start + size, timetag, depth))
        if element[0:1] == b"/":
            messages.append(codec.decode_message(element, timetag))
        elif codec.is_bundle(element):
            if depth >= max_depth:
                raise DecodeError("too-deep", "bundles nested too deep")
            stack.append((element, 0, 0, depth + 1))
        else:
            raise DecodeError("bad-bundle", "neither a message nor a bundle")
    return messages
