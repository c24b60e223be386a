"""The follower on the fake clock: pongs through a simulated link, ticks held and translated,
and what a stranger or a forger can (not) do to it (issue #20 items 1, 4 and 6)."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
import threading
from collections.abc import Callable

import pytest

from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import FakeClock, SkewedClock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc import auth, codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.sync.follow import MAX_REFUSED_WARNINGS, ClockFollower, FilterFollower
from oscsync.sync.ping import (
    PONG,
    PONG_BURST,
    PONGS_PER_SECOND,
    PONGS_PER_SECOND_TOTAL,
    PingResponder,
    encode_ping,
    encode_pong,
    pong_for,
)

LEADER = ("127.0.0.1", 7000)
STRANGER = ("127.0.0.2", 7000)
MOVED = ("127.0.0.1", 7001)


def _received(data: bytes, arrival: float, source: tuple[str, int]) -> list[Received]:
    return [Received(message, source, arrival) for message in codec.decode(data)]


class _World:
    """A follower (fake clock) and a leader whose clock is ``skew`` s ahead drifting ``ppm``,
    joined by a link of random one-way delays; events run in time order, nothing sleeps."""

    def __init__(
        self,
        skew: float = 0.15,
        ppm: float = 50.0,
        jitter: float = 0.015,
        seed: int = 1,
        peer: tuple[str, int] | None = LEADER,
        duplicate: float = 0.0,
        kind: type[ClockFollower] = ClockFollower,
        key: auth.Key | None = None,
        start: float = 1_700_000_000.0,
    ) -> None:
        self.clock = FakeClock(start=start)
        self.leader_clock = SkewedClock(self.clock, skew=skew, drift_ppm=ppm)
        self.leader = LEADER
        """The leader's address: a test may move it (with another clock) while pongs are on
        their way; each ping is answered by the leader it was sent to."""
        self.rng = random.Random(seed)
        self.jitter = jitter
        self.duplicate = duplicate
        # With a key, both ends hold it (each its own signer and replay state).
        self.auth = None if key is None else auth.PacketAuth(key)
        self.leader_auth = None if key is None else auth.PacketAuth(key)
        self.endpoint = open_endpoint(clock=self.clock, auth=self.auth)
        self.warnings: list[str] = []
        self.follower = kind(
            self.endpoint, peer=peer, on_warning=self.warnings.append, auth=self.auth
        )
        follower = self.follower
        follower._sender = lambda: None if follower.peer is None else self._ping  # type: ignore[method-assign]
        self.got: list[Received] = []
        self.handle = self.follower.wrap(self.got.append)
        self.endpoint.registry.add("/tick", self.handle)
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.forger: Callable[[bytes], None] | None = None
        """Sees every ping (shared Wi-Fi) and may answer it first, from the leader's address."""

    def delay(self) -> float:
        return 0.020 + self.rng.uniform(-self.jitter, self.jitter)

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (when, next(self.seq), action))

    def _ping(self, data: bytes) -> None:
        leader, leader_clock, leader_auth = self.leader, self.leader_clock, self.leader_auth
        if self.forger is not None:
            self.forger(data)

        def arrive() -> None:
            authenticated = False
            if leader_auth is not None:
                opened = leader_auth.open(data, ("127.0.0.1", 9001))
                assert not isinstance(opened, str)
                body, authenticated = opened
            else:
                body = data
            ping = _received(body, leader_clock.now(), ("127.0.0.1", 9001))[0]
            pong = pong_for(ping, leader_clock)
            if leader_auth is not None and authenticated:
                pong = leader_auth.sign_message(pong)
            copies = 2 if self.rng.random() < self.duplicate else 1
            for _ in range(copies):
                self.at(self.clock.monotonic() + self.delay(), lambda: self.deliver(pong, leader))

        self.at(self.clock.monotonic() + self.delay(), arrive)

    def deliver(self, data: bytes, source: tuple[str, int] = LEADER) -> None:
        """``data`` arrives now from ``source``: through the endpoint's receive core (where a
        key checks signatures), to the follower's pong service or the tick handler."""
        self.endpoint.handle_datagram(data, source, arrival=self.clock.now())

    def forge(
        self, claim: float, *, key: auth.Key | None = None, after: float = 0.001
    ) -> list[int]:
        """From now on a forger answers every ping ``after`` s later (before the leader), from
        the leader's address, with its SEQ and T1 and a clock ``claim`` s ahead of the leader's
        (signed with ``key`` if given); returns the list it appends each forged SEQ to."""
        forged: list[int] = []
        signer = None if key is None else auth.Signer(key)

        def answer(data: bytes) -> None:
            ping = codec.decode(data)[0]  # a signed ping is a bundle: its first message
            seq, t1 = ping.args
            stamp = tt.add_seconds(self.leader_clock.now_timetag(), claim)
            pong = encode_pong(seq, t1, stamp, stamp)
            if signer is not None:
                pong = signer.sign_message(pong)
            forged.append(seq)
            self.at(self.clock.monotonic() + after, lambda: self.deliver(pong, self.leader))

        self.forger = answer
        return forged

    def send_tick(self, ahead: float, source: tuple[str, int] | None = None) -> int:
        """The leader (or ``source``) sends a tick timetagged ``ahead`` s from the leader's
        now; returns the timetag."""
        source = source or self.leader
        stamp = tt.add_seconds(self.leader_clock.now_timetag(), ahead)
        data = codec.encode_bundle(stamp, [codec.encode_message("/tick", [0], "i")])
        if self.leader_auth is not None and source == self.leader:
            data = self.leader_auth.sign(data)
        self.at(self.clock.monotonic() + self.delay(), lambda: self.deliver(data, source))
        return stamp

    def run(self, until: float, ping_every: float = 0.025) -> None:
        """Ping every ``ping_every`` s (the first 20 at 5 ms) and run events up to ``until``."""
        next_ping = self.clock.monotonic()
        burst = 20
        while True:
            when = min(next_ping, self.events[0][0] if self.events else next_ping)
            if when > until:
                break
            self.clock.advance(max(0.0, when - self.clock.monotonic()))
            if when == next_ping and (not self.events or self.events[0][0] >= next_ping):
                self.follower.ping()
                next_ping += 0.005 if burst > 0 else ping_every
                burst -= 1
            else:
                _, _, action = heapq.heappop(self.events)
                action()
        self.clock.advance(max(0.0, until - self.clock.monotonic()))

    def true_local(self, leader_stamp: int) -> float:
        """Our wall time at which the leader's clock reads ``leader_stamp``."""
        return self.clock.monotonic_to_wall(
            self.leader_clock.wall_to_monotonic(tt.to_unix(leader_stamp))
        )


def test_follower_locks_and_translates_within_a_quarter_millisecond() -> None:
    world = _World(skew=0.15, ppm=50.0)
    start = world.clock.monotonic()
    world.run(start + 12.0)
    stamps = [world.send_tick(0.05 + 0.25 * k) for k in range(8)]
    world.run(start + 14.5)
    assert len(world.got) == 8
    truth = sorted(world.true_local(stamp) for stamp in stamps)
    # Sent at once, the ticks arrive in any order: compare them sorted by time.
    played = sorted(tt.to_unix(r.timetag) for r in world.got if r.timetag is not None)
    for local, true in zip(played, truth, strict=True):
        assert abs(local - true) <= 0.25e-3
    assert world.follower.state() == "locked"
    assert world.follower.servo.steps == 0
    assert world.warnings == []


def test_filter_follower_kept_for_comparison_takes_each_estimate_as_it_is() -> None:
    # benchmarks/clock_sync.py's "B filter": the same follower with the minimum-delay filter and
    # a map that jumps to each estimate (no frequency, no slew), pinged 4 times a second.
    world = _World(skew=0.15, ppm=0.0, kind=FilterFollower)
    start = world.clock.monotonic()
    jumps = []
    for step in range(1, 21):
        world.run(start + 0.5 * step, ping_every=0.25)
        estimate = world.follower.estimate()
        assert estimate is not None and estimate.frequency == 0.0
        offset = world.follower.offset()
        assert offset is not None
        # The map is the last estimate itself (no slewing towards it) ...
        assert offset == pytest.approx(estimate.offset, abs=1e-12)
        # ... which the chosen exchange's half round trip bounds.
        assert abs(estimate.offset - 0.15) <= estimate.bound
        jumps.append(offset)
    assert len(set(jumps)) > 1  # it moved, in jumps
    assert world.follower.servo.steps == 0 and world.follower.state() == "locked"


def test_no_tick_before_an_estimate_and_none_played_late() -> None:
    world = _World(peer=None)  # the peer is learnt from the first tick: pings start then
    start = world.clock.monotonic()
    early = world.send_tick(0.030)  # due before any pong can come back: dropped, counted
    later = world.send_tick(0.500)  # held, then translated
    world.run(start + 1.0)
    assert world.follower.peer == LEADER
    assert world.follower.unsynced == 1
    assert [r.timetag is not None for r in world.got] == [True]
    translated = world.got[0].timetag
    assert translated is not None
    assert abs(tt.to_unix(translated) - world.true_local(later)) <= 5e-3
    assert early != later


def test_a_tick_held_before_lock_and_due_after_the_2036_rollover_is_played() -> None:
    # Locked just before 2036-02-07 06:28:16 UTC; the held tick is due just after it, where a
    # timetag is a small number (era 1): it is later than now, not already past.
    rollover = 2_085_978_496.0  # Unix seconds at NTP era 1's start
    world = _World(peer=None, start=rollover - 0.3, ppm=0.0)
    start = world.clock.monotonic()
    stamp = world.send_tick(0.6)
    assert stamp < tt.from_unix(rollover - 1)  # the leader's clock is already in era 1
    world.run(start + 1.5)
    assert world.follower.locked_at is not None and world.follower.locked_at < rollover
    assert world.follower.unsynced == 0
    assert len(world.got) == 1
    translated = world.got[0].timetag
    assert translated is not None
    due = world.leader_clock.wall_to_monotonic(tt.to_unix(stamp, near=rollover))
    assert abs(tt.to_unix(translated, near=rollover) - world.clock.monotonic_to_wall(due)) <= 5e-3


def test_duplicated_and_reordered_pongs_are_counted_not_used() -> None:
    world = _World(duplicate=0.3, seed=3)
    world.run(world.clock.monotonic() + 5.0)
    assert world.follower.ignored["unexpected-pong"] > 10
    assert world.follower.answered <= world.follower.sent


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (lambda t1, now: (t1, t1 + 10, t1 + 5, now), "negative-turnaround"),
        (lambda t1, now: (t1, t1, t1 + (5 << 32), now), "slow-turnaround"),
        (lambda t1, now: (t1, (1 << 64) - 1, (1 << 64) - 1, now), None),
    ],
    ids=["negative-turnaround", "slow-turnaround", "huge-values"],
)
def test_malformed_and_impossible_pongs_never_move_the_clock(
    args: Callable[[int, int], tuple[int, int, int, int]], reason: str | None
) -> None:
    world = _World()
    start = world.clock.monotonic()
    world.run(start + 10.0)
    before = world.follower.offset()
    sent: list[bytes] = []
    world.follower._sender = lambda: sent.append  # type: ignore[method-assign]
    world.follower.ping()
    (ping,) = codec.decode(sent[0])
    seq, t1 = ping.args
    t1, t2, t3, _ = args(t1, world.clock.now_timetag())
    pong = encode_pong(seq, t1, t2, t3)
    world.deliver(pong)
    world.deliver(codec.encode_message(PONG, [seq, 1.5]))  # wrong types
    assert world.follower.offset() == before
    assert world.follower.ignored["malformed-pong"] == 1
    if reason is not None:
        assert world.follower.ignored[reason] == 1
    else:  # passes the wire checks but is far below the envelope: held back
        assert world.follower.ignored["offset-jump"] == 1


def test_clock_hijack_pongs_from_a_stranger_are_ignored() -> None:
    """#20 item 4: a stranger's pong, even one echoing our ping, never reaches the estimator."""
    world = _World()
    start = world.clock.monotonic()
    world.run(start + 5.0)
    before = world.follower.offset()
    sent: list[bytes] = []
    world.follower._sender = lambda: sent.append  # type: ignore[method-assign]
    world.follower.ping()
    (ping,) = codec.decode(sent[0])
    seq, t1 = ping.args
    claim = tt.add_seconds(t1, 30.0)  # "my clock is 30 s ahead"
    world.deliver(encode_pong(seq, t1, claim, claim), source=STRANGER)
    assert world.follower.ignored["pong-not-from-peer"] == 1
    assert world.follower.offset() == before


def test_clock_hijack_ticks_from_a_stranger_are_not_followed() -> None:
    """#20 item 4: timetags from anyone but the followed peer are dropped, not translated."""
    world = _World()
    start = world.clock.monotonic()
    world.run(start + 5.0)
    world.send_tick(0.1, source=STRANGER)
    world.send_tick(0.1)
    world.run(start + 6.0)
    assert [r.source for r in world.got] == [LEADER]
    assert world.follower.ignored["not-sync-peer"] == 1


def test_clock_hijack_absurd_jump_is_refused() -> None:
    """#20 item 4: even from the peer's address and matching a ping, one or two pongs claiming
    a +30 s clock are held back; the map does not move."""
    world = _World()
    start = world.clock.monotonic()
    world.run(start + 10.0)
    before = world.follower.offset()
    sent: list[bytes] = []
    world.follower._sender = lambda: sent.append  # type: ignore[method-assign]
    for _ in range(2):
        world.follower.ping()
        (ping,) = codec.decode(sent.pop())
        seq, t1 = ping.args
        world.clock.advance(0.02)
        claim = tt.add_seconds(world.leader_clock.now_timetag(), -30.0)
        world.deliver(encode_pong(seq, t1, claim, claim))
    assert world.follower.ignored["offset-jump"] == 2
    assert world.follower.offset() == pytest.approx(before, abs=1e-4)
    assert world.follower.servo.steps == 0


def test_a_peer_restart_steps_once_with_a_warning() -> None:
    world = _World(skew=0.15, ppm=0.0)
    start = world.clock.monotonic()
    world.run(start + 10.0)
    world.leader_clock.skew += 2.0  # the leader restarted with a different clock
    world.run(start + 20.0)
    assert world.follower.servo.steps == 1
    assert len(world.warnings) == 1 and "stepped by" in world.warnings[0]
    assert world.follower.offset() == pytest.approx(2.15, abs=1e-3)


def test_sync_peer_at_name_moved_is_measured_from_scratch_and_the_old_address_steers_nothing() -> (
    None
):
    """``--sync-peer @NAME`` re-registered elsewhere, maybe with another clock (issue 17's
    noticed item): the follower starts over on the new address, no blend of the two clocks
    (no step, no warning), and pongs and ticks still coming from the old address are ignored."""
    world = _World(skew=0.15, ppm=50.0)
    start = world.clock.monotonic()
    world.run(start + 12.0)
    assert world.follower.state() == "locked"
    world.send_tick(0.5)  # the old leader's last tick, still on its way
    world.leader = MOVED  # pings in flight are still answered by the old leader
    world.leader_clock = SkewedClock(world.clock, skew=-0.4, drift_ppm=-30.0)
    world.follower.move_to(MOVED)
    assert world.follower.offset() is None  # nothing translated through the old map
    world.run(start + 24.0)
    assert world.follower.ignored["pong-not-from-peer"] >= 1  # the old leader's late pongs
    assert world.follower.ignored["not-sync-peer"] == 1  # the old leader's tick
    assert world.got == []
    stamps = [world.send_tick(0.05 + 0.25 * k) for k in range(8)]
    world.run(start + 26.5)
    truth = sorted(world.true_local(stamp) for stamp in stamps)
    played = sorted(tt.to_unix(r.timetag) for r in world.got if r.timetag is not None)
    assert len(played) == 8
    for local, true in zip(played, truth, strict=True):
        assert abs(local - true) <= 0.25e-3
    assert world.follower.servo.steps == 0 and world.warnings == []
    assert world.follower.moves == 1
    assert "sync started over 1x" in world.follower.describe()


def test_sync_peer_moved_before_lock_drops_the_ticks_held_on_the_old_clock() -> None:
    world = _World(jitter=0.0)  # every datagram 20 ms on its way
    world.send_tick(1.0)
    world.run(world.clock.monotonic() + 0.03)  # arrived, before the first pong: held
    assert len(world.follower._pending) == 1
    world.follower.move_to(MOVED)
    assert world.follower.ignored["sync-peer-moved"] == 1
    world.follower.move_to(MOVED)  # the same address again: nothing starts over
    assert world.follower.moves == 1


def test_blob_bomb_sync_queue_is_bounded_in_bytes() -> None:
    """#20 item 1: before lock, held messages are capped in bytes as well as items."""
    world = _World()
    world.follower.max_pending_bytes = 100_000
    stamp = tt.add_seconds(world.clock.now_timetag(), 1.0)
    blob = bytes(30_000)
    message = codec.encode_message("/tick", [blob], "b")
    for _ in range(10):
        for received in _received(codec.encode_bundle(stamp, [message]), world.clock.now(), LEADER):
            world.handle(received)
    assert len(world.follower._pending) == 3
    assert world.follower._pending_bytes <= 100_000
    assert world.follower.ignored["sync-queue-full"] == 7


def test_held_messages_count_what_their_arrays_hold() -> None:
    """An OSC array counted 8 bytes whatever it held: 8,000 ints in one 40 KB datagram (325 KB
    decoded, measured with tracemalloc) passed as 29 bytes, so 256 of them (83 MB) fitted in the
    1 MB cap. Each now costs what :func:`oscsync.osc.codec.footprint` says (64 bytes an
    argument, 0.5 MB here): two fit."""
    world = _World()
    stamp = tt.add_seconds(world.clock.now_timetag(), 1.0)
    message = codec.encode_message("/tick", [list(range(8000))])
    for _ in range(10):
        for received in _received(codec.encode_bundle(stamp, [message]), world.clock.now(), LEADER):
            world.handle(received)
    assert len(world.follower._pending) == 2
    assert world.follower.ignored["sync-queue-full"] == 8


def _endpoint_with_outbox() -> tuple[Endpoint, list[tuple[bytes, tuple[str, int]]], FakeClock]:
    clock = FakeClock()
    endpoint = open_endpoint(clock=clock)
    sent: list[tuple[bytes, tuple[str, int]]] = []
    endpoint.reply = lambda data, to: sent.append((data, to)) is None  # type: ignore[method-assign]
    return endpoint, sent, clock


def test_ping_amplification_one_pong_per_datagram() -> None:
    """#20 item 6: a bundle of 1,637 pings gets one pong, not 1,637."""
    endpoint, sent, clock = _endpoint_with_outbox()
    t1 = clock.now_timetag()
    pings = [encode_ping(k, t1) for k in range(1637)]
    endpoint.handle_datagram(codec.encode_bundle(tt.IMMEDIATELY, pings), ("127.0.0.1", 4000))
    assert len(sent) == 1
    assert endpoint.stats.drops["clock-ping-extra"] == 1636


def test_ping_amplification_pongs_are_rate_limited_per_source() -> None:
    """#20 item 6: a flood of single-ping datagrams from one source gets at most the burst plus
    the rate; another source still gets its answers."""
    endpoint, sent, clock = _endpoint_with_outbox()
    for _ in range(1000):  # 1,000 pings in one second
        clock.advance(0.001)
        endpoint.handle_datagram(encode_ping(1, clock.now_timetag()), ("10.0.0.1", 1))
    flood = len(sent)
    assert flood <= PONG_BURST + PONGS_PER_SECOND * 1.0 + 1
    assert endpoint.stats.drops["clock-ping-rate"] == 1000 - flood
    endpoint.handle_datagram(encode_ping(2, clock.now_timetag()), ("10.0.0.2", 1))
    assert len(sent) == flood + 1


def test_ping_amplification_state_is_bounded() -> None:
    """#20 item 6: spoofed sources cannot grow the responder's memory or its total rate."""
    responder = PingResponder(max_sources=64)
    answered = 0
    pings = 40_000
    for k in range(pings):  # 40,000 forged sources in one second, one ping each
        source = (f"10.{k // 65536 % 256}.{k // 256 % 256}.{k % 256}", 1)
        answered += responder.allow(source, float(k), k / pings) is None
    assert len(responder._buckets) == 64
    # Each source alone would be answered (its burst is 40); the total bucket starts full (one
    # second's worth) and refills at the total rate.
    assert answered <= PONGS_PER_SECOND_TOTAL * 2 + 1 < pings


def test_live_status_and_summary_show_state_offset_bound_and_ppm() -> None:
    world = _World(skew=0.15, ppm=200.0)
    assert world.follower.status() == "sync acquiring"
    start = world.clock.monotonic()
    world.run(start + 20.0)
    status = world.follower.status()
    match = re.fullmatch(
        r"sync locked ([-+][\d.]+) ± ([\d.]+) ms ([-+][\d.]+) ppm rtt ([\d.]+) ms", status
    )
    assert match, status
    offset, bound, ppm = (float(match.group(k)) for k in (1, 2, 3))
    # The leader is 150 ms ahead (and drifting): its clock is ahead of ours.
    assert abs(offset - 150.0) < 5.0 and 0 < bound < 1.0 and abs(ppm - 200.0) < 20.0
    summary = world.follower.describe()
    assert summary.startswith("clock sync with 127.0.0.1:7000: sync locked")
    assert "steps 0" in summary
    world.run(start + 30.0, ping_every=1e9)  # the leader goes silent
    assert world.follower.state() == "lost"


def test_follower_close_after_a_stop_between_creating_and_starting_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As Endpoint.close: a stop signal between creating the pinger thread and starting it must
    # not make close() join a thread that never started (RuntimeError).
    with Endpoint(HostPort("127.0.0.1", 0), clock=FakeClock()) as endpoint:
        follower = ClockFollower(endpoint)

        def interrupted(thread: threading.Thread) -> threading.Thread:
            raise KeyboardInterrupt

        monkeypatch.setattr("oscsync.sync.follow.threads.start", interrupted)
        with pytest.raises(KeyboardInterrupt):
            follower.start()
        monkeypatch.undo()
        follower.close()


def test_snapshot_and_to_local_say_where_the_following_stands() -> None:
    """The public face of ``--sync`` (oscsync.ClockFollower, issue 28): state, offset, bound,
    ppm, and a leader's timetag translated onto our clock."""
    world = _World(skew=0.15, ppm=50.0)
    follower = world.follower
    before = follower.snapshot()
    assert (before.synced, before.offset, before.bound, before.line()) == (
        False,
        None,
        math.inf,
        "sync acquiring",
    )
    assert follower.to_local(world.leader_clock.now_timetag()) is None
    assert follower.wait_synced(0.5) is False  # one-thread fake clock: the wait is the jump
    world.run(world.clock.monotonic() + 12.0)
    status = follower.snapshot()
    assert status.synced and status.locked and follower.synced
    assert follower.wait_synced(0) is True
    assert status.peer == LEADER
    true_offset = world.leader_clock.now() - world.clock.now()
    assert abs(status.offset - true_offset) <= status.bound < 0.5e-3  # type: ignore[operator]
    # The estimator's frequency, 12 s into a ±15 ms link: within a few tens of ppm of 50.
    assert abs(status.ppm - 50.0) < 20.0  # type: ignore[operator]
    assert follower.status() == status.line()
    stamp = tt.add_seconds(world.leader_clock.now_timetag(), 1.0)
    local = follower.to_local(stamp)
    assert local is not None
    assert abs(tt.to_unix(local) - world.true_local(stamp)) <= 0.25e-3


# -- issue #27 item 2: forged pongs from someone who sees the pings --------------------------

KEY = auth.Key(b"a key both machines hold", "test")


def test_forged_burst_without_a_key_never_steps_the_clock() -> None:
    """A forger who sees the pings answers each first, from the leader's address, with the
    right SEQ and T1, claiming +5 s, for 1 s: every forged exchange is held back (the run is
    shorter than CONFIRM_SPAN), the map does not move, and nothing stays wrong after."""
    world = _World(skew=0.15, ppm=0.0)
    start = world.clock.monotonic()
    world.run(start + 10.0)
    before = world.follower.offset()
    assert before is not None
    forged = world.forge(+5.0)
    world.run(start + 11.0)
    world.forger = None
    world.run(start + 15.0)
    assert len(forged) >= 30
    assert world.follower.ignored["offset-jump"] == len(forged)
    assert world.follower.ignored["unexpected-pong"] >= len(forged) - 2  # the leader's, too late
    assert world.follower.servo.steps == 0 and world.warnings == []
    assert world.follower.offset() == pytest.approx(0.15, abs=0.5e-3)


def test_forged_answers_that_disagree_never_confirm_a_step() -> None:
    """Without a key, a forger who keeps changing its story (+5 s, −5 s, ...) for longer than
    CONFIRM_SPAN never gets a run that agrees: no step."""
    world = _World(skew=0.15, ppm=0.0)
    start = world.clock.monotonic()
    world.run(start + 10.0)
    for k in range(8):  # 4 s of answers, alternating every half second
        world.forge(5.0 if k % 2 == 0 else -5.0)
        world.run(start + 10.5 + 0.5 * k)
    world.forger = None
    world.run(start + 16.0)
    assert world.follower.servo.steps == 0
    assert world.follower.offset() == pytest.approx(0.15, abs=0.5e-3)
    assert world.follower.estimator.refused["offset-jump-disagrees"] > 0


def test_with_a_key_forged_pongs_are_counted_and_move_nothing() -> None:
    """With a key: unsigned forged pongs answering every ping for 10 s are refused
    (``unauthenticated-pong``), the genuine pongs still come through, and the follower's error
    stays what it is without a forger."""
    world = _World(skew=0.15, ppm=50.0, key=KEY)
    start = world.clock.monotonic()
    forged = world.forge(+5.0)
    world.run(start + 12.0)
    world.forger = None
    world.run(start + 12.01)  # the last forged pong lands
    assert len(forged) > 100
    assert world.follower.ignored["unauthenticated-pong"] == len(forged)
    assert world.follower.state() == "locked" and world.follower.servo.steps == 0
    stamps = [world.send_tick(0.05 + 0.25 * k) for k in range(8)]
    world.run(start + 14.5)
    truth = sorted(world.true_local(stamp) for stamp in stamps)
    played = sorted(tt.to_unix(r.timetag) for r in world.got if r.timetag is not None)
    assert len(played) == 8
    for local, true in zip(played, truth, strict=True):
        assert abs(local - true) <= 0.25e-3
    assert all(r.authenticated for r in world.got)


def test_with_a_key_pongs_signed_with_another_key_or_replayed_are_dropped() -> None:
    world = _World(skew=0.15, ppm=0.0, key=KEY)
    start = world.clock.monotonic()
    forged = world.forge(+5.0, key=auth.Key(b"the forger's own key!", "forger"))
    world.run(start + 6.0)
    world.forger = None
    world.run(start + 6.01)  # the last forged pong lands
    assert world.endpoint.stats.drops["bad-signature"] == len(forged) > 100
    # A genuine pong seen on the air, sent again: refused as a replay before it is matched.
    sent: list[bytes] = []
    world.follower._sender = lambda: sent.append  # type: ignore[method-assign]
    world.follower.ping()
    ping = codec.decode(sent[0])[0]
    assert world.leader_auth is not None
    pong = world.leader_auth.sign_message(
        encode_pong(*ping.args, world.leader_clock.now_timetag(), 0)
    )
    world.deliver(pong)
    world.deliver(pong)
    assert world.endpoint.stats.drops["replayed"] == 1
    assert world.follower.offset() == pytest.approx(0.15, abs=0.5e-3)
    assert world.follower.servo.steps == 0


def test_without_a_key_a_peer_on_another_machine_is_said_once_to_be_unauthenticated() -> None:
    world = _World(peer=("192.168.1.20", 9001))
    world.follower.follow(("192.168.1.20", 9001))
    assert len(world.warnings) == 1
    assert "192.168.1.20:9001 is not authenticated" in world.warnings[0]
    assert "--key-file" in world.warnings[0]
    assert _World().warnings == []  # loopback: nobody else can answer
    assert _World(peer=("192.168.1.20", 9001), key=KEY).warnings == []


# -- issue #27 item 3: --sync alone follows whoever sends a timetagged message first ----------


def test_without_a_key_the_first_sender_is_followed_and_each_other_one_named_once() -> None:
    """A stranger's timetagged datagram sent before the leader starts wins the follower (there
    is no telling who is who without a key); it is never switched, but the leader's refused
    ticks are named in a warning, escaped, with the advice."""
    world = _World(peer=None)
    start = world.clock.monotonic()
    world.send_tick(0.5, source=STRANGER)
    world.run(start + 0.1)
    for _ in range(3):
        world.send_tick(0.5)
    world.run(start + 1.0)
    assert world.follower.peer == STRANGER
    assert world.follower.ignored["not-sync-peer"] == 3
    (warning,) = world.warnings
    assert warning.startswith(
        "clock sync: refused timetagged messages from 127.0.0.1:7000: following 127.0.0.2:7000"
    )
    assert "--sync-peer LEADER:PORT" in warning and "--key-file" in warning
    world.send_tick(0.5, source=("127.0.0.3\x1b[2J", 7000))  # an address is network data
    world.run(start + 1.5)
    assert "\\x1b[2J" in world.warnings[-1] and "\x1b" not in world.warnings[-1]


def test_without_a_key_refused_senders_are_named_a_bounded_number_of_times() -> None:
    world = _World(peer=None)
    start = world.clock.monotonic()
    world.send_tick(0.5)
    world.run(start + 0.1)
    for k in range(40):
        world.send_tick(0.5, source=(f"10.0.0.{k}", 7000))
        world.send_tick(0.5, source=(f"10.0.0.{k}", 7000))
    world.run(start + 1.0)
    assert len(world.warnings) == MAX_REFUSED_WARNINGS
    assert world.follower.ignored["not-sync-peer"] == 80


def test_with_a_key_only_an_authenticated_sender_is_followed() -> None:
    """The stranger's unsigned tick, sent first, is refused (``unauthenticated``) and does not
    choose; the leader's signed ticks are followed and played on its clock."""
    world = _World(peer=None, key=KEY)
    start = world.clock.monotonic()
    world.send_tick(0.5, source=STRANGER)
    world.run(start + 0.1)
    assert world.follower.peer is None
    assert world.follower.ignored["unauthenticated"] == 1
    world.send_tick(0.5)
    world.run(start + 6.0)
    stamps = [world.send_tick(0.05 + 0.25 * k) for k in range(4)]
    world.run(start + 7.5)
    assert world.follower.peer == LEADER and world.follower.state() == "locked"
    truth = sorted(world.true_local(stamp) for stamp in stamps)
    played = sorted(tt.to_unix(r.timetag) for r in world.got if r.timetag is not None)[-4:]
    for local, true in zip(played, truth, strict=True):
        assert abs(local - true) <= 0.5e-3
    assert world.warnings == [  # the stranger named once, as the one whose ticks were refused
        "clock sync: refused timetagged messages from 127.0.0.2:7000: not signed with this "
        "--key-file key (a sender without the key, or Pure Data, which cannot sign)"
    ]


def test_with_a_key_a_replayed_signed_tick_from_elsewhere_does_not_hold_the_follower() -> None:
    """A signed tick of an earlier run, recorded and sent from another address before the
    leader's: it checks (the follower never saw that run) and is chosen, but it cannot answer a
    ping; the leader's own signed tick then replaces it, and once the leader has answered,
    nobody else's is taken."""
    world = _World(peer=None, key=KEY)
    start = world.clock.monotonic()
    recorded = auth.Signer(KEY).sign(
        codec.encode_bundle(
            tt.add_seconds(world.leader_clock.now_timetag(), -60.0),
            [codec.encode_message("/tick", [0], "i")],
        )
    )
    world.at(start + 0.01, lambda: world.deliver(recorded, STRANGER))
    world.run(start + 0.05)
    assert world.follower.peer == STRANGER  # chosen, not yet answered
    world.send_tick(0.5)
    world.run(start + 6.0)
    assert world.follower.peer == LEADER and world.follower.state() == "locked"
    assert world.follower.moves == 0
    late = auth.Signer(KEY).sign(
        codec.encode_bundle(
            world.leader_clock.now_timetag(), [codec.encode_message("/tick", [0], "i")]
        )
    )
    world.deliver(late, STRANGER)  # signed by someone else with the key, after the lock
    assert world.follower.peer == LEADER
    assert world.follower.ignored["not-sync-peer"] == 1
