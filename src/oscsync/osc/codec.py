"""OSC packets to and from bytes, with exact timetags.

Messages are encoded here, with every type OSC 1.0 and its common extensions name (python-osc's
builder cannot write ``S c t r I``, an empty blob or an array of explicit types), and decoded
here to python-osc's values (its ``OscMessage`` stays the reference in the tests) but in one
pass: its readers copy the rest of the datagram for every argument. Bundles are walked here
too, because python-osc's ``OscBundle`` (1.10) turns timetags into floats (losing up to 0.5 µs),
recurses once per nesting level with no limit, and reports unknown elements through the root
logger instead of an error. Here bundles are walked with an explicit stack and a depth limit,
each message keeps the exact 64-bit timetag of its innermost enclosing bundle (OSC 1.0), and
every way a datagram can be wrong raises :class:`DecodeError` with a short ``reason`` for drop
counters.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from oscsync.osc import timetag as tt

BUNDLE_PREFIX = b"#bundle\x00"
MAX_BUNDLE_DEPTH = 64
"""Deeper nesting is refused: no real sender nests more than a few levels."""
MAX_ARRAY_DEPTH = 64
"""Arrays (``[`` ... ``]``) nested deeper are refused, like bundles: 3,000 levels made the
formatters raise RecursionError and ~500 made ``dump --jsonl`` lose the line (issue 20, item 3)."""
MAX_ARGUMENTS = 65_536
"""Type tags one message may have: more than a UDP datagram can carry, so this only refuses
stream (TCP) frames. Each argument decodes into a Python object, so this bounds what one
message becomes (~4 MB): a 16 MiB frame of ``,TTTT...`` decoded into 16 million of them, 436 MB
(issue 27, item 6). Longer data goes in a blob."""

# Type tags python-osc decodes directly.
_NATIVE_TAGS = frozenset("ifdsbhrmTFN[]")
# liblo's extra tags that have the same wire layout as a native one: decoded as that one, then
# converted back (symbol -> string, char -> int32, timetag -> uint64, infinitum -> no data).
_ALIAS_TAGS = {"S": "s", "c": "i", "t": "h", "I": "N"}
_ALIAS_TRANSLATION = str.maketrans(_ALIAS_TAGS)
_KNOWN_TAGS = _NATIVE_TAGS | frozenset(_ALIAS_TAGS)


class DecodeError(ValueError):
    """A datagram that is not valid OSC; ``reason`` is a short key for drop counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """Arguments that cannot be encoded as the requested OSC types."""


class Message(NamedTuple):
    """One decoded OSC message (a named tuple: built for every message received, and a tuple
    is several times cheaper to create than a frozen dataclass).

    ``types`` is the type tag string without its comma, as the sender wrote it. ``timetag`` is the
    exact NTP timetag of the innermost bundle that contained the message, or ``None`` for a message
    that came on its own (which, like :data:`~oscsync.osc.timetag.IMMEDIATELY`, means "now").
    """

    address: str
    args: tuple[Any, ...]
    types: str
    timetag: int | None = None


# -- decoding ---------------------------------------------------------------------------------


_SLASH = ord("/")


def is_bundle(data: bytes) -> bool:
    return data.startswith(BUNDLE_PREFIX)


def decode(data: bytes, max_depth: int = MAX_BUNDLE_DEPTH) -> list[Message]:
    """All messages in a datagram, in order, each with its enclosing bundle's timetag."""
    if not data:
        raise DecodeError("empty", "empty datagram")
    if len(data) % 4:
        raise DecodeError("bad-size", f"OSC packets are a multiple of 4 bytes, got {len(data)}")
    if data[0:1] == b"/":
        return [decode_message(data, None)]
    if not is_bundle(data):
        raise DecodeError("not-osc", "neither a message (starts with '/') nor a '#bundle'")
    messages: list[Message] = []
    # Stack of (read position, end of that bundle, its timetag, its depth), all offsets into
    # ``data``: a nested bundle is never copied (issue 27, item 7: a 15 MiB frame nested 63 deep
    # made 63 copies, 1 GB), only each message's own bytes are, once. No recursion either, so
    # nesting depth is bounded by max_depth and not by Python's recursion limit.
    if len(data) < 16:
        raise DecodeError("truncated", "bundle shorter than its 16-byte header")
    stack = [(16, len(data), int.from_bytes(data[8:16], "big"), 1)]
    while stack:
        pos, end, timetag, depth = stack.pop()
        if pos >= end:
            continue
        if pos + 4 > end:
            raise DecodeError("truncated", "bundle element size cut short")
        (size,) = struct.unpack_from(">i", data, pos)
        start = pos + 4
        if size <= 0 or size % 4 or start + size > end:
            raise DecodeError(
                "bad-bundle", f"element size {size} at byte {pos} does not fit the bundle"
            )
        stack.append((start + size, end, timetag, depth))
        if data[start] == _SLASH:
            messages.append(decode_message(data[start : start + size], timetag))
        elif data.startswith(BUNDLE_PREFIX, start, start + size):
            if depth >= max_depth:
                raise DecodeError("too-deep", f"bundles nested deeper than {max_depth}")
            if size < 16:
                raise DecodeError("truncated", "bundle shorter than its 16-byte header")
            inner_tag = int.from_bytes(data[start + 8 : start + 16], "big")
            stack.append((start + 16, start + size, inner_tag, depth + 1))
        else:
            raise DecodeError("bad-bundle", "bundle element is neither a message nor a bundle")
    return messages


def decode_message(data: bytes, timetag: int | None = None) -> Message:
    """Decode one OSC message (not a bundle).

    Messages whose type tags are all common ones (``i f s b T F N h d t``), at most
    :data:`_PLAN_TAG_LIMIT` of them, take a fast path (:func:`_fast_plan`); anything it does not
    accept, well-formed or not, is decoded by :func:`_decode_message_general`, which reads any
    message in one pass and gives every drop reason (``tests/test_codec.py`` cross-checks both
    with python-osc, the reference, with hypothesis).
    """
    address_end = data.find(b"\x00")
    if address_end > 0:
        start = (address_end + 4) & ~3
        stop = data.find(b"\x00", start)
        if stop > start:
            if stop <= _HEAD_LIMIT:
                head = data[:stop]
                known = _HEADS.get(head)
                if known is not None:
                    # A head (address and type tags) seen before: its address decoded and
                    # checked and its plan found once (issue 18: 0.2 µs a message,
                    # benchmarks/dump_path.py).
                    address, types, read, args_start, unpack_fixed, fixed_end = known
                    if unpack_fixed is not None:
                        # Fixed-size arguments only: one struct, no reader call (0.1 µs).
                        if fixed_end <= len(data):
                            args = unpack_fixed(data, args_start)
                            return _new_message(Message, (address, args, types, timetag))
                    elif args_start <= len(data):
                        args = read(data, args_start)
                        if args is not None:
                            return _new_message(Message, (address, args, types, timetag))
                    return _decode_message_general(data, timetag)
            if stop - start <= _PLAN_TAG_LIMIT:
                key = data[start:stop]
                plan = _PLANS.get(key, _UNPLANNED)
                if plan is _UNPLANNED:
                    plan = _fast_plan(key)
                args_start = (stop + 4) & ~3  # past the tag string's NUL and padding
                if plan is not None and args_start <= len(data):
                    args = plan.read(data, args_start)
                    if args is not None:
                        try:
                            address = data[:address_end].decode()
                        except UnicodeDecodeError:
                            address = ""  # the general path names the error
                        if address[:1] == "/" and " " not in address:
                            _remember_head(data[:stop], address, plan, args_start)
                            return _new_message(Message, (address, args, plan.types, timetag))
    return _decode_message_general(data, timetag)


_HEAD_CACHE_BYTES = 64 * 1024
"""Bytes held by the message heads (address and type tags) remembered by
:func:`decode_message`, counted as :func:`_head_cost` says; the cache is emptied when full, so a
peer cycling through addresses costs time, never memory."""
_HEAD_LIMIT = 1024
"""Longer heads are not remembered (one would take a large share of the cache)."""
_Head = tuple[str, str, "ArgsReader", int, Callable[[bytes, int], Any] | None, int]
_HEADS: dict[bytes, _Head] = {}
"""Head -> address, types, args reader, where the args start, and for fixed-size args only
their struct's ``unpack_from`` and where they end."""
_heads_size = 0


def _head_cost(head: bytes) -> int:
    """Bytes one remembered head holds: the key, its address and types as str (about the
    head's length again), and the tuple and dict slot (measured with tracemalloc: ~250)."""
    return 2 * len(head) + 256


_cache_lock = threading.Lock()
"""Held while :data:`_HEADS` or :data:`_PLANS` and their byte counts change: several receive
threads decode at once (UDP, the TCP listener, each TCP sender), and two that missed one key
would both count it, or one's ``+=`` lose another's. Reads take no lock (a dict lookup is
atomic), so only a miss pays for it."""


def _remember_head(head: bytes, address: str, plan: _Plan, start: int) -> None:
    global _heads_size
    if len(head) > _HEAD_LIMIT:
        return
    cost = _head_cost(head)
    types, read, fixed = plan
    entry: _Head
    if fixed is None:
        entry = (address, types, read, start, None, start)
    else:
        entry = (address, types, read, start, fixed.unpack_from, start + fixed.size)
    with _cache_lock:
        if head in _HEADS:
            return
        if _heads_size + cost > _HEAD_CACHE_BYTES:
            _HEADS.clear()
            _heads_size = 0
        _HEADS[head] = entry
        _heads_size += cost


# tuple.__new__ called directly: a named tuple's own __new__ is a Python function, and this
# halves what making one costs (0.2 -> 0.1 µs), once per message received.
_new_message = tuple.__new__

# -- the fast path ----------------------------------------------------------------------------
#
# Per type tag string, a plan: the types (without the comma) and a function that reads the
# arguments from a position, or returns None when anything is off (the general path then decides
# what the datagram is, with the reason its checks give). Runs of fixed-size arguments are read
# with one precompiled struct each. Measured on the 2-core VM with /blast/fader ,if
# (benchmarks/throughput.py's message): 4.4 µs per datagram through python-osc, 1.2 µs here.

_FIXED_FORMATS = {"i": "i", "f": "f", "h": "q", "d": "d", "t": "Q"}
_CONSTANTS = {"T": True, "F": False, "N": None}
_PLAN_TAG_LIMIT = 256
"""Longer type tag strings (comma included) get no plan: they are read by the general path,
whose cost is their own bytes. A plan costs ~100 bytes per tag (issue 27, item 6: plans for
65 KB tag strings, 5 MB each, filled a cache counted in entries to 1.2 GB)."""
_PLAN_CACHE_BYTES = 1 << 20
"""Bytes held by remembered plans, counted as :func:`_plan_cost` says; the cache is emptied when
full, so a peer cycling through random tags costs time, never memory."""

ArgsReader = Callable[[bytes, int], tuple[Any, ...] | None]


class _Plan(NamedTuple):
    types: str
    read: ArgsReader
    fixed: struct.Struct | None
    """For types made only of fixed-size tags: their struct (read by the head cache)."""


_UNPLANNED: Any = object()
_PLANS: dict[bytes, _Plan | None] = {}
_plans_size = 0


def _plan_cost(key: bytes) -> int:
    """Bytes one remembered plan holds, over-estimated from tracemalloc (issue 27): ~600 for
    the reader and its tuples plus 36-100 per tag for steps and structs, and the key."""
    return 1024 + 128 * len(key)


def _fast_plan(key: bytes) -> _Plan | None:
    """The plan for type tag bytes ``key`` (comma included), cached; None: the general path."""
    global _plans_size
    plan = _compile_plan(key)
    cost = _plan_cost(key)
    with _cache_lock:
        if key in _PLANS:
            return plan
        if _plans_size + cost > _PLAN_CACHE_BYTES:
            _PLANS.clear()
            _plans_size = 0
        _PLANS[key] = plan
        _plans_size += cost
    return plan


def _compile_plan(key: bytes) -> _Plan | None:
    if key[:1] != b"," or not key.isascii():
        return None
    types = key[1:].decode("ascii")
    if not _FAST_TAGS.issuperset(types):
        return None
    if not types:
        return _Plan(types, _no_args, None)
    if _FIXED_TAGS.issuperset(types):
        fixed = struct.Struct(">" + "".join(_FIXED_FORMATS[tag] for tag in types))
        return _Plan(types, _fixed_reader(fixed), fixed)
    # Steps: a struct for a run of fixed-size arguments, or one of "s", "b", or a constant.
    steps: list[tuple[str, Any]] = []
    run = ""
    for tag in types:
        if tag in _FIXED_FORMATS:
            run += _FIXED_FORMATS[tag]
            continue
        if run:
            steps.append(("run", struct.Struct(">" + run)))
            run = ""
        steps.append((tag, _CONSTANTS.get(tag)))
    if run:
        steps.append(("run", struct.Struct(">" + run)))
    return _Plan(types, _stepped_reader(tuple(steps)), None)


_FIXED_TAGS = frozenset(_FIXED_FORMATS)
_FAST_TAGS = _FIXED_TAGS | frozenset("sbTFN")


def _no_args(data: bytes, pos: int) -> tuple[Any, ...] | None:
    return ()


def _fixed_reader(fixed: struct.Struct) -> ArgsReader:
    unpack_from = fixed.unpack_from
    size = fixed.size

    def read(data: bytes, pos: int) -> tuple[Any, ...] | None:
        if pos + size > len(data):
            return None
        return unpack_from(data, pos)

    return read


def _stepped_reader(steps: tuple[tuple[str, Any], ...]) -> ArgsReader:
    def read(data: bytes, pos: int) -> tuple[Any, ...] | None:
        end = len(data)
        values: list[Any] = []
        for kind, how in steps:
            if kind == "run":
                if pos + how.size > end:
                    return None
                values.extend(how.unpack_from(data, pos))
                pos += how.size
            elif kind == "s":
                stop = data.find(b"\x00", pos)
                if stop < 0:
                    return None
                try:
                    values.append(data[pos:stop].decode())
                except UnicodeDecodeError:
                    return None
                pos = (stop + 4) & ~3
                if pos > end:
                    return None
            elif kind == "b":
                if pos + 4 > end:
                    return None
                size = int.from_bytes(data[pos : pos + 4], "big", signed=True)
                start = pos + 4
                pos = start + size + (-size % 4)
                if size < 0 or pos > end:
                    return None
                values.append(data[start : start + size])
            else:
                values.append(how)
        return tuple(values)

    return read


# -- the general path -------------------------------------------------------------------------


def _decode_message_general(data: bytes, timetag: int | None) -> Message:
    """:func:`decode_message` for any message, with every check and drop reason, in one pass.

    It decodes exactly as python-osc (1.10) does (``tests/osc_reference.py`` keeps that as the
    reference), which was this path until issue 27: python-osc's readers copy the rest of the
    datagram for every argument (``len(dgram[index:])``), so a 16 MiB TCP frame of ``,r`` and
    small integers took minutes of CPU. Here each argument costs its own bytes.
    """
    located = _locate_type_tags(data)
    types = ""
    aliased = ""
    if located is not None:
        tags, tag_start = located
        if not tags.startswith(","):
            raise DecodeError("bad-type-tag", f"type tags must start with ',' (got {tags[:16]!r})")
        types = tags[1:]
        if len(types) > MAX_ARGUMENTS:
            raise DecodeError(
                "too-many-args", f"{len(types):,} type tags (at most {MAX_ARGUMENTS:,})"
            )
        if not _KNOWN_TAGS.issuperset(types):
            unknown = "".join(sorted(set(types) - _KNOWN_TAGS))
            raise DecodeError("bad-type-tag", f"unknown type tag {unknown!r}")
        aliased = types.translate(_ALIAS_TRANSLATION)
        _check_arrays(types)
        if "b" in types:
            _check_blobs(data, tag_start + len(tags), types)
    address_end = data.find(b"\x00")  # found: _locate_type_tags checked
    if (address_end + 4) & ~3 > len(data):
        raise DecodeError("truncated", "the address's padding runs past the end")
    try:
        address = data[:address_end].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid-utf8", f"a string is not UTF-8 ({exc.reason})") from None
    args: tuple[Any, ...] = ()
    if located is not None:
        tags, tag_start = located
        args_start = (tag_start + len(tags) + 4) & ~3
        if args_start > len(data):
            raise DecodeError("truncated", "the type tag string's padding runs past the end")
        args = _read_args(data, args_start, aliased)
    if not address.startswith("/") or " " in address:
        raise DecodeError("bad-address", f"OSC address {address!r} is not valid")
    if aliased != types:
        args = _unalias(types, args)
    return Message(address, args, types, timetag)


_RUNS = re.compile(r"[ifhdr]+|[TFN]+|.")
"""A type tag string (aliases resolved) cut into runs read at once: fixed-size arguments,
constants; anything else one tag at a time."""
_RUN_CHUNK = 64
"""Fixed-size tags read by one ``struct`` call: formats this long stay in ``struct``'s own small
cache, whatever run a sender writes."""
_STRUCT_CODE = {"i": "i", "f": "f", "h": "q", "d": "d", "r": "I"}
_STRUCT_CODES = str.maketrans(_STRUCT_CODE)
_WIDTHS = {"i": 4, "f": 4, "h": 8, "d": 8, "r": 4}


def _truncated() -> DecodeError:
    return DecodeError("truncated", "arguments do not match type tags")


def _read_args(data: bytes, pos: int, types: str) -> tuple[Any, ...]:
    """The arguments for ``types`` (aliases resolved, checked by :func:`_check_arrays` and, with
    blobs, :func:`_check_blobs`) from ``pos``: python-osc's values, read in one pass."""
    end = len(data)
    values: list[Any] = []
    out = values
    outer: list[list[Any]] = []  # the arrays enclosing the one being filled
    for match in _RUNS.finditer(types):
        run = match.group()
        tag = run[0]
        if tag in _WIDTHS:
            for first in range(0, len(run), _RUN_CHUNK):
                chunk = run[first : first + _RUN_CHUNK]
                form = ">" + chunk.translate(_STRUCT_CODES)
                size = struct.calcsize(form)
                if pos + size <= end:
                    out.extend(struct.unpack_from(form, data, pos))
                    pos += size
                    continue
                for one in chunk:
                    width = _WIDTHS[one]
                    if pos + width <= end:
                        out.extend(struct.unpack_from(">" + _STRUCT_CODE[one], data, pos))
                    elif one == "f" and pos <= end:
                        # python-osc pads a float cut short with zeros (for Reaktor's sake).
                        out.append(struct.unpack(">f", data[pos : pos + 4].ljust(4, b"\x00"))[0])
                    else:
                        raise _truncated()
                    pos += width
        elif tag in _CONSTANTS:
            out.extend(map(_CONSTANTS.__getitem__, run))
        elif tag == "s":
            stop = data.find(b"\x00", pos)
            after = (stop + 4) & ~3  # pos is always a multiple of 4
            if stop < 0 or after > end:
                raise _truncated()
            try:
                out.append(data[pos:stop].decode())
            except UnicodeDecodeError as exc:
                raise DecodeError("invalid-utf8", f"a string is not UTF-8 ({exc.reason})") from None
            pos = after
        elif tag == "b":
            # _check_blobs saw that every size is 0 or more and fits.
            size = int.from_bytes(data[pos : pos + 4], "big")
            out.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size + (-size % 4)
        elif tag == "m":
            if pos + 4 > end:
                raise _truncated()
            out.append(tuple(data[pos : pos + 4]))
            pos += 4
        elif tag == "[":
            array: list[Any] = []
            out.append(array)
            outer.append(out)
            out = array
        else:  # "]": _check_arrays saw the brackets balanced
            out = outer.pop()
    return tuple(values)


def _locate_type_tags(data: bytes) -> tuple[str, int] | None:
    """The type tag string (with its comma) and its offset; None for a message without one.

    Only located, with two ``bytes.find``: python-osc decodes the message afterwards. (Asking
    python-osc's ``get_string`` for address and tags first cost 2 × ~1 µs per message, a sixth of
    ``dump --jsonl``'s whole budget.)
    """
    address_end = data.find(b"\x00")
    if address_end < 0:
        raise DecodeError("truncated", "the address has no terminating NUL")
    start = (address_end + 4) & ~3
    if start >= len(data):
        return None  # OSC 1.0 allows a message with no type tag string: no arguments
    stop = data.find(b"\x00", start)
    if stop < 0:
        raise DecodeError("truncated", "the type tag string has no terminating NUL")
    try:
        return data[start:stop].decode("ascii"), start
    except UnicodeDecodeError:
        raise DecodeError("bad-type-tag", "type tags are not ASCII") from None


def _check_arrays(types: str) -> None:
    """Refuse unbalanced brackets and arrays nested deeper than :data:`MAX_ARRAY_DEPTH`."""
    if "[" not in types and "]" not in types:
        return
    depth = 0
    for tag in types:
        if tag == "[":
            depth += 1
            if depth > MAX_ARRAY_DEPTH:
                raise DecodeError("too-deep", f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
        elif tag == "]":
            depth -= 1
            if depth < 0:
                raise DecodeError("bad-type-tag", "']' closes no array")
    if depth:
        raise DecodeError("bad-type-tag", "'[' without its ']'")


# Bytes each fixed-size argument takes on the wire (OSC 1.0 and liblo's extras).
_ARG_SIZES = {"i": 4, "f": 4, "c": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8}


def _check_blobs(data: bytes, tags_end: int, types: str) -> None:
    """Walk the arguments of a message with blobs: every blob size must be 0 or more and fit.

    python-osc's ``get_blob`` (1.10) accepts a negative size and moves its read position
    backwards, so ``,bbbb...`` with sizes S, -(S+8), S, ... re-reads the same S bytes for every
    pair: one 65,000-byte datagram decoded into 528 MB (issue 20, item 1). After this walk every
    argument occupies its own bytes of the datagram, so what a datagram decodes into is bounded
    by its size (plus one small object per type tag).
    """
    pos = (tags_end + 4) & ~3  # past the tag string's NUL and padding
    end = len(data)
    for tag in types:
        width = _ARG_SIZES.get(tag)
        if width is not None:
            pos += width
        elif tag in "sS":
            stop = data.find(b"\x00", pos)
            if stop < 0:
                raise DecodeError("truncated", "a string argument has no terminating NUL")
            pos = (stop + 4) & ~3
        elif tag == "b":
            if pos + 4 > end:
                raise DecodeError("truncated", "a blob size is cut short")
            (size,) = struct.unpack_from(">i", data, pos)
            if size < 0:
                raise DecodeError("bad-blob", f"blob size {size} is negative")
            pos += 4 + size + (-size % 4)
            if pos > end:
                raise DecodeError("bad-blob", f"blob size {size} runs past the datagram")
        if pos > end:
            raise DecodeError("truncated", "arguments run past the end of the datagram")


def _unalias(types: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Turn the values of aliased tags back into what they are, at every array depth: python-osc
    read ``c`` as an int32, ``t`` as a signed int64 and ``I`` as nil (issue 28: inside an array
    they stayed ``65``, a negative number and ``null``)."""
    root = list(args)
    # python-osc's arrays are fresh lists: converted in place, one (list, position) per depth.
    containers: list[list[Any]] = [root]
    positions = [0]
    for tag in types:
        if tag == "]":
            containers.pop()
            positions.pop()
            continue
        container = containers[-1]
        position = positions[-1]
        positions[-1] = position + 1
        if tag == "[":
            containers.append(container[position])
            positions.append(0)
        elif tag == "c":
            container[position] = _char(container[position])
        elif tag == "t":
            container[position] &= 0xFFFFFFFFFFFFFFFF
        elif tag == "I":
            container[position] = float("inf")
    return tuple(root)


def _char(code: int) -> str:
    """The character a ``c`` argument holds; one beyond Unicode is malformed, not masked into
    another character. (A surrogate, U+D800-U+DFFF, is kept: osc.js writes one per half of a
    character above U+FFFF, and the output layer shows it as U+FFFD.)"""
    if 0 <= code <= 0x10FFFF:
        return chr(code)
    raise DecodeError(
        "bad-char",
        f"a 'c' argument of {code & 0xFFFFFFFF:#010x} is not a character (Unicode ends at "
        "U+10FFFF)",
    )


_OBJECT_BYTES = 64
"""What one decoded argument costs besides its characters or bytes, roughly: a tuple or list
slot (8) and a Python number or string header (24-49), rounded up."""


def footprint(message: Message) -> int:
    """Bytes a decoded message holds in memory, estimated (for byte caps such as the
    scheduler's ``max_bytes``): its strings and blobs plus :data:`_OBJECT_BYTES` per argument.

    Arrays are walked with an explicit stack (their depth is bounded by :data:`MAX_ARRAY_DEPTH`
    anyway).
    """
    total = 200 + len(message.address) + len(message.types)
    pending: list[Any] = [message.args]
    while pending:
        values = pending.pop()
        total += _OBJECT_BYTES * len(values)
        for value in values:
            if isinstance(value, (str, bytes, bytearray)):
                total += len(value)
            elif isinstance(value, (list, tuple)):
                pending.append(value)
    return total


# -- encoding ---------------------------------------------------------------------------------


def infer_type(value: Any) -> str:
    """The OSC type tag for a Python value (python-osc's builder's rules; a list or tuple is an
    array, whose tags :func:`infer_types` spells out)."""
    if value is True:
        return "T"
    if value is False:
        return "F"
    if value is None:
        return "N"
    if isinstance(value, int):
        return "i" if -(2**31) <= value < 2**31 else "h"
    if isinstance(value, float):
        return "f"
    if isinstance(value, str):
        return "s"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "b"
    if isinstance(value, (list, tuple)):
        return "["
    raise EncodeError(f"cannot send a {type(value).__name__} as OSC")


def infer_types(args: Sequence[Any]) -> str:
    """Type tags for ``args``, arrays (lists, tuples) included: ``[1, [2.0, "x"]]`` -> ``i[fs]``."""
    tags: list[str] = []
    pending: list[Any] = [iter(args)]
    while pending:
        value = next(pending[-1], _END)
        if value is _END:
            pending.pop()
            if pending:
                tags.append("]")
            continue
        tag = infer_type(value)
        tags.append(tag)
        if tag == "[":
            if len(pending) > MAX_ARRAY_DEPTH:
                raise EncodeError(f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
            pending.append(iter(value))
    return "".join(tags)


_END: Any = object()

ARG_TYPES_FOR_SEND = "ihfdsSctrbmTFNI[]"
"""Every type tag :func:`encode_message` writes: OSC 1.0's ``i f s b``, its extended ``h d S c t
r m T F N I`` and arrays ``[ ]``."""
_VALUE_FREE = {"T": True, "F": False, "N": None, "I": float("inf")}
"""Tags that carry no bytes. Each still takes its slot in ``args`` (the value decoding gives
back), so ``args`` and ``types`` pair one to one, as :class:`Message` does."""
_INT_RANGES = {
    "i": (-(2**31), 2**31, "a 32-bit integer"),
    "h": (-(2**63), 2**63, "a 64-bit integer"),
    "t": (0, 2**64, "a 64-bit NTP timetag"),
    "r": (0, 2**32, "a 32-bit RGBA colour"),
}
_INT_FORMATS = {"i": ">i", "h": ">q", "t": ">Q", "r": ">I"}


def encode_message(address: str, args: Sequence[Any] = (), types: str | None = None) -> bytes:
    """Bytes of one OSC message; ``types`` (``"ifsT"``: one tag per value) overrides inference.

    ``args`` and ``types`` are shaped as :func:`decode` returns them, so a decoded message
    encodes back to itself: an array is one list (or tuple) in ``args`` and ``[...]`` in
    ``types``; ``c`` is a one-character string, ``t`` an NTP timetag and ``r`` an RGBA colour
    as unsigned integers, ``m`` four bytes, and ``T F N I`` take a slot whose value is ignored.
    """
    _check_address(address)
    if types is None:
        types = infer_types(args)
    unknown = set(types) - set(ARG_TYPES_FOR_SEND)
    if unknown:
        raise EncodeError(
            f"unsupported type tag {''.join(sorted(unknown))!r} (use {ARG_TYPES_FOR_SEND})"
        )
    slots = _top_level_slots(types)
    if slots != len(args):
        raise EncodeError(f"type tags {types!r} need {slots} values, got {len(args)}")
    parts = [_padded_string(address), _padded_string("," + types)]
    pending: list[Any] = [iter(args)]
    for position, tag in enumerate(types):
        if tag == "]":
            if next(pending.pop(), _END) is not _END:
                raise EncodeError(f"the array closed at tag {position + 1} has more values")
            continue
        value = next(pending[-1], _END)
        if value is _END:
            raise EncodeError(f"the array closed after tag {position} has too few values")
        if tag == "[":
            if not isinstance(value, (list, tuple)):
                raise EncodeError(f"'[' needs a list, got {type(value).__name__}")
            pending.append(iter(value))
        elif tag not in _VALUE_FREE:
            parts.append(_encode_arg(tag, value, address, types))
    return b"".join(parts)


def _check_address(address: str) -> None:
    # OSC 1.0: any printable ASCII but ' ' and '#' (',' is pattern syntax: /{a,b}/x).
    if not address.startswith("/") or any(ch in address for ch in " \t\r\n#\x00"):
        raise EncodeError(
            f"OSC address {address!r} must start with '/' and contain no spaces, '#' or NUL"
        )


def _top_level_slots(types: str) -> int:
    """Values ``types`` takes at its top level (an array is one); checks the brackets."""
    return len(top_level_tags(types))


def top_level_tags(types: str) -> list[str]:
    """The type tags of each top-level argument, an array with its brackets: ``"i[ii]s"`` is
    ``["i", "[ii]", "s"]`` (a message's ``args[k]`` has the tags ``top_level_tags(types)[k]``).
    EncodeError for unbalanced brackets or arrays nested deeper than :data:`MAX_ARRAY_DEPTH`."""
    depth = 0
    tags: list[str] = []
    start = 0
    for position, tag in enumerate(types):
        if tag == "]":
            depth -= 1
            if depth < 0:
                raise EncodeError(f"type tags {types!r}: ']' closes no array")
        elif tag == "[":
            depth += 1
            if depth > MAX_ARRAY_DEPTH:
                raise EncodeError(f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
        if depth == 0:
            tags.append(types[start : position + 1])
            start = position + 1
    if depth:
        raise EncodeError(f"type tags {types!r}: '[' without its ']'")
    return tags


def _padded_string(text: str) -> bytes:
    raw = text.encode()
    return raw + b"\x00" * (4 - len(raw) % 4)


def _encode_arg(tag: str, value: Any, address: str, types: str) -> bytes:
    """The bytes of one argument (never a constant or a bracket)."""
    where = f"{address} {types}"
    if tag in _INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise EncodeError(f"cannot encode {where}: {tag!r} needs an integer, got {value!r}")
        low, high, what = _INT_RANGES[tag]
        if not low <= value < high:
            raise EncodeError(f"cannot encode {where}: {value} does not fit {what} ({tag!r})")
        return struct.pack(_INT_FORMATS[tag], value)
    if tag in "fd":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise EncodeError(f"cannot encode {where}: {tag!r} needs a number, got {value!r}")
        try:
            return struct.pack(">f" if tag == "f" else ">d", value)
        except OverflowError:
            raise EncodeError(
                f"cannot encode {where}: {value} is too large for a float32 ('f')"
            ) from None
    if tag in "sS":
        if not isinstance(value, str) or "\x00" in value:
            raise EncodeError(f"cannot encode {where}: {tag!r} needs a string without NUL")
        try:
            return _padded_string(value)
        except UnicodeEncodeError:
            raise EncodeError(f"cannot encode {where}: {value!r} is not valid Unicode") from None
    if tag == "c":
        if not isinstance(value, str) or len(value) != 1:
            raise EncodeError(f"cannot encode {where}: 'c' needs one character, got {value!r}")
        return struct.pack(">i", ord(value))
    if tag == "b":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise EncodeError(f"cannot encode {where}: 'b' needs bytes, got {value!r}")
        blob = bytes(value)
        return struct.pack(">i", len(blob)) + blob + b"\x00" * (-len(blob) % 4)
    # "m": a MIDI message, four bytes (port, status, data 1, data 2)
    try:
        midi = bytes(value)
    except (TypeError, ValueError):
        midi = b""
    if len(midi) != 4:
        raise EncodeError(f"cannot encode {where}: 'm' needs 4 bytes, got {value!r}")
    return midi


def encode_bundle(timetag: int, elements: Sequence[bytes]) -> bytes:
    """Bytes of a bundle holding already-encoded messages or bundles, with an exact timetag."""
    parts = [BUNDLE_PREFIX, tt.to_bytes(timetag)]
    for element in elements:
        parts.append(struct.pack(">i", len(element)))
        parts.append(element)
    return b"".join(parts)
