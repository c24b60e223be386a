"""``oscsync send``: turn command-line words into OSC values and send them, once or on a grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from oscsync.apps.delivery import refusals, refused_within
from oscsync.apps.endpoints import Endpoint
from oscsync.clock import Clock
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort
from oscsync.osc import codec, timetag
from oscsync.osc.auth import PacketAuth

FLUSH_TIMEOUT = 5.0
"""Seconds ``send`` waits for a TCP peer to take its packets before it says it could not."""

_LITERALS: dict[str, Any] = {"true": True, "false": False, "nil": None}


class ArgumentError(ValueError):
    """A word that cannot be the OSC value asked for."""


def infer_value(word: str) -> Any:
    """``42`` -> int, ``1.5`` -> float, ``true``/``false``/``nil``, anything else a string."""
    if word in _LITERALS:
        return _LITERALS[word]
    try:
        return int(word)
    except ValueError:
        pass
    try:
        value = float(word)
    except ValueError:
        return word
    # "nan" and "inf" are words people chat, not numbers they mean to send.
    return value if word.lower().lstrip("+-") not in ("nan", "inf", "infinity") else word


def typed_values(words: Sequence[str], types: str) -> list[Any]:
    """Values for an explicit type string like liblo's oscsend: one word per tag, except
    ``T F N I`` and the array brackets ``[ ]``, which take none (``i[ff]s 1 0.5 0.25 x`` is
    ``[1, [0.5, 0.25], "x"]``)."""
    unknown = set(types) - set(codec.ARG_TYPES_FOR_SEND)
    if unknown:
        raise ArgumentError(
            f"unknown type {''.join(sorted(unknown))!r}: use {codec.ARG_TYPES_FOR_SEND}"
        )
    needed = [tag for tag in types if tag not in _WORDLESS]
    if len(needed) != len(words):
        raise ArgumentError(f"types {types!r} need {len(needed)} values, got {len(words)}")
    given = iter(words)
    # One value per tag, T F N I included (the encoder pairs tags and values 1:1); an array is
    # one list, filled while its brackets are open.
    values: list[Any] = []
    open_arrays: list[list[Any]] = [values]
    for tag in types:
        if tag == "[":
            array: list[Any] = []
            open_arrays[-1].append(array)
            open_arrays.append(array)
        elif tag == "]":
            if len(open_arrays) == 1:
                raise ArgumentError(f"types {types!r}: ']' closes no array")
            open_arrays.pop()
        elif tag in _FLAGS:
            open_arrays[-1].append(_FLAGS[tag])
        else:
            open_arrays[-1].append(_convert(next(given), tag))
    if len(open_arrays) > 1:
        raise ArgumentError(f"types {types!r}: '[' without its ']'")
    return values


_FLAGS: dict[str, Any] = {"T": True, "F": False, "N": None, "I": float("inf")}
_WORDLESS = frozenset("TFNI[]")


def _convert(word: str, tag: str) -> Any:
    try:
        if tag in "ih":
            value = int(word, 0)
            bits = 32 if tag == "i" else 64
            if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                raise ArgumentError(f"{word} does not fit a {bits}-bit integer ({tag!r})")
            return value
        if tag in "fd":
            return float(word)
        if tag in "sS":
            return word
        if tag == "c":
            if len(word) != 1:
                raise ArgumentError(f"{word!r} is not one character ('c')")
            return word
        if tag == "t":
            return timetag.parse(word)
        if tag == "b":
            return bytes.fromhex(word.removeprefix("0x"))
        if tag in "mr":
            raw = bytes.fromhex(word.removeprefix("0x").removeprefix("#"))
            if len(raw) != 4:
                raise ArgumentError(f"{_TYPE_NAMES[tag]} {word!r} must be 4 bytes (8 hex digits)")
            return tuple(raw) if tag == "m" else int.from_bytes(raw, "big")
    except ValueError as exc:
        if isinstance(exc, ArgumentError):
            raise
        if isinstance(exc, timetag.TimetagError):
            raise ArgumentError(f"{exc} ('t')") from None
        raise ArgumentError(f"{word!r} is not a valid {_TYPE_NAMES[tag]} ({tag!r})") from None
    raise ArgumentError(f"unknown type {tag!r}")


_TYPE_NAMES = {
    "i": "32-bit integer",
    "h": "64-bit integer",
    "f": "float",
    "d": "double",
    "b": "blob in hex",
    "m": "MIDI message",
    "r": "RGBA colour",
}


@dataclass(frozen=True)
class Packet:
    """What to send: an encoded message, and when (None = a plain message, no bundle)."""

    message: bytes
    at: int | None = None  # absolute timetag
    ahead: float | None = None  # seconds after the moment of sending

    def encode(self, clock: Clock) -> bytes:
        if self.ahead is not None:
            return codec.encode_bundle(
                timetag.add_seconds(clock.now_timetag(), self.ahead), [self.message]
            )
        if self.at is not None:
            return codec.encode_bundle(self.at, [self.message])
        return self.message


@dataclass
class SendProgress:
    """How far :func:`send_repeated` got: packets sent so far and peer deliveries among them."""

    packets: int = 0
    delivered: int = 0
    written: bool = True
    """False when a stream transport could not write everything before the end (a TCP peer
    that refuses the connection); UDP datagrams are always written at once."""
    datagrams: int = 0
    """Datagrams sent to unicast UDP peers (the ones that can be refused)."""
    refused: int = 0
    """Of those, how many a peer's machine answered with ICMP "port unreachable": lost."""


def send_repeated(
    endpoint: Endpoint,
    packet: Packet,
    clock: Clock,
    repeat: int,
    interval: float,
    progress: SendProgress | None = None,
    auth: PacketAuth | None = None,
) -> int:
    """Send ``repeat`` times on a drift-free grid (send k at start + k·interval); return sends.

    ``progress`` is updated after each send, so a caller interrupted half-way can say how far
    it got. With ``auth`` (a key) a bundle goes out signed.
    """
    progress = progress if progress is not None else SendProgress()
    refusable = sum(1 for peer in endpoint.peers if not peer.is_tcp and not peer.is_multicast)
    before = refusals(endpoint.transport)
    start = clock.monotonic()
    try:
        for k in range(repeat):
            if k:
                clock.sleep(start + k * interval - clock.monotonic())
            data = packet.encode(clock)
            if auth is not None:
                data = auth.sign_bundles(data)
            progress.delivered += endpoint.send_packet(data)
            progress.packets += 1
            progress.datagrams += refusable
        progress.written = endpoint.flush(FLUSH_TIMEOUT)
        if refusable:
            # The last datagram's "port unreachable" comes back within a round trip: wait for
            # it (at most REFUSAL_WINDOW), so that one send to a closed port is not taken for
            # a success (issue 30: it exited 0 in silence, where -n 3 warned).
            refused_within(endpoint.transport, before + progress.datagrams - 1)
    finally:
        progress.refused = refusals(endpoint.transport) - before
    return progress.delivered


def send_to(
    targets: Sequence[HostPort],
    packet: Packet,
    clock: Clock,
    repeat: int,
    interval: float,
    progress: SendProgress,
    *,
    warn: Callable[[str], None],
    multicast_interface: str | None = None,
    framing: Framing = "slip",
    auth: PacketAuth | None = None,
) -> int:
    """``oscsync send``: open an :class:`~oscsync.apps.endpoints.Endpoint` (``oscsync.Endpoint``)
    to ``targets``, :func:`send_repeated`, close it (``framing``: how packets to ``tcp://``
    targets are framed; ``auth``: the key bundles are signed with)."""
    with Endpoint(
        peers=targets,
        clock=clock,
        on_warning=warn,
        multicast_interface=multicast_interface,
        framing=framing,
        key=auth,
    ) as endpoint:
        # It sends and exits: its warnings must not promise to go on (issue 30). Its receive
        # thread (started with it) is what hears a peer's "port unreachable".
        endpoint.transport.sending_once = True
        return send_repeated(endpoint, packet, clock, repeat, interval, progress, auth)
