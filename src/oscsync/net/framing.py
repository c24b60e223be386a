"""OSC packets on a byte stream (TCP): SLIP (OSC 1.1) and int32 size prefix (OSC 1.0) framing.

A stream has no datagram boundaries, so each OSC packet is framed:

* **SLIP** (RFC 1055), as OSC 1.1 requires for stream transports (Freed & Schmeder, NIME 2009):
  the packet with END (0xC0) written as ESC ESC_END (0xDB 0xDC) and ESC as ESC ESC_ESC
  (0xDB 0xDD), between two END bytes ("double END": the leading one flushes any line noise
  before the packet). Encoding is python-osc's :func:`pythonosc.slip.encode` (exactly that) and
  each delimited segment is unescaped and checked by :func:`pythonosc.slip.decode`; what
  python-osc lacks is the incremental part, here: bytes arrive in arbitrary pieces, junk may sit
  between frames, and a peer may stop in the middle of one.
* **size prefix** (OSC 1.0 "stream" transport): a big-endian int32 byte count, then the packet.
  A bad count cannot be resynchronised (there is no marker to look for), so it ends the
  connection (:attr:`FramingError.fatal`).

A receiver learns the framing from the first bytes of a connection (:class:`StreamDecoder`): a
leading END means SLIP, and so does a stream that starts with an OSC packet itself (``/`` or
``#bundle``: a sender that writes END only after each packet, as RFC 1055 first did); anything else
is a size prefix. liblo decides the same way (``detect_slip`` in its ``server.c``), except that it
takes END followed by ``#bundle`` for a size prefix: see :class:`oscsync.net.tcpsender.TcpSender`
for how a connection's first frame avoids that. No ambiguity: a size prefix within the 16 MiB limit
starts with 0x00, and ``/`` (0x2F) or ``#`` (0x23) as a first byte would mean a size above 500 MiB.

Nothing grows without bound: a decoder holds at most one partial frame, and a frame longer than
``max_frame`` bytes is refused (SLIP: skipped up to the next END and counted; size prefix: fatal).
"""

from __future__ import annotations

import struct
from typing import Literal

Framing = Literal["slip", "size"]
FRAMINGS: tuple[Framing, ...] = ("slip", "size")

END = 0xC0
ESC = 0xDB
_END_BYTE = bytes([END])
_SIZE = struct.Struct(">i")

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
"""16 MiB: far above any real OSC packet (a 1 MB blob crosses), far below what hurts a laptop."""


class FramingError(ValueError):
    """A frame that was refused: ``reason`` is a short key for drop counters.

    ``fatal`` means the stream cannot be resynchronised and the connection must be closed.
    Decoders return these (they do not raise them): one bad frame must not cost the good ones
    that were read with it.
    """

    def __init__(self, reason: str, detail: str, *, fatal: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.fatal = fatal


Decoded = bytes | FramingError


def slip_encode(packet: bytes) -> bytes:
    """``packet`` as one double-END SLIP frame (OSC 1.1)."""
    # Imported here: option parsing imports this module, and python-osc stays out of the CLI's
    # start-up (tests/test_cli_help.py).
    from pythonosc import slip

    return slip.encode(packet)


def size_encode(packet: bytes) -> bytes:
    """``packet`` after its big-endian int32 length (OSC 1.0 streams)."""
    return _SIZE.pack(len(packet)) + packet


def encode(packet: bytes, framing: Framing) -> bytes:
    return slip_encode(packet) if framing == "slip" else size_encode(packet)


class _Splitter:
    """What both decoders hold: the bytes of a frame not yet complete, at most ``max_frame``."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._pending = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._pending)


class SlipDecoder(_Splitter):
    """Splits a SLIP byte stream into packets, whatever pieces it arrives in.

    Each run of bytes between two END bytes is one candidate frame; empty runs (the double END
    between frames) are skipped. A run with a bad escape is refused and counted
    (``bad-slip-escape``), and decoding goes on at the next END: junk between frames costs only
    itself. A run longer than ``max_frame`` bytes is dropped as it grows (``frame-too-large``) and
    the rest of it, up to the next END, is skipped without being kept.
    """

    framing: Framing = "slip"

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)
        self._skipping = False

    @property
    def mid_frame(self) -> bool:
        """True when the stream stopped inside a frame (bytes after the last END)."""
        return bool(self._pending) or self._skipping

    def feed(self, data: bytes) -> list[Decoded]:
        # One split per read, not one search per frame: a read holds hundreds of small frames
        # under load (benchmarks/tcp.py).
        pieces = data.split(_END_BYTE)
        tail = pieces.pop()  # what follows the last END: the start of a frame still coming
        out: list[Decoded] = []
        if pieces:
            head = pieces[0]
            if self._skipping:
                self._skipping = False  # the oversized frame ends here
                pieces[0] = b""
            elif self._pending:
                if len(self._pending) + len(head) > self.max_frame:
                    out.append(_too_large(self.max_frame))
                    pieces[0] = b""
                else:
                    self._pending += head
                    pieces[0] = bytes(self._pending)
                self._pending.clear()
            limit = self.max_frame
            for piece in pieces:
                if not piece:
                    continue  # the double END between two frames
                if len(piece) > limit:
                    out.append(_too_large(limit))
                elif ESC in piece:
                    out.append(_unescape(piece))
                else:
                    out.append(piece)
        if tail and not self._skipping:
            if len(self._pending) + len(tail) > self.max_frame:
                self._pending.clear()
                self._skipping = True
                out.append(_too_large(self.max_frame))
            else:
                self._pending += tail
        return out


def _unescape(escaped: bytes) -> Decoded:
    from pythonosc import slip

    try:
        return slip.decode(escaped)
    except slip.ProtocolError:
        return FramingError(
            "bad-slip-escape", "an ESC byte not followed by ESC_END or ESC_ESC (RFC 1055)"
        )


def _too_large(limit: int) -> FramingError:
    return FramingError("frame-too-large", f"a frame longer than {limit} bytes")


class SizePrefixDecoder(_Splitter):
    """Splits an int32-size-prefixed byte stream into packets.

    A size that is negative or above ``max_frame`` is fatal (``bad-size``: the stream has no
    boundary to find again). A zero size is an empty frame, counted (``empty-frame``) and skipped.
    """

    framing: Framing = "size"

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)
        self._need: int | None = None  # the body length once the prefix has been read
        self._broken = False

    @property
    def mid_frame(self) -> bool:
        return bool(self._pending) or self._need is not None

    def feed(self, data: bytes) -> list[Decoded]:
        if self._broken:
            return []
        out: list[Decoded] = []
        pending = self._pending
        pending += data
        offset = 0
        while True:
            if self._need is None:
                if len(pending) - offset < 4:
                    break
                (size,) = _SIZE.unpack_from(pending, offset)
                offset += 4
                if size < 0 or size > self.max_frame:
                    self._broken = True
                    pending.clear()
                    out.append(
                        FramingError(
                            "bad-size",
                            f"a size prefix of {size} bytes (limit {self.max_frame})",
                            fatal=True,
                        )
                    )
                    return out
                if size == 0:
                    out.append(FramingError("empty-frame", "a size prefix of 0"))
                    continue
                self._need = size
            if len(pending) - offset < self._need:
                break
            out.append(bytes(pending[offset : offset + self._need]))
            offset += self._need
            self._need = None
        del pending[:offset]
        return out


class StreamDecoder:
    """A decoder that picks its framing from the first byte it sees (END, ``/`` or ``#``: SLIP).

    This is what a listener uses per connection: liblo's and Pure Data's clients send SLIP
    (``[packOSCstream]``), OSC 1.0 tools a size prefix, and the user never has to say which.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, framing: Framing | None = None) -> None:
        self.max_frame = max_frame
        self._inner: SlipDecoder | SizePrefixDecoder | None = None
        if framing is not None:
            self._inner = _decoder_for(framing, max_frame)

    @property
    def framing(self) -> Framing | None:
        """The framing in use, or None before the first byte."""
        return None if self._inner is None else self._inner.framing

    @property
    def buffered(self) -> int:
        return 0 if self._inner is None else self._inner.buffered

    @property
    def mid_frame(self) -> bool:
        return self._inner is not None and self._inner.mid_frame

    def feed(self, data: bytes) -> list[Decoded]:
        if not data:
            return []
        if self._inner is not None:
            return self._inner.feed(data)
        framing: Framing = "slip" if data[0] in _SLIP_FIRST_BYTES else "size"
        self._inner = _decoder_for(framing, self.max_frame)
        out = self._inner.feed(data)
        if out and isinstance(out[0], FramingError) and out[0].fatal and data[0] != 0:
            # The very first byte is neither SLIP nor the 0x00 that starts any size below 16
            # MiB: say what the stream is instead of quoting an absurd size.
            out[0] = not_an_osc_stream(data)
        return out


_SLIP_FIRST_BYTES = frozenset((END, ord("/"), ord("#")))
_PREVIEW = 24


def not_an_osc_stream(start: bytes) -> FramingError:
    """The error for a connection whose first bytes are not an OSC stream at all."""
    preview = start[:_PREVIEW]
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in preview):
        # Plain text: most likely Pure Data's [netsend] (FUDI over TCP) without [packOSCstream].
        shown = preview.decode("ascii") + ("..." if len(start) > _PREVIEW else "")
        detail = (
            f'it reads "{shown}" (text, e.g. from [netsend]: OSC over TCP needs '
            "[packOSCstream] and [tcpclient])"
        )
    else:
        detail = (
            f"it starts with {preview[:8].hex(' ')}, neither SLIP (0xc0) nor a size prefix "
            "within the limit"
        )
    return FramingError("not-osc-stream", detail, fatal=True)


def _decoder_for(framing: Framing, max_frame: int) -> SlipDecoder | SizePrefixDecoder:
    return SlipDecoder(max_frame) if framing == "slip" else SizePrefixDecoder(max_frame)
