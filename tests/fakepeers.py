"""Hostile clock peers for tests (issue #27 items 2 and 4), on loopback, on real sockets.

:class:`FakePeer` is one UDP socket with a thread that answers clock pings as the test likes:

* ``answer(seq, t1, now)`` returns the pong's T2 and T3 (NTP timetags), or None for no answer:
  a peer whose clock claims +9.2 years, steps by 10 s half way, or is frozen;
* ``relay_to`` forwards every ping to a real listener from this socket and hands the pong back
  to whoever pinged: a hop on the path, which ``forge`` turns into a forger who sees every ping
  and answers it first, from the address the follower pings (shared Wi-Fi, as issue #27 found).

Every ping it saw is counted in :attr:`FakePeer.pings`, every forged pong in :attr:`forged`.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

from oscsync.clock import SystemClock
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.sync.ping import encode_pong

Answer = Callable[[int, int, float], "tuple[int, int] | None"]
Forge = Callable[[int, int], "bytes | None"]


class FakePeer:
    """A loopback UDP peer answering (or relaying, or forging) clock pings; use with ``with``."""

    def __init__(
        self,
        *,
        answer: Answer | None = None,
        relay_to: tuple[str, int] | None = None,
        forge: Forge | None = None,
    ) -> None:
        self.answer = answer
        self.relay_to = relay_to
        self.forge = forge
        self.clock = SystemClock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.pings = 0
        self.forged = 0
        self._pinger: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fakepeer", daemon=True)

    def __enter__(self) -> FakePeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    @property
    def hostport(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            data, source = self.sock.recvfrom(65536)
            if self.relay_to is not None and source == self.relay_to:
                if self._pinger is not None:
                    self.sock.sendto(data, self._pinger)  # the real pong, handed back
                continue
            self._ping(data, source)

    def _ping(self, data: bytes, source: tuple[str, int]) -> None:
        now = self.clock.now()
        try:
            ping = codec.decode(data)[0]  # a signed ping is a bundle: its first message
            seq, t1 = int(ping.args[0]), int(ping.args[1])
        except (codec.DecodeError, IndexError, TypeError, ValueError):
            return
        self.pings += 1
        self._pinger = source
        if self.forge is not None:
            forged = self.forge(seq, t1)
            if forged is not None:
                self.forged += 1
                self.sock.sendto(forged, source)
        if self.relay_to is not None:
            self.sock.sendto(data, self.relay_to)
        if self.answer is not None:
            stamps = self.answer(seq, t1, now)
            if stamps is not None:
                self.sock.sendto(encode_pong(seq, t1, *stamps), source)


def claims(offset: Callable[[float], float]) -> Answer:
    """An answer whose clock reads ``offset(elapsed)`` seconds ahead of ours, ``elapsed`` the
    seconds since its first ping (T2 = T3: it answers at once)."""
    first: list[float] = []

    def answer(seq: int, t1: int, now: float) -> tuple[int, int]:
        if not first:
            first.append(now)
        stamp = tt.from_unix(now + offset(now - first[0]))
        return stamp, stamp

    return answer


def frozen() -> Answer:
    """An answer whose clock stopped: the same T2 and T3 in every pong."""
    stamp: list[int] = []

    def answer(seq: int, t1: int, now: float) -> tuple[int, int]:
        if not stamp:
            stamp.append(tt.from_unix(now))
        return stamp[0], stamp[0]

    return answer


def forged_pong(claim: float) -> Forge:
    """A forger's answer: the ping's SEQ and T1, and a clock ``claim`` seconds ahead of ours."""
    clock = SystemClock()

    def forge(seq: int, t1: int) -> bytes:
        stamp = tt.from_unix(clock.now() + claim)
        return encode_pong(seq, t1, stamp, stamp)

    return forge
