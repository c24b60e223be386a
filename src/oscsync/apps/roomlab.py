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
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from oscsync import threads
from oscsync.apps.netemlink import Impairment, ImpairmentSpec, seeded_rng
from oscsync.clock import Clock
from oscsync.net.hostport import HostPort
from oscsync.net.udpsocket import MAX_DATAGRAM, set_recv_buffer

LOOPBACK = "127.0.0.1"
_RECV_BUFFER = 4 * 1024 * 1024


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
    counts_at: list[tuple[float, int, int]] = field(default_factory=list)
    """(our monotonic time, up_packets, down_unicast), once a second: the rate over any span."""


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
    ) -> None:
        self.clock = clock
        self.spec = spec
        self.leader: tuple[str, int] | None = None
        """The leader's address: the source of what arrives on its group."""
        self._selector = selectors.DefaultSelector()
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
        self._due: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._order = itertools.count()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread: threading.Thread | None = None
        self.lateness_max = 0.0
        """The latest a datagram left after its due time (seconds): the relay's own jitter."""

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
    ) -> bool:
        delays = impairment.decide()
        for delay in delays:
            heapq.heappush(self._due, (now + delay, next(self._order), sock, data, to))
        return bool(delays)

    def _run(self) -> None:
        clock = self.clock
        next_count = clock.monotonic()
        while not self._stop.is_set():
            now = clock.monotonic()
            timeout = 0.5 if not self._due else max(0.0, self._due[0][0] - now)
            for key, _ in self._selector.select(min(timeout, 0.5)):
                if key.data == "wake":
                    return
                self._drain(key.fileobj, key.data)  # type: ignore[arg-type]
            now = clock.monotonic()
            due = self._due
            while due and due[0][0] <= now:
                when, _, sock, data, to = heapq.heappop(due)
                self.lateness_max = max(self.lateness_max, now - when)
                with contextlib.suppress(OSError):  # a follower gone: lost, as on a network
                    sock.sendto(data, to)
            if now >= next_count:
                next_count = now + 1.0
                for link in self.links:
                    link.counts_at.append((now, link.up_packets, link.down_unicast))

    def _drain(self, sock: socket.socket, link: FollowerLink | None) -> None:
        now = self.clock.monotonic()
        while True:
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if link is None:  # the leader's multicast: a copy down every follower's link
                self.leader = source
                for each in self.links:
                    each.down_multicast += 1
                    if not self._carry(each.down, each.sock, data, each.group.sockaddr, now):
                        each.lost += 1
            elif source == self.leader:  # the leader's answer to this follower alone
                link.down_unicast += 1
                if link.pinger is not None and not self._carry(
                    link.down, link.sock, data, link.pinger, now
                ):
                    link.lost += 1
            elif self.leader is not None:  # the follower's ping or report, up to the leader
                link.pinger = source
                link.up_packets += 1
                if not self._carry(link.up, link.sock, data, self.leader, now):
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
