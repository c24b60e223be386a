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
