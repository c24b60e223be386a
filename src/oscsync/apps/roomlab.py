"""The room lab's network (issue #33): one leader, N followers, each follower behind a link of
its own, multicast on loopback; for ``benchmarks/room.py``.

``oscsync netem``'s :class:`~oscsync.apps.netem.Relay` is a NAT for one flow: what a leader
multicasts reaches every follower, and each follower's pings must come back through *its* link
only. :class:`RoomRelay` is that star:

* it joins the leader's group and copies every datagram the leader sends there to each
  follower's own group (follower ``i`` listens on a group of its own, so it is a multicast
  listener as in a real room), through follower ``i``'s downlink: delayed, jittered and lost as
  :class:`~oscsync.apps.netemlink.Impairment` draws, independently per follower (the harder case:
  on one Wi-Fi channel a multicast frame reaches everyone at once);
* follower ``i`` hears the leader at the address of its relay socket, so it pings, and reports
  its status, there; the relay carries those up follower ``i``'s uplink to the leader, and the
  leader's answers back down the same downlink.

One thread, one heap of datagrams due, no scheduler thread per link: the lab runs 64 followers
on two cores. It counts what each follower sends and gets on its own (its unicast traffic:
pings, pongs, reports), apart from the shared multicast copies, which on a real channel are one
frame for everyone.

A link of the lab must add its model's delays and nothing of its own: a Python thread adds
when it reads a datagram late and sends it late, and a delay that is not in the model is an
error the followers' clocks inherit. So a datagram's delay runs from the **kernel's receive
stamp** (``SO_TIMESTAMPNS``, where the platform has it: a relay busy with 64 copies of a sync
message reads the next datagram late, the stamp does not move), and the relay waits for the
last stretch before a due time with a precise sleep, not the selector (whose timeout Linux
counts in whole milliseconds, rounded up: up to 1 ms late on every datagram). Its thread asks
for real-time priority where the process installed a promoter (the benchmark does), so that it
does not wait for the CPU 64 follower processes want (without: 27 s behind at 64). What is
left is measured: :attr:`RoomRelay.noise` keeps how late each datagram was read and sent, and
how long the leader's own datagrams took from their send stamp (T3) to the kernel, so a run
says how much of its spread the lab itself may have added (``benchmarks/room.py``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import struct
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from oscsync import threads
from oscsync.apps.netemlink import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_LIMIT,
    HELD_OVERHEAD,
    Impairment,
    ImpairmentSpec,
    seeded_rng,
)
from oscsync.clock import Clock
from oscsync.net.hostport import HostPort
from oscsync.net.udpsocket import (
    HAS_RECVMSG,
    MAX_DATAGRAM,
    SO_TIMESTAMPNS,
    TIMESPEC,
    set_recv_buffer,
)
from oscsync.osc import timetag as tt
from oscsync.realtime import Breather
from oscsync.stats import RecentSamples

LOOPBACK = "127.0.0.1"
_RECV_BUFFER = 4 * 1024 * 1024
PRECISE = 0.002
"""Seconds before a due time from which the relay sleeps precisely instead of waiting on the
selector (whose timeout is whole milliseconds, rounded up); arrivals meanwhile wait in the
kernel with their stamps."""
PINGS_KEPT = 20_000
"""Pings whose stamps each link keeps (:attr:`FollowerLink.pings`)."""
COUNTS_KEPT = 3_600
"""Once-a-second counts each link keeps (:attr:`FollowerLink.counts_at`): the last hour."""
NOISE_SAMPLES = 100_000
"""Values kept per kind of :attr:`RoomRelay.noise` (the most recent)."""
_SYNC_HEAD = b"/oscsync/clock/sync\x00,iit\x00\x00\x00\x00"
_PONG_ADDRESS = b"/oscsync/clock/pong\x00"
_PING_HEAD = b"/oscsync/clock/ping\x00,it\x00"


@dataclass
class RelayNoise:
    """What the lab's relay itself adds, in seconds (each the most recent values)."""

    read_late: RecentSamples = field(default_factory=lambda: RecentSamples(NOISE_SAMPLES))
    """From the kernel's receive stamp to the relay reading the datagram (0 without stamps:
    then this delay is added to the link's, unmeasured)."""
    sent_late: RecentSamples = field(default_factory=lambda: RecentSamples(NOISE_SAMPLES))
    """From a datagram's due time to its ``sendto`` returning, the leader's multicast copies
    (sync messages and ticks) to the followers."""
    sent_late_answers: RecentSamples = field(default_factory=lambda: RecentSamples(NOISE_SAMPLES))
    """The same for the leader's unicast answers (pongs) to a follower."""
    sent_late_up: RecentSamples = field(default_factory=lambda: RecentSamples(NOISE_SAMPLES))
    """The same for the followers' pings and reports up to the leader."""
    leader_sync: RecentSamples = field(default_factory=lambda: RecentSamples(NOISE_SAMPLES))
    """From a sync message's T3 (the leader's clock, the relay's too) to its kernel stamp
    here: how long the leader took to send it after reading its clock."""
    leader_pong: RecentSamples = field(default_factory=lambda: RecentSamples(NOISE_SAMPLES))
    """The same for the leader's pongs."""


@dataclass
class FollowerLink:
    """One follower's link: its socket on the relay, its group, its two directions, counts."""

    index: int
    group: HostPort
    sock: socket.socket
    down: Impairment
    up: Impairment
    pinger: tuple[str, int] | None = None
    """Where the follower's unicast datagrams come from (its pinger socket): pongs go there."""
    up_packets: int = 0
    """Datagrams the follower sent (pings, reports)."""
    down_unicast: int = 0
    """Datagrams the leader sent to this follower alone (pongs)."""
    down_multicast: int = 0
    lost: int = 0
    counts_at: deque[tuple[float, int, int]] = field(
        default_factory=lambda: deque(maxlen=COUNTS_KEPT)
    )
    """(our monotonic time, up_packets, down_unicast), once a second (the last
    :data:`COUNTS_KEPT`): the rate over any span."""
    pings: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=PINGS_KEPT))
    """(arrival here, wall seconds; the ping's T1, the follower's wall seconds) of its recent
    pings: whoever knows the follower's clock learns how long it took from T1 to the wire."""


class RoomRelay:
    """The lab's star network (see the module docstring); :meth:`start`, then :meth:`close`."""

    def __init__(
        self,
        leader_group: HostPort,
        follower_groups: Sequence[HostPort],
        spec: ImpairmentSpec,
        *,
        clock: Clock,
        seed: int | None = 1,
        precise: bool = True,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
    ) -> None:
        self.clock = clock
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        """What the datagrams waiting for their due time may be at most, as ``oscsync netem``'s
        delay queue (items, and bytes with :data:`HELD_OVERHEAD` each); a copy beyond is lost."""
        self.queue_full = 0
        """Copies dropped because the queue was full (each also in its link's ``lost``)."""
        self._due_bytes = 0
        self.spec = spec
        self.precise = precise
        """False: the relay as first written, for comparison (no kernel stamps, the selector
        alone waits for due times)."""
        self.leader: tuple[str, int] | None = None
        """The leader's address: the source of what arrives on its group."""
        self._selector = selectors.DefaultSelector()
        self._stamped = precise and HAS_RECVMSG and SO_TIMESTAMPNS is not None
        self._group_sock = _group_listener(leader_group)
        self._selector.register(self._group_sock, selectors.EVENT_READ, None)
        self.links: list[FollowerLink] = []
        for index, group in enumerate(follower_groups):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            set_recv_buffer(sock, _RECV_BUFFER)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)  # never off this host
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.bind((LOOPBACK, 0))
            sock.setblocking(False)
            self._stamp(sock)
            tag = None if seed is None else seed * 1000 + index
            link = FollowerLink(
                index,
                group,
                sock,
                Impairment(spec, seeded_rng(tag, "forward")),
                Impairment(spec, seeded_rng(tag, "reverse")),
            )
            self.links.append(link)
            self._selector.register(sock, selectors.EVENT_READ, link)
        self._due: list[
            tuple[float, int, socket.socket, bytes, tuple[str, int], RecentSamples]
        ] = []
        self._order = itertools.count()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread: threading.Thread | None = None
        self._stamp(self._group_sock)
        self.noise = RelayNoise()
        self.realtime = False
        """Whether the relay's thread got real-time priority."""

    def _stamp(self, sock: socket.socket) -> None:
        """Ask the kernel to stamp each datagram's arrival on ``sock`` (where it can)."""
        if self._stamped and SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                self._stamped = False

    @property
    def lateness_max(self) -> float:
        """The latest a datagram left after its due time (seconds): the relay's own jitter."""
        noise = self.noise
        kinds = (noise.sent_late, noise.sent_late_answers, noise.sent_late_up)
        return max(0.0, *(kept.maximum for kept in kinds))

    def link_address(self, index: int) -> HostPort:
        """Where follower ``index`` hears the leader from."""
        host, port = self.links[index].sock.getsockname()[:2]
        return HostPort(host, port)

    def start(self) -> None:
        self._thread = threads.daemon_thread(self._run, name="oscsync-room-relay")
        threads.start(self._thread)

    def _carry(
        self,
        impairment: Impairment,
        sock: socket.socket,
        data: bytes,
        to: tuple[str, int],
        now: float,
        late: RecentSamples,
    ) -> bool:
        """Queue ``data``'s copies as ``impairment`` decides; False when none was queued (lost
        on the link, or the queue full)."""
        queued = False
        cost = len(data) + HELD_OVERHEAD
        for delay in impairment.decide():
            if len(self._due) >= self.queue_limit or self._due_bytes + cost > self.queue_bytes:
                self.queue_full += 1
                continue
            heapq.heappush(self._due, (now + delay, next(self._order), sock, data, to, late))
            self._due_bytes += cost
            queued = True
        return queued

    def _run(self) -> None:
        clock = self.clock
        # A link is the one part of the lab that must not wait for the CPU (64 followers ask
        # for most of two cores): real-time priority where a promoter grants it (the
        # benchmark installs one), resting as the scheduler does when it runs too long.
        self.realtime = threads.promote(threads.TIMER)
        breather = Breather(clock, enabled=self.realtime)
        next_count = clock.monotonic()
        due = self._due
        while not self._stop.is_set():
            breather.check()
            now = clock.monotonic()
            while due and due[0][0] <= now:  # what is due first, then what arrived
                when, _, sock, data, to, late = heapq.heappop(due)
                self._due_bytes -= len(data) + HELD_OVERHEAD
                with contextlib.suppress(OSError):  # a follower gone: lost, as on a network
                    sock.sendto(data, to)
                late.add(clock.monotonic() - when)
            wait = due[0][0] - now if due else 0.5
            # Far from a due time the selector waits (whole ms, rounded up: it wakes at least
            # 1 ms early); close to one it only looks, and a precise sleep does the rest.
            if not self.precise:
                timeout = min(max(wait, 0.0), 0.5)
            else:
                timeout = 0.0 if wait <= PRECISE else min(wait - PRECISE, 0.5)
            waiting = clock.monotonic()
            ready = self._selector.select(timeout)
            breather.waited(waiting)
            for key, _ in ready:
                if key.data == "wake":
                    return
                self._drain(key.fileobj, key.data)  # type: ignore[arg-type]
            if self.precise and due and timeout == 0.0:
                waiting = clock.monotonic()
                rest = due[0][0] - waiting
                if rest > 0:
                    clock.sleep(rest)
                    breather.waited(waiting)
            if now >= next_count:
                next_count = now + 1.0
                for link in self.links:
                    link.counts_at.append((now, link.up_packets, link.down_unicast))

    def _receive(self, sock: socket.socket) -> tuple[bytes, tuple[str, int], float]:
        """One datagram, its source and when it arrived (our monotonic time: the kernel's
        stamp where there is one, else now)."""
        clock = self.clock
        if self._stamped:
            data, ancillary, _, source = sock.recvmsg(
                MAX_DATAGRAM, socket.CMSG_SPACE(TIMESPEC.size)
            )
            now = clock.monotonic()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = TIMESPEC.unpack_from(payload)
                    wall = clock.system_time_to_wall(seconds + nanoseconds * 1e-9)
                    if wall is not None:
                        arrived = clock.wall_to_monotonic(wall)
                        self.noise.read_late.add(now - arrived)
                        return data, source, min(arrived, now)
            return data, source, now
        data, source = sock.recvfrom(MAX_DATAGRAM)
        return data, source, clock.monotonic()

    def _leader_stamp(self, data: bytes, arrived: float) -> None:
        """How long the leader took from its send stamp (T3) to the wire (same clock)."""
        if data.startswith(_SYNC_HEAD) and len(data) >= len(_SYNC_HEAD) + 16:
            kept, offset = self.noise.leader_sync, len(_SYNC_HEAD) + 8
        elif data.startswith(_PONG_ADDRESS) and len(data) >= 56:
            kept, offset = self.noise.leader_pong, 48  # ,ittt(f) SEQ T1 T2 T3: T3 at 48
        else:
            return
        t3 = int.from_bytes(data[offset : offset + 8], "big")
        with contextlib.suppress(tt.TimetagError, ValueError, OverflowError):
            kept.add(arrived - self.clock.wall_to_monotonic(tt.to_unix(t3)))

    def _drain(self, sock: socket.socket, link: FollowerLink | None) -> None:
        noise = self.noise
        while True:
            try:
                data, source, now = self._receive(sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if link is None or source == self.leader:
                self._leader_stamp(data, now)
            if link is None:  # the leader's multicast: a copy down every follower's link
                self.leader = source
                for each in self.links:
                    each.down_multicast += 1
                    if not self._carry(
                        each.down, each.sock, data, each.group.sockaddr, now, noise.sent_late
                    ):
                        each.lost += 1
            elif source == self.leader:  # the leader's answer to this follower alone
                link.down_unicast += 1
                if link.pinger is not None and not self._carry(
                    link.down, link.sock, data, link.pinger, now, noise.sent_late_answers
                ):
                    link.lost += 1
            elif self.leader is not None:  # the follower's ping or report, up to the leader
                link.pinger = source
                link.up_packets += 1
                if data.startswith(_PING_HEAD) and len(data) >= len(_PING_HEAD) + 12:
                    t1 = int.from_bytes(data[len(_PING_HEAD) + 4 : len(_PING_HEAD) + 12], "big")
                    with contextlib.suppress(tt.TimetagError, ValueError, OverflowError):
                        link.pings.append((self.clock.monotonic_to_wall(now), tt.to_unix(t1)))
                if not self._carry(link.up, link.sock, data, self.leader, now, noise.sent_late_up):
                    link.lost += 1

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(2.0)
        self._selector.close()
        for sock in (self._group_sock, self._wake_r, self._wake_w):
            sock.close()
        for link in self.links:
            link.sock.close()


def _group_listener(group: HostPort) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    set_recv_buffer(sock, _RECV_BUFFER)
    sock.bind(group.sockaddr)
    membership = struct.pack("4s4s", socket.inet_aton(group.host), socket.inet_aton(LOOPBACK))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock
