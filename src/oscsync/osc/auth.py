"""Signing OSC bundles with a shared key, as NTP does with symmetric keys (RFC 5905 §7.3, RFC 8573).

Anyone who sees a follower's clock pings can answer them from the leader's address (issue #27
item 2: a forged pong stepped a follower +5000 ms). Matching sequence numbers cannot stop that;
a secret both ends hold can. This module is the whole of it, with no sockets: keys, a MAC over
bytes, signing a bundle and checking one. The clock exchange (``oscsync.sync``), the tick and step
senders, and later the bridge (#28) and the room protocol (#33) all use it.

**The wire.** A signed packet is an ordinary OSC bundle with one more element at its end::

    /oscsync/auth ,b PAYLOAD        PAYLOAD (32 bytes) = SESSION (8) COUNTER (8) MAC (16)

``MAC = HMAC-SHA-256(key, LABEL + BODY + SESSION + COUNTER)`` truncated to 16 bytes, where BODY is
the bundle's bytes up to that element (header, timetag, every other element). Receivers that do
not check signatures see one extra message, which Pure Data's ``[unpackOSC]`` decodes (a blob is
a list of bytes) and ``[routeOSC]`` passes by; an oscsync endpoint without a key ignores it.

* **Why 16 bytes of MAC.** RFC 2104 §5 recommends keeping at least half of the hash (128 bits of
  SHA-256's 256) and never fewer than 80 bits. A forger who cannot see the key must guess: one
  chance in 2^128 per datagram, against a datagram budget of millions. NTP's own MACs (RFC 8573,
  AES-CMAC) are 128 bits too. The other 16 bytes of the hash would cost 16 bytes per packet and
  buy nothing a guesser could ever reach.
* **Replays.** SESSION is 8 random bytes chosen when a :class:`Signer` is made (a run), COUNTER
  counts its packets from 1. A :class:`Verifier` remembers, per session, the highest counter and
  which of the :data:`REPLAY_WINDOW` before it it has seen (IPsec's anti-replay window, RFC 4303
  §3.4.3: UDP reorders, so "higher than the last" alone would refuse late pongs). A packet seen
  before, or older than the window, is refused as ``replayed``, from any source address (a
  packet copied to another address is still a replay). A session it has never seen is new,
  unless its bundle's timetag is more than :data:`TIMETAG_WINDOW` older than the newest it
  accepted from that source: old recorded ticks replayed as the leader are refused too.
* **Comparison** is :func:`hmac.compare_digest` (constant time: the time a check takes tells a
  forger nothing about how many bytes were right).

What it does not do: hide anything (OSC stays readable), or stop someone on the path from
delaying or dropping packets. A delay added one way is an asymmetric path, which no two-way
method sees: it moves a clock estimate by half of it, never more than half the round trip
(docs/protocol.md).
"""

from __future__ import annotations

import hmac
import itertools
import os
import secrets
import stat
import struct
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oscsync.osc import timetag as tt

ADDRESS = "/oscsync/auth"
LABEL = b"oscsync auth v1\x00"
"""Put before every MAC's input: the same key used for something else (a future message kind)
never yields a MAC valid here."""
MAC_SIZE = 16
SESSION_SIZE = 8
COUNTER_SIZE = 8
PAYLOAD_SIZE = SESSION_SIZE + COUNTER_SIZE + MAC_SIZE

_MESSAGE_HEAD = b"/oscsync/auth\x00\x00\x00" + b",b\x00\x00" + struct.pack(">i", PAYLOAD_SIZE)
ELEMENT_HEAD = struct.pack(">i", len(_MESSAGE_HEAD) + PAYLOAD_SIZE) + _MESSAGE_HEAD
"""The signature element up to its payload: its size, address, type tags and blob size."""
ELEMENT_SIZE = len(ELEMENT_HEAD) + PAYLOAD_SIZE
"""60 bytes: what signing adds to a bundle."""
_BUNDLE_HEAD = b"#bundle\x00"
_MIN_SIGNED = len(_BUNDLE_HEAD) + 8 + ELEMENT_SIZE

MIN_KEY_BYTES = 16
"""Shorter keys are refused: a key is only as strong as the guesses it takes (16 random bytes,
or a long passphrase; ``python -c "import secrets; print(secrets.token_hex(16))"``)."""
MAX_KEY_FILE_BYTES = 4096
"""A key file longer than this is not a key (and is not read into memory)."""
KEY_ENV = "OSCSYNC_KEY"
KEY_FILE_ENV = "OSCSYNC_KEY_FILE"

REPLAY_WINDOW = 1024
"""Counters behind a session's highest that are still taken (once each): reordering on a
jittery link (pongs 5 ms apart, ±15 ms of jitter) reaches a few, a queue a few hundred."""
MAX_SESSIONS = 1024
"""Sessions remembered (least recently heard forgotten first): ~200 bytes each."""
MAX_SOURCES = 1024
"""Sources whose newest timetag is remembered, for :data:`TIMETAG_WINDOW`."""
TIMETAG_WINDOW = 10.0
"""A session never seen before is refused when its bundle is timetagged more than this many
seconds before the newest signed bundle from the same address: a sender that restarts writes
later timetags (its clock went on), a replay of an old recording earlier ones."""


class AuthError(ValueError):
    """A key that cannot be used; the message is one line for the user."""


def _refuse(problem: str) -> AuthError:
    return AuthError(problem)


@dataclass(frozen=True)
class Key:
    """A shared secret and where it came from (the secret never appears in ``repr``)."""

    secret: bytes = field(repr=False)
    origin: str
    """``--key-file PATH`` or ``OSCSYNC_KEY``: what to name in a message."""

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise _refuse(
                f"the key from {self.origin} is {len(self.secret)} bytes: use at least "
                f'{MIN_KEY_BYTES} (e.g. python -c "import secrets; print(secrets.token_hex(16))")'
            )

    def mac(self, *parts: bytes) -> bytes:
        """The truncated HMAC-SHA-256 of :data:`LABEL` and ``parts`` (:data:`MAC_SIZE` bytes)."""
        return hmac.digest(self.secret, LABEL + b"".join(parts), "sha256")[:MAC_SIZE]

    def matches(self, mac: bytes, *parts: bytes) -> bool:
        """Whether ``mac`` is :meth:`mac` of ``parts``, compared in constant time."""
        return hmac.compare_digest(mac, self.mac(*parts))

    @classmethod
    def from_text(cls, text: str | bytes, origin: str) -> Key:
        """A key from its text: surrounding whitespace (a file's last newline) is not part of it."""
        raw = text.encode("utf-8") if isinstance(text, str) else text
        return cls(raw.strip(), origin)

    @classmethod
    def from_file(cls, path: Path) -> tuple[Key, str | None]:
        """The key in ``path``, and a warning if others may read the file (POSIX modes)."""
        origin = f"--key-file {path}"
        try:
            # Looked at before opening too: opening a named pipe waits, silently, for a writer.
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise _refuse(f"{path} is not a regular file")
            with path.open("rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise _refuse(f"{path} is not a regular file")
                raw = handle.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise _refuse(f"cannot read the key file {path}: {exc.strerror or exc}") from None
        if len(raw) > MAX_KEY_FILE_BYTES:
            raise _refuse(f"{path} is over {MAX_KEY_FILE_BYTES} bytes: not a key file")
        warning = None
        if hasattr(os, "getuid") and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warning = (
                f"the key file {path} can be read by other users (chmod 600 {path}): "
                "whoever reads it can forge this clock"
            )
        return cls.from_text(raw, origin), warning


def load_key(key_file: Path | None, environ: Mapping[str, str]) -> tuple[Key | None, str | None]:
    """The key a command runs with: ``--key-file`` (or ``OSCSYNC_KEY_FILE``), else the text of
    ``OSCSYNC_KEY``, else none; and a warning about the file, if any. Two keys is an error."""
    text = environ.get(KEY_ENV)
    if key_file is not None and text:
        raise _refuse(f"a key from {KEY_ENV} and from --key-file: give one")
    if key_file is not None:
        return Key.from_file(key_file)
    if text:
        return Key.from_text(text, KEY_ENV), None
    return None, None


def _counter_bytes(counter: int) -> bytes:
    return counter.to_bytes(COUNTER_SIZE, "big")


class Signer:
    """Signs bundles for one run: one random session, a counter from 1 (thread-safe)."""

    def __init__(self, key: Key, session: bytes | None = None) -> None:
        self.key = key
        self.session = secrets.token_bytes(SESSION_SIZE) if session is None else session
        if len(self.session) != SESSION_SIZE:
            raise ValueError(f"a session is {SESSION_SIZE} bytes")
        self._counter = itertools.count(1)  # next() on a count is atomic in CPython

    def sign(self, bundle: bytes) -> bytes:
        """``bundle`` with its signature element appended (:data:`ELEMENT_SIZE` bytes more)."""
        if not bundle.startswith(_BUNDLE_HEAD) or len(bundle) < 16:
            raise ValueError("only a bundle can be signed")
        counter = _counter_bytes(next(self._counter))
        mac = self.key.mac(bundle, self.session, counter)
        return b"".join((bundle, ELEMENT_HEAD, self.session, counter, mac))

    def sign_message(self, message: bytes) -> bytes:
        """``message`` in a bundle timetagged "immediately", signed (a clock ping or pong)."""
        return self.sign(_BUNDLE_HEAD + tt.to_bytes(tt.IMMEDIATELY) + _element(message))


def _element(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def is_signed(data: bytes) -> bool:
    """Whether ``data`` is a bundle that ends in a signature element (checked or not)."""
    return (
        len(data) >= _MIN_SIGNED
        and data.startswith(_BUNDLE_HEAD)
        and data[-ELEMENT_SIZE:-PAYLOAD_SIZE] == ELEMENT_HEAD
    )


@dataclass
class _Session:
    highest: int = 0
    seen: int = 0
    """Bit k set: counter ``highest − k`` was taken."""


class Verifier:
    """Checks signed bundles with one key and refuses replays; thread-safe.

    :meth:`open` is what a receive path calls with each bundle; :attr:`refused` counts what it
    refused, by reason (``bad-signature``, ``replayed``).
    """

    def __init__(
        self,
        key: Key,
        *,
        window: int = REPLAY_WINDOW,
        max_sessions: int = MAX_SESSIONS,
        max_sources: int = MAX_SOURCES,
        timetag_window: float = TIMETAG_WINDOW,
    ) -> None:
        self.key = key
        self.window = window
        self.max_sessions = max_sessions
        self.max_sources = max_sources
        self.timetag_window = timetag_window
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._newest: OrderedDict[object, int] = OrderedDict()
        self._lock = threading.Lock()
        self.refused: Counter[str] = Counter()
        self.accepted = 0

    def open(self, data: bytes, source: object = None) -> tuple[bytes, bool] | str:
        """``(bundle without its signature, True)`` for a genuine, fresh signed bundle;
        ``(data, False)`` for anything unsigned; else why it is refused (a drop reason).

        ``source`` (the sender's address) only scopes :data:`TIMETAG_WINDOW`.
        """
        if not is_signed(data):
            return data, False
        body = data[:-ELEMENT_SIZE]
        payload = data[-PAYLOAD_SIZE:]
        session = payload[:SESSION_SIZE]
        counter_bytes = payload[SESSION_SIZE : SESSION_SIZE + COUNTER_SIZE]
        if not self.key.matches(payload[-MAC_SIZE:], body, session, counter_bytes):
            return self._refuse("bad-signature")
        counter = int.from_bytes(counter_bytes, "big")
        stamp = tt.from_bytes(body[8:16])
        with self._lock:
            state = self._sessions.get(session)
            if state is None:
                newest = self._newest.get(source)
                if (
                    newest is not None
                    and stamp != tt.IMMEDIATELY
                    and tt.difference(newest, stamp) > self.timetag_window
                ):
                    self.refused["replayed"] += 1
                    return "replayed"
                state = self._sessions[session] = _Session()
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            else:
                self._sessions.move_to_end(session)
            if not self._take(state, counter):
                self.refused["replayed"] += 1
                return "replayed"
            if stamp != tt.IMMEDIATELY:
                newest = self._newest.get(source)
                if newest is None or tt.difference(stamp, newest) > 0:
                    self._newest[source] = stamp
                self._newest.move_to_end(source)
                while len(self._newest) > self.max_sources:
                    self._newest.popitem(last=False)
            self.accepted += 1
        return body, True

    def _take(self, state: _Session, counter: int) -> bool:
        if counter > state.highest:
            shift = counter - state.highest
            # A jump past the window forgets every bit: shifting by it would build an integer
            # of ``shift`` bits first (a counter of 2**62 from a peer with the key: MemoryError).
            seen = (state.seen << shift) if shift < self.window else 0
            state.seen = (seen | 1) & ((1 << self.window) - 1)
            state.highest = counter
            return True
        behind = state.highest - counter
        if behind >= self.window or state.seen >> behind & 1:
            return False
        state.seen |= 1 << behind
        return True

    def _refuse(self, reason: str) -> str:
        with self._lock:
            self.refused[reason] += 1
        return reason


class PacketAuth:
    """What one process signs and checks with its key: a :class:`Signer` for what it sends and
    a :class:`Verifier` for what it receives (``--key-file``, ``OSCSYNC_KEY``)."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.signer = Signer(key)
        self.verifier = Verifier(key)

    def sign(self, bundle: bytes) -> bytes:
        return self.signer.sign(bundle)

    def sign_bundles(self, packet: bytes) -> bytes:
        """A bundle signed; a plain message as it is (it has no timetag a follower could
        translate, and wrapping it would change what a patch receives)."""
        return self.signer.sign(packet) if packet.startswith(_BUNDLE_HEAD) else packet

    def sign_message(self, message: bytes) -> bytes:
        return self.signer.sign_message(message)

    def open(self, data: bytes, source: object = None) -> tuple[bytes, bool] | str:
        return self.verifier.open(data, source)
