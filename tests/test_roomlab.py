"""The room lab's relay (apps/roomlab.py): the leader's group copied down each follower's link,
pings carried up, and what the relay measures of its own noise (kernel receive stamps, send
lateness, the leader's T3 to the wire, the pings' T1). Loopback multicast; counts, not timing."""

from __future__ import annotations

import socket
import struct

import pytest

from conftest import free_udp_port
from oscsync.apps import roomlab
from oscsync.apps.netemlink import ImpairmentSpec
from oscsync.apps.roomlab import LOOPBACK, RoomRelay
from oscsync.clock import FakeClock, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.sync import room
from oscsync.sync.ping import encode_ping
from waiting import wait_until


def _member(group: HostPort) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(group.sockaddr)
    membership = struct.pack("4s4s", socket.inet_aton(group.host), socket.inet_aton(LOOPBACK))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.settimeout(10.0)
    return sock


def test_relay_carries_the_room_and_measures_its_own_noise() -> None:
    clock = SystemClock()
    base = free_udp_port() % 200 + 1
    leader_group = HostPort(f"239.255.44.{base}", free_udp_port())
    groups = [HostPort(f"239.255.45.{base + i}", free_udp_port()) for i in range(2)]
    members = [_member(group) for group in groups]
    leader = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    leader.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
    leader.bind((LOOPBACK, 0))
    relay = RoomRelay(
        leader_group, groups, ImpairmentSpec(delay=0.005, jitter=0.0), clock=clock, seed=1
    )
    try:
        relay.start()
        sent_at = clock.now_timetag()
        leader.sendto(room.encode_sync(7, 1, sent_at), leader_group.sockaddr)
        for member in members:  # a copy down each follower's own link
            data, source = member.recvfrom(2048)
            assert data == room.encode_sync(7, 1, sent_at)
        assert source[:2] in {relay.link_address(i).sockaddr for i in range(2)}
        noise = relay.noise
        assert len(noise.leader_sync.samples) == 1 and noise.leader_sync.samples[0] >= 0
        # A follower's ping goes up its link to the leader, its T1 kept for the benchmark.
        pinger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        pinger.bind((LOOPBACK, 0))
        leader.settimeout(10.0)
        t1 = clock.now_timetag()
        pinger.sendto(encode_ping(3, t1), relay.link_address(0).sockaddr)
        data, _ = leader.recvfrom(2048)
        assert data == encode_ping(3, t1)
        link = relay.links[0]
        wait_until(lambda: len(link.pings) == 1, 5.0, "the ping's stamps kept")
        arrived, t1_seen = link.pings[0]
        assert abs(t1_seen - clock.now()) < 5 and arrived >= t1_seen - 0.001
        assert link.up_packets == 1 and relay.links[1].up_packets == 0
        # Each lateness is kept once sendto returned: the datagram may be read here before.
        wait_until(
            lambda: len(noise.sent_late.samples) == 2 and len(noise.sent_late_up.samples) == 1,
            5.0,
            "the copies' and the ping's send lateness kept",
        )
        assert min(noise.read_late.samples) >= 0  # stamped by the kernel, read afterwards
        pinger.close()
    finally:
        relay.close()
        leader.close()
        for member in members:
            member.close()


@pytest.mark.parametrize("bound", ["items", "bytes"])
def test_the_datagrams_waiting_for_their_due_time_are_bounded(bound: str) -> None:
    # The heap of copies due had no cap: a leader flooding behind a long delay grew it freely.
    clock = SystemClock()
    base = free_udp_port() % 200 + 1
    leader_group = HostPort(f"239.255.46.{base}", free_udp_port())
    groups = [HostPort(f"239.255.47.{base + i}", free_udp_port()) for i in range(2)]
    sync = room.encode_sync(7, 1, clock.now_timetag())
    limits = {"queue_limit": 3} if bound == "items" else {"queue_bytes": 3 * (len(sync) + 448)}
    relay = RoomRelay(
        leader_group, groups, ImpairmentSpec(delay=30.0), clock=clock, seed=1, **limits
    )
    leader = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    leader.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
    try:
        relay.start()
        for _ in range(5):
            leader.sendto(sync, leader_group.sockaddr)
        wait_until(lambda: relay.links[1].down_multicast == 5, 5.0, "5 copied down each link")
        assert relay.queue_full == 7  # 10 copies due in 30 s, 3 held
        assert sum(link.lost for link in relay.links) == 7
    finally:
        relay.close()
        leader.close()


def test_each_link_keeps_its_once_a_second_counts_for_the_last_hour_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One entry a second per link, kept for ever: a day of 64 links was 5.5 million.
    monkeypatch.setattr(roomlab, "COUNTS_KEPT", 2, raising=False)
    clock = FakeClock(start=1_000.0)
    relay = RoomRelay(
        HostPort("239.255.48.1", free_udp_port()), [HostPort("239.255.49.1", free_udp_port())],
        ImpairmentSpec(), clock=clock,
    )  # fmt: skip
    counts = relay.links[0].counts_at
    try:
        relay.start()
        for second in range(1, 5):
            clock.advance(1.0)  # the relay's loop looks at least every 0.5 s
            wait_until(
                lambda: bool(counts) and counts[-1][0] == clock.monotonic(),
                5.0,
                f"second {second} counted",
            )
        assert [when for when, _, _ in counts] == [clock.monotonic() - 1.0, clock.monotonic()]
    finally:
        relay.close()
