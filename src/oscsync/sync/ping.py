"""Clock pings: how far a peer's clock is from ours, measured NTP style over OSC.

Forward synchronisation only removes jitter if the two clocks agree better than the jitter
(Schmeder & Freed 2008). This module measures the disagreement with NTP's on-wire exchange
(RFC 5905 §8), carried in two OSC messages (``docs/protocol.md``):

* the client sends ``/oscsync/clock/ping ,it SEQ T1`` (T1: its clock when sending);
* any oscsync listener answers ``/oscsync/clock/pong ,ittt SEQ T1 T2 T3`` (T2: its clock when the
  ping arrived, T3: its clock when answering), and a listener that plays sounds adds
  ``PLAYOUT`` (``,itttf``): the seconds its player needs before a timetag to place a sound on
  time (output latency + one block), which ``--offset auto`` adds to the network's delay;
* the client stamps the pong's arrival T4 on its own clock.

Then ``offset = ((T2 − T1) + (T3 − T4)) / 2`` (peer minus us) and
``delay = (T4 − T1) − (T3 − T2)`` (the round trip spent on the network). Whatever the split of
the round trip between the two directions, the true offset lies within ``delay / 2`` of the
estimate, so that is the error bound. A sample that met a queue on the way has a large delay and
probably a large asymmetry too, so, like NTP's clock filter (RFC 5905 §10), the estimate uses the
sample with the **smallest delay** among the most recent ones, each sample's bound growing with
its age at :data:`DRIFT_TOLERANCE` (ties go to the newest).

Timestamps stay NTP integers until they are differenced, so no precision is lost to floats of
Unix seconds.
"""

from __future__ import annotations

import functools
import itertools
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oscsync.clock import Clock
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Method
from oscsync.stats import percentile

if TYPE_CHECKING:
    from oscsync.net.hostport import HostPort
    from oscsync.net.udp import Endpoint
    from oscsync.osc.auth import PacketAuth
    from oscsync.osc.routing import Received

PING = "/oscsync/clock/ping"
PONG = "/oscsync/clock/pong"

FILTER_SIZE = 8
"""How many recent samples the clock filter chooses from (NTP's clock filter keeps 8)."""

DRIFT_TOLERANCE = 15e-6
"""Seconds per second two clocks are assumed to drift apart at most (NTP's PHI, 15 ppm): an old
sample's error bound grows by this much per second of age, so a fresh one can beat it."""

MAX_OUTSTANDING = 256
"""Pings waiting for an answer that are remembered; older ones are forgotten (counted lost)."""


class ClockSyncError(ValueError):
    """A ping or pong that does not have the documented arguments."""


# -- the wire ---------------------------------------------------------------------------------


def _osc_string(text: str) -> bytes:
    raw = text.encode("ascii") + b"\x00"
    return raw + b"\x00" * (-len(raw) % 4)


def encode_ping(seq: int, t1: int) -> bytes:
    """``/oscsync/clock/ping ,it SEQ T1`` (written here: python-osc's builder has no ``t``)."""
    return _osc_string(PING) + _osc_string(",it") + struct.pack(">iQ", int32(seq), t1)


def encode_pong(seq: int, t1: int, t2: int, t3: int, playout: float | None = None) -> bytes:
    """``/oscsync/clock/pong ,ittt SEQ T1 T2 T3``, or ``,itttf ... PLAYOUT`` with the answering
    listener's playout latency in seconds (an optional trailing argument: docs/protocol.md)."""
    if playout is None:
        return (
            _osc_string(PONG) + _osc_string(",ittt") + struct.pack(">iQQQ", int32(seq), t1, t2, t3)
        )
    return (
        _osc_string(PONG)
        + _osc_string(",itttf")
        + struct.pack(">iQQQf", int32(seq), t1, t2, t3, playout)
    )


MAX_PLAYOUT = 1.0
"""A pong's PLAYOUT above this many seconds (or negative, or not finite) is not believed: a
sound card's output latency plus a block is milliseconds; a forged pong must not make ``--offset
auto`` choose seconds."""


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong's arguments: the exchange's timestamps and the peer's playout latency (0 when it
    sent none)."""

    seq: int
    t1: int
    t2: int
    t3: int
    playout: float = 0.0


def parse_pong(received: Received) -> Pong:
    """The pong in ``received``: ``,ittt`` or ``,itttf``; arguments after those are ignored
    (room for a signature). Raises :class:`ClockSyncError` for anything else."""
    types, args = received.message.types, received.args
    if not types.startswith("ittt") or len(args) < 4:
        raise ClockSyncError(f"{PONG} must carry ,ittt or ,itttf (got ,{types})")
    try:
        seq, t1, t2, t3 = (int(value) for value in args[:4])
    except (TypeError, ValueError):
        raise ClockSyncError(f"{PONG} has arguments that are not numbers") from None
    playout = 0.0
    if types[4:5] == "f":
        value = float(args[4])
        if not 0.0 <= value <= MAX_PLAYOUT:  # NaN too
            raise ClockSyncError(f"{PONG} playout latency {value!r} s is not believable")
        playout = value
    return Pong(seq, t1, t2, t3, playout)


def int32(value: int) -> int:
    """``value`` wrapped into a signed 32-bit OSC int (sequence numbers wrap around)."""
    return (value + 2**31) % 2**32 - 2**31


def _expect(args: tuple[object, ...], types: str, wanted: str, what: str) -> None:
    if types != wanted or len(args) != len(wanted):
        raise ClockSyncError(f"{what} must carry ,{wanted} (got ,{types})")


def pong_for(received: Received, clock: Clock, playout: float | None = None) -> bytes:
    """The answer to a ping that arrived as ``received``: T2 is its arrival, T3 is now; with
    ``playout`` (a listener with a player) its playout latency too."""
    _expect(received.args, received.message.types, "it", PING)
    seq, t1 = received.args
    t2 = tt.from_unix(received.arrival)
    return encode_pong(int(seq), int(t1), t2, clock.now_timetag(), playout)


PONGS_PER_SECOND = 250.0
"""Pongs a second one source can get (a follower pings 200 a second for its first 5 s, then
100)."""
PONG_BURST = 40.0
"""Pongs a source can get at once before the rate applies (the follower's start burst: 20)."""
PONGS_PER_SECOND_TOTAL = 5000.0
"""Pongs a second over all sources, so spoofed source addresses cannot multiply the limit; room
for 50 followers pinging 100 a second (280 kB/s of pongs at most)."""
MAX_PING_SOURCES = 1024
"""Sources whose pong budget is remembered; the least recently heard is forgotten first."""


class PingResponder:
    """Answers ``/oscsync/clock/ping`` for one endpoint, and never more than it was asked.

    A ping costs the sender 36 bytes and may come from a forged source address, so it must not
    be a lever (issue #20 item 6: one 65 KB bundle of 1,637 pings got 1,637 pongs, ~30,000 pongs/s
    to anyone): **one pong per datagram** (the messages of one datagram share their source and
    arrival stamp), a token bucket per source (:data:`PONGS_PER_SECOND`, :data:`PONG_BURST`), one
    over all sources (:data:`PONGS_PER_SECOND_TOTAL`), and at most :data:`MAX_PING_SOURCES`
    buckets. What is not answered is counted (``clock-ping-extra``, ``clock-ping-rate``).

    With a key (``auth``) a signed ping that checked is answered with a signed pong, its MAC over
    the ping's SEQ and T1 (so it answers that ping only, which the follower holds outstanding);
    an unsigned ping gets an unsigned pong, as an NTP server with keys still answers plain
    requests: the client decides what it trusts.
    """

    def __init__(
        self,
        *,
        rate: float = PONGS_PER_SECOND,
        burst: float = PONG_BURST,
        total_rate: float = PONGS_PER_SECOND_TOTAL,
        max_sources: int = MAX_PING_SOURCES,
        auth: PacketAuth | None = None,
        playout: Callable[[], float | None] | None = None,
    ) -> None:
        self.auth = auth
        self.rate, self.burst, self.total_rate = rate, burst, total_rate
        self.playout = playout
        """The listener's playout latency, sent in each pong when it returns a number (None:
        pongs without it)."""
        self.max_sources = max_sources
        self._buckets: OrderedDict[tuple[str, int], tuple[float, float]] = OrderedDict()
        self._total: tuple[float, float] | None = None
        self._last: tuple[tuple[str, int], float] | None = None
        self._lock = threading.Lock()

    def allow(self, source: tuple[str, int], arrival: float, now: float) -> str | None:
        """None if a ping from ``source`` that arrived at ``arrival`` may be answered at our
        monotonic time ``now``; else the drop reason."""
        with self._lock:
            if self._last == (source, arrival):
                return "clock-ping-extra"
            self._last = (source, arrival)
            tokens, since = self._buckets.pop(source, (self.burst, now))
            tokens = min(self.burst, tokens + (now - since) * self.rate)
            total, total_since = self._total or (self.total_rate, now)
            total = min(self.total_rate, total + (now - total_since) * self.total_rate)
            answered = tokens >= 1.0 and total >= 1.0
            if answered:
                tokens -= 1.0
                total -= 1.0
            self._buckets[source] = (tokens, now)
            self._total = (total, now)
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
            return None if answered else "clock-ping-rate"

    def service(self, endpoint: Endpoint, received: Received) -> None:
        """The endpoint service for ``/oscsync/clock/ping``."""
        try:
            playout = None if self.playout is None else self.playout()
            if playout is not None:
                # A client drops a pong whose PLAYOUT is over MAX_PLAYOUT (or negative, or NaN)
                # whole, clock sample and all: say the most it believes instead.
                playout = min(playout, MAX_PLAYOUT) if playout >= 0.0 else None
            data = pong_for(received, endpoint.clock, playout)
        except (ClockSyncError, tt.TimetagError):
            endpoint.stats.drops["bad-clock-ping"] += 1
            return
        refused = self.allow(received.source, received.arrival, endpoint.clock.monotonic())
        if refused is not None:
            endpoint.stats.drops[refused] += 1
            return
        if self.auth is not None and received.authenticated:
            data = self.auth.sign_message(data)
        endpoint.answer(received, data)


def answer_ping(endpoint: Endpoint, received: Received) -> None:
    """Answer one ping without limits (tests and tools that meter pings themselves)."""
    try:
        data = pong_for(received, endpoint.clock)
    except (ClockSyncError, tt.TimetagError):
        endpoint.stats.drops["bad-clock-ping"] += 1
        return
    endpoint.answer(received, data)


def standard_services(
    auth: PacketAuth | None = None,
) -> dict[str, Callable[[Endpoint, Received], None]]:
    """Services every oscsync listener offers (:func:`oscsync.apps.endpoints.open_endpoint`
    registers them); each call makes a fresh :class:`PingResponder`, so every endpoint has its
    own budgets. What each answers to is in :data:`SERVICE_METHODS`."""
    return {PING: PingResponder(auth=auth).service}


SERVICE_METHODS = {
    PING: Method(
        PING,
        "it",
        "clock ping (SEQ, T1); answered with /oscsync/clock/pong SEQ T1 T2 T3 (docs/protocol.md)",
    ),
}
"""How OSCQuery describes :func:`standard_services`' addresses (type tags, one line)."""

PONG_METHOD = Method(
    PONG,
    "ittt",
    "clock pong (SEQ, T1, T2, T3): the answer to this endpoint's own ping, used only from the "
    "peer it pinged and only for a ping it sent",
)
"""How OSCQuery describes the pong handler of an endpoint that pings (a clock follower,
``--offset auto``): registered by whoever pings, never by the transport."""


MAX_TURNAROUND = 1.0
"""Seconds a peer may take between a ping's arrival and its pong (T3 − T2): oscsync answers in
microseconds; more is a forgery or a broken peer."""
MAX_ROUND_TRIP = 10.0
"""A pong later than this is not a clock sample (its ping was long forgotten)."""


def exchange_problem(t1: int, t2: int, t3: int, t4: int) -> str | None:
    """Why the four timestamps of an exchange cannot be real (a drop reason), or None.

    T1 and T4 are ours, T2 and T3 the peer's (NTP timetags). Huge values pass the wire but fail
    here: a turnaround or round trip outside what a network can do.
    """
    turnaround = tt.difference(t3, t2)
    round_trip = tt.difference(t4, t1)
    if round_trip < 0:
        return "pong-before-ping"
    if turnaround < 0:
        return "negative-turnaround"
    if turnaround > MAX_TURNAROUND:
        return "slow-turnaround"
    if round_trip > MAX_ROUND_TRIP:
        return "slow-pong"
    if turnaround > round_trip:
        return "turnaround-longer-than-round-trip"
    return None


# -- estimation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One ping/pong exchange: the four NTP timestamps (T1, T4 ours; T2, T3 the peer's)."""

    t1: int
    t2: int
    t3: int
    t4: int

    @property
    def offset(self) -> float:
        """Seconds the peer's clock is ahead of ours (negative: behind)."""
        return (tt.difference(self.t2, self.t1) + tt.difference(self.t3, self.t4)) / 2

    @property
    def delay(self) -> float:
        """Round-trip seconds spent between the clocks (the peer's turnaround removed)."""
        return tt.difference(self.t4, self.t1) - tt.difference(self.t3, self.t2)

    @property
    def error_bound(self) -> float:
        """The true offset is within this many seconds of :attr:`offset` (half the delay)."""
        return max(self.delay, 0.0) / 2


@dataclass(frozen=True, slots=True)
class Estimate:
    """The clock filter's answer: the minimum-delay sample among the recent ones, and context."""

    offset: float
    """Seconds the peer's clock is ahead of ours."""
    delay: float
    """Round trip of the chosen sample, seconds."""
    error_bound: float
    """The true offset is within this many seconds of :attr:`offset`."""
    samples: int
    """How many samples the filter chose from."""
    median_delay: float
    jitter: float
    """RMS difference between the chosen offset and the other samples' (NTP's peer jitter)."""

    def to_local(self, peer_timetag: int) -> int:
        """A timetag written on the peer's clock, translated onto ours."""
        if peer_timetag == tt.IMMEDIATELY:
            return peer_timetag
        return tt.add_seconds(peer_timetag, -self.offset)

    def describe(self) -> str:
        side = "ahead of" if self.offset >= 0 else "behind"
        return (
            f"offset {self.offset * 1e3:+.3f} ms ± {self.error_bound * 1e3:.3f} ms "
            f"(peer {side} us), round trip {self.delay * 1e3:.3f} ms "
            f"(min of {self.samples}; median {self.median_delay * 1e3:.3f} ms)"
        )


def choose(
    samples: Iterable[Sample], now: int | None = None, drift_tolerance: float = DRIFT_TOLERANCE
) -> Estimate | None:
    """NTP's clock filter in its simplest form: trust the sample with the smallest error bound.

    A sample's bound is half its delay plus ``drift_tolerance`` times its age (seconds from its
    T4 to ``now``, our timetag; the newest sample's T4 when not given).
    """
    kept = list(samples)
    if not kept:
        return None
    if now is None:
        now = max(sample.t4 for sample in kept)

    def bound(sample: Sample) -> float:
        age = max(0.0, tt.difference(now, sample.t4))
        return sample.error_bound + drift_tolerance * age

    best = min(reversed(kept), key=bound)  # reversed: on a tie, the newest wins
    delays = sorted(sample.delay for sample in kept)
    jitter = (sum((s.offset - best.offset) ** 2 for s in kept) / len(kept)) ** 0.5
    return Estimate(
        offset=best.offset,
        delay=best.delay,
        error_bound=bound(best),
        samples=len(kept),
        median_delay=delays[len(delays) // 2],
        jitter=jitter,
    )


class ClockSync:
    """The client side: sends pings through ``send``, takes pongs, keeps the clock filter.

    ``send`` is whatever reaches the peer (``endpoint.send_bytes`` for a ``--peer``, or an
    ``endpoint.reply`` to the address ticks come from). Pongs are fed to :meth:`on_pong`, usually
    by registering it as the endpoint's ``/oscsync/clock/pong`` service. Thread-safe: pings go out
    on one thread while pongs arrive on the receive thread.
    """

    def __init__(
        self,
        clock: Clock,
        send: Callable[[bytes], object],
        *,
        filter_size: int = FILTER_SIZE,
        auth: PacketAuth | None = None,
    ) -> None:
        if filter_size < 1:
            raise ValueError("filter_size must be at least 1")
        self.clock = clock
        self.auth = auth
        """With a key: pings are signed and only authenticated pongs are taken."""
        self._send = send
        self._seq = itertools.count(1)
        self._outstanding: dict[int, int] = {}
        self._recent: deque[Sample] = deque(maxlen=filter_size)
        self._lock = threading.Lock()
        self.answered = threading.Condition(self._lock)
        self.sent = 0
        self.received = 0
        self.ignored = 0
        self.playout = 0.0
        """The peer's playout latency from its last genuine pong (0: it sent none)."""

    def ping(self) -> int:
        """Send one ping; return its sequence number."""
        seq = int32(next(self._seq))
        t1 = self.clock.now_timetag()
        with self._lock:
            if len(self._outstanding) >= MAX_OUTSTANDING:
                self._outstanding.pop(next(iter(self._outstanding)))
            self._outstanding[seq] = t1
            self.sent += 1
        data = encode_ping(seq, t1)
        self._send(data if self.auth is None else self.auth.sign_message(data))
        return seq

    def on_pong(self, received: Received) -> Sample | None:
        """Take a pong; a stray, duplicated, malformed, impossible (:func:`exchange_problem`)
        or (with a key) unauthenticated one is ignored (and counted)."""
        if self.auth is not None and not received.authenticated:
            with self._lock:
                self.ignored += 1
            return None
        try:
            pong = parse_pong(received)
            seq, t1, t2, t3 = pong.seq, pong.t1, pong.t2, pong.t3
            t4 = tt.from_unix(received.arrival)
        except (ClockSyncError, tt.TimetagError, TypeError, ValueError):
            with self._lock:
                self.ignored += 1
            return None
        with self._lock:
            # Only the T1 we sent counts: a pong echoing anything else is stale or forged.
            if self._outstanding.get(seq) != t1:
                self.ignored += 1
                return None
            del self._outstanding[seq]
            if exchange_problem(t1, t2, t3, t4) is not None:
                # A turnaround longer than the round trip makes the delay negative, the error
                # bound 0: the filter would trust it above every real sample.
                self.ignored += 1
                return None
            sample = Sample(t1, t2, t3, t4)
            self._recent.append(sample)
            self.playout = pong.playout
            self.received += 1
            self.answered.notify_all()
        return sample

    def service(self, endpoint: Endpoint, received: Received) -> None:
        """:meth:`on_pong` in the shape of an endpoint service."""
        self.on_pong(received)

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._recent)

    def estimate(self) -> Estimate | None:
        """The current estimate (None before the first answer)."""
        return choose(self.samples(), self.clock.now_timetag())

    def wait_for_answers(self, count: int, timeout: float) -> bool:
        """Block until ``count`` pongs have been taken in total, or ``timeout`` (real) seconds."""
        with self._lock:
            return self.answered.wait_for(lambda: self.received >= count, timeout)

    def measure(self, count: int, interval: float, timeout: float) -> Estimate | None:
        """Send ``count`` pings ``interval`` apart, wait up to ``timeout`` for the last answers."""
        start = self.received
        begin = self.clock.monotonic()
        for k in range(count):
            if k:
                self.clock.sleep(begin + k * interval - self.clock.monotonic())
            self.ping()
        self.wait_for_answers(start + count, timeout)
        return self.estimate()


# -- choosing a forward offset ----------------------------------------------------------------

OFFSET_MARGIN = 0.005
"""Added to the measured worst one-way delay: covers scheduling on both ends and the odd packet
slower than any the pings met."""


@dataclass(frozen=True, slots=True)
class OffsetChoice:
    """``metronome send --offset auto``: the offset and the measurements behind it."""

    offset: float
    one_way_p50: float
    one_way_p99: float
    clock_error: float
    samples: int
    playout: float = 0.0
    """The peer's playout latency (output latency + one block) from its pongs; 0 if it sent
    none (a listener without a sound card, an older oscsync, Pure Data)."""

    def describe(self) -> str:
        playout = f"+ playout {self.playout * 1e3:.2f} ms " if self.playout else ""
        return (
            f"offset auto: {self.offset * 1e3:.1f} ms = one-way delay p99 "
            f"{self.one_way_p99 * 1e3:.2f} ms + clock error {self.clock_error * 1e3:.2f} ms "
            f"{playout}+ margin {OFFSET_MARGIN * 1e3:g} ms (median delay "
            f"{self.one_way_p50 * 1e3:.2f} ms, {self.samples} pings)"
        )


def one_way_delays(samples: Iterable[Sample], estimate: Estimate) -> list[float]:
    """Each sample's outbound delay (our T1 to the peer's T2), with the peer's clock offset out."""
    return [tt.difference(s.t2, s.t1) - estimate.offset for s in samples]


def choose_offset(
    samples: list[Sample], margin: float = OFFSET_MARGIN, playout: float = 0.0
) -> OffsetChoice | None:
    """A forward offset long enough for (nearly) every tick to arrive before its timetag and
    still be placed on time by the peer's player.

    The outbound delay of each ping is known once the clock offset is (to within the estimate's
    error bound); the offset is its 99th percentile, plus that error, plus the peer's
    ``playout`` latency (output latency + one block, from its pongs), plus ``margin``.
    """
    estimate = choose(samples, drift_tolerance=0.0)
    if estimate is None:
        return None
    delays = sorted(one_way_delays(samples, estimate))
    p99 = percentile(delays, 0.99)
    p50 = delays[len(delays) // 2]
    offset = max(0.0, p99) + estimate.error_bound + playout + margin
    return OffsetChoice(offset, p50, p99, estimate.error_bound, len(delays), playout)


class PeerClocks:
    """One :class:`ClockSync` per peer: several peers' clocks may disagree, so their samples
    must not share a filter (nor may one peer's fast pong consume the ping meant for another).
    Pongs are routed by their source address; register :meth:`service` for :data:`PONG`.
    """

    def __init__(
        self,
        clock: Clock,
        endpoint: Endpoint,
        peers: Iterable[HostPort],
        *,
        filter_size: int = FILTER_SIZE,
        auth: PacketAuth | None = None,
    ) -> None:
        self.syncs = {
            peer: ClockSync(
                clock,
                functools.partial(endpoint.send_bytes, peers=[peer]),
                filter_size=filter_size,
                auth=auth,
            )
            for peer in peers
        }
        self._by_source = {peer.sockaddr: sync for peer, sync in self.syncs.items()}

    def service(self, endpoint: Endpoint, received: Received) -> None:
        sync = self._by_source.get(received.source)
        if sync is not None:
            sync.on_pong(received)

    def choose_offset(
        self, count: int, interval: float, timeout: float
    ) -> tuple[OffsetChoice | None, list[HostPort]]:
        """Measure each peer in turn; the offset that covers the slowest, and who never answered."""
        choices: list[OffsetChoice] = []
        silent: list[HostPort] = []
        for peer, sync in self.syncs.items():
            sync.measure(count, interval, timeout)
            choice = choose_offset(sync.samples(), playout=sync.playout)
            if choice is None:
                silent.append(peer)
            else:
                choices.append(choice)
        return max(choices, key=lambda choice: choice.offset, default=None), silent
