"""Clock offset estimation: NTP's four timestamps, the error bound, the minimum-delay filter."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from oscsync.apps.endpoints import open_endpoint
from oscsync.cli.main import cli
from oscsync.clock import FakeClock, SkewedClock, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.sync.follow import ClockFollower
from oscsync.sync.ping import (
    FILTER_SIZE,
    MAX_PLAYOUT,
    OFFSET_MARGIN,
    PING,
    PONG,
    ClockSync,
    ClockSyncError,
    PeerClocks,
    PingResponder,
    Sample,
    choose,
    choose_offset,
    encode_ping,
    encode_pong,
    one_way_delays,
    parse_pong,
    pong_for,
)
from waiting import wait_until


def _received(data: bytes, arrival: float, source: tuple[str, int] = ("127.0.0.1", 9)) -> Received:
    (message,) = codec.decode(data)
    return Received(message, source, arrival)


class _Link:
    """A client and a peer whose clock is ``skew`` s ahead, joined by a link with chosen delays."""

    def __init__(self, skew: float, drift_ppm: float = 0.0) -> None:
        self.base = FakeClock()
        self.client_clock = SkewedClock(self.base, skew=0.0)
        self.peer_clock = SkewedClock(self.base, skew=skew, drift_ppm=drift_ppm)
        self.skew = skew
        self.outbox: list[bytes] = []
        self.sync = ClockSync(self.client_clock, self.outbox.append)

    def true_offset(self) -> float:
        return self.peer_clock.now() - self.client_clock.now()

    def exchange(self, out_delay: float, turnaround: float, back_delay: float) -> Sample | None:
        self.sync.ping()
        ping = self.outbox.pop()
        self.base.advance(out_delay)
        arrived = _received(ping, self.peer_clock.now())
        self.base.advance(turnaround)
        pong = pong_for(arrived, self.peer_clock)
        self.base.advance(back_delay)
        return self.sync.on_pong(_received(pong, self.client_clock.now()))


def test_wire_format_round_trips_exact_timetags() -> None:
    t1 = tt.from_parts(0xEA000000, 0x80000001)  # high bit set: not a signed int64
    (ping,) = codec.decode(encode_ping(7, t1))
    assert (ping.address, ping.types, ping.args) == (PING, "it", (7, t1))
    (pong,) = codec.decode(encode_pong(-3, t1, t1 + 1, t1 + 2))
    assert (pong.address, pong.types) == (PONG, "ittt")
    assert pong.args == (-3, t1, t1 + 1, t1 + 2)


def test_symmetric_delays_give_the_exact_offset() -> None:
    link = _Link(skew=0.25)
    sample = link.exchange(0.0078125, 0.001, 0.0078125)
    assert sample is not None
    assert sample.offset == pytest.approx(0.25, abs=1e-6)
    assert sample.delay == pytest.approx(0.015625, abs=1e-6)
    assert sample.error_bound == pytest.approx(sample.delay / 2)


@pytest.mark.parametrize("skew", [-1.5, -0.15, 0.0, 0.25, 3600.0])
def test_asymmetric_delays_stay_within_half_the_round_trip(skew: float) -> None:
    link = _Link(skew=skew)
    rng = random.Random(6)
    for _ in range(200):
        out_delay, back_delay = rng.uniform(0, 0.05), rng.uniform(0, 0.002)
        sample = link.exchange(out_delay, rng.uniform(0, 0.001), back_delay)
        assert sample is not None
        error = sample.offset - link.true_offset()
        # The theory: |error| = |out - back| / 2 <= delay / 2 (float wall seconds resolve ~0.24 µs).
        assert abs(error) <= sample.error_bound + 1e-6
        assert abs(error) == pytest.approx(abs(out_delay - back_delay) / 2, abs=1e-6)


def test_an_impossible_exchange_is_ignored_not_trusted_above_the_real_ones() -> None:
    """A turnaround longer than the round trip (a peer whose clock stepped while it answered,
    or a forgery) has a negative delay: the minimum-delay filter would trust it first, with an
    error bound of 0, and --offset auto would pick its offset."""
    link = _Link(skew=0.0)
    real = link.exchange(0.001, 0.0001, 0.001)
    assert real is not None
    link.sync.ping()
    (ping,) = codec.decode(link.outbox.pop())
    seq, t1 = ping.args
    link.base.advance(0.002)
    forged = encode_pong(seq, t1, tt.add_seconds(t1, 5.0), tt.add_seconds(t1, 5.5))
    assert link.sync.on_pong(_received(forged, link.client_clock.now())) is None
    assert link.sync.ignored == 1 and link.sync.samples() == [real]
    estimate = link.sync.estimate()
    assert estimate is not None and estimate.offset == pytest.approx(0.0, abs=1e-6)


def test_the_filter_trusts_the_minimum_delay_sample() -> None:
    link = _Link(skew=0.15)
    # Queued pings: long, lopsided delays; one exchange found the link empty.
    link.exchange(0.030, 0.0, 0.001)
    link.exchange(0.001, 0.0, 0.020)
    quiet = link.exchange(0.0005, 0.0, 0.0004)
    link.exchange(0.012, 0.0, 0.001)
    estimate = link.sync.estimate()
    assert quiet is not None and estimate is not None
    assert estimate.offset == quiet.offset
    assert estimate.delay == pytest.approx(0.0009, abs=1e-6)
    assert abs(estimate.offset - link.true_offset()) <= estimate.error_bound + 1e-6
    assert estimate.samples == 4
    # A naive mean of the four offsets is far worse than the chosen sample.
    mean = sum(s.offset for s in link.sync.samples()) / 4
    assert abs(mean - link.true_offset()) > 10 * abs(estimate.offset - link.true_offset())


def test_the_filter_forgets_old_samples() -> None:
    link = _Link(skew=0.0, drift_ppm=500.0)
    link.exchange(0.0001, 0.0, 0.0001)  # the best sample ever, but soon stale
    for _ in range(FILTER_SIZE):
        link.base.advance(1.0)
        link.exchange(0.002, 0.0, 0.002)
    estimate = link.sync.estimate()
    assert estimate is not None and estimate.samples == FILTER_SIZE
    assert estimate.delay == pytest.approx(0.004, abs=1e-6)
    # With the clock drifting, only a recent sample knows the current offset.
    assert estimate.offset == pytest.approx(link.true_offset(), abs=1e-6)


def test_to_local_translates_a_peer_timetag_onto_our_clock() -> None:
    link = _Link(skew=0.15)
    link.exchange(0.001, 0.0, 0.001)
    estimate = link.sync.estimate()
    assert estimate is not None
    peer_due = link.peer_clock.now_timetag()
    local = estimate.to_local(peer_due)
    assert tt.difference(local, link.client_clock.now_timetag()) == pytest.approx(0, abs=1e-6)
    assert estimate.to_local(tt.IMMEDIATELY) == tt.IMMEDIATELY


def test_stray_duplicate_and_malformed_pongs_are_ignored() -> None:
    link = _Link(skew=0.0)
    now = link.client_clock.now()
    stray = encode_pong(99, 1 << 40, 1 << 40, 1 << 40)
    assert link.sync.on_pong(_received(stray, now)) is None
    wrong_types = codec.encode_message(PONG, [1, 2.0])
    assert link.sync.on_pong(_received(wrong_types, now)) is None
    link.sync.ping()
    ping = _received(link.outbox.pop(), now)
    pong = pong_for(ping, link.peer_clock)
    assert link.sync.on_pong(_received(pong, now)) is not None
    assert link.sync.on_pong(_received(pong, now)) is None  # the same answer twice
    assert (link.sync.received, link.sync.ignored) == (1, 3)


def test_choose_of_nothing_is_none() -> None:
    assert choose([]) is None


def test_every_endpoint_answers_pings_and_bad_ones_are_counted() -> None:
    clock = FakeClock()
    with open_endpoint(clock=clock) as endpoint:
        sent: list[tuple[bytes, tuple[str, int]]] = []
        endpoint.reply = lambda data, to: sent.append((data, to)) is None  # type: ignore[method-assign]
        seen: list[Received] = []
        endpoint._core.handler = seen.append
        t1 = clock.now_timetag()
        endpoint.handle_datagram(encode_ping(5, t1), ("127.0.0.1", 4000))
        endpoint.handle_datagram(codec.encode_message(PING, ["x"]), ("127.0.0.1", 1))
        endpoint.handle_datagram(codec.encode_message("/chat", ["hi"]), ("127.0.0.1", 4000))
    assert [r.address for r in seen] == ["/chat"]  # the app never sees the ping
    ((data, to),) = sent
    assert to == ("127.0.0.1", 4000)
    (pong,) = codec.decode(data)
    assert pong.args[:2] == (5, t1)
    assert endpoint.stats.drops["bad-clock-ping"] == 1


def test_services_can_be_turned_off() -> None:
    with Endpoint(clock=FakeClock(), services={}) as endpoint:
        seen: list[Received] = []
        endpoint._core.handler = seen.append
        endpoint.handle_datagram(encode_ping(1, 1 << 40), ("127.0.0.1", 4000))
    assert [r.address for r in seen] == [PING]


# -- on loopback: oscsync clock, the follower, --offset auto ----------------------------------


def _skewed_listener(skew: float) -> Endpoint:
    endpoint = open_endpoint(HostPort("127.0.0.1", 0), clock=SkewedClock(SystemClock(), skew=skew))
    endpoint.start(lambda _: None)
    return endpoint


def test_clock_command_measures_a_skewed_listener(cli_runner: CliRunner) -> None:
    with _skewed_listener(0.25) as listener:
        result = cli_runner.invoke(
            cli, ["clock", "--peer", str(listener.local_address), "--count", "8", "--json"]
        )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["answered"] == 8
    # Two SystemClocks map wall to monotonic separately (a few µs apart): allow for that.
    assert abs(report["offset_ms"] - 250.0) <= report["error_bound_ms"] + 0.05
    assert 0 < report["rtt_ms"] < 50


def test_peer_clock_move_to_measures_the_new_peer_from_scratch() -> None:
    """``clock --peer @NAME`` re-registered on another machine (here: another clock, 0.75 s
    away): the estimate is the new peer's alone, not a blend of two clocks."""
    from oscsync.apps.clock import peer_clock

    with _skewed_listener(0.25) as first, _skewed_listener(-0.5) as second:
        assert first.local_address is not None
        with peer_clock(first.local_address, clock=SystemClock(), warn=lambda _: None) as probe:
            before = probe.run(count=8, duration=None, interval=0.005, timeout=2.0)
            assert before.answered == 8 and before.estimate is not None
            assert abs(before.estimate.offset - 0.25) < 0.01
            moved_to = second.local_address
            assert moved_to is not None
            probe.move_to([moved_to])
            for _ in range(8):  # what run() goes on doing when the peer moves under it
                probe.follower.ping()
            wait_until(lambda: probe.follower.counts()[1] == 8, 5, "8 pongs from the new peer")
            after = probe.report()
    assert probe.moves == 1
    assert after.peer == str(moved_to)
    assert (after.sent, after.answered) == (8, 8)  # the new peer's pings only
    assert after.estimate is not None
    assert abs(after.estimate.offset + 0.5) <= after.estimate.bound + 0.05e-3


def test_clock_command_without_an_answer_is_one_line(cli_runner: CliRunner) -> None:
    with _silent_port() as port:
        result = cli_runner.invoke(
            cli, ["clock", "--peer", f"127.0.0.1:{port}", "-c", "2", "--timeout", "0.1"]
        )
    assert result.exit_code == 1
    assert "no answer from" in result.output


@contextlib.contextmanager
def _silent_port() -> Iterator[int]:
    """A bound UDP port that never answers (pings to it go unanswered)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_follower_translates_leader_timetags_and_holds_until_synced() -> None:
    skew = -0.15
    leader_clock = SkewedClock(SystemClock(), skew=skew)
    follower_end = open_endpoint(HostPort("127.0.0.1", 0), clock=SystemClock())
    got: list[Received] = []
    arrived = threading.Event()

    def handler(received: Received) -> None:
        got.append(received)
        if len(got) == 3:
            arrived.set()

    follower = ClockFollower(follower_end)
    follower_end.start(follower.wrap(handler))
    follower.start()
    target = follower_end.local_address
    assert target is not None
    with open_endpoint(peers=[target], clock=leader_clock) as leader, follower_end:
        leader.start(lambda _: None)  # answers the follower's pings
        due = [tt.add_seconds(leader_clock.now_timetag(), 0.5 + k) for k in range(3)]
        for stamp in due:
            leader.send("/tick", [0], timetag=stamp)  # before any estimate exists: held
        assert arrived.wait(5)
        follower.close()
        offset = follower.offset()
        estimate = follower.estimate()
    assert offset is not None and estimate is not None
    bound = follower.servo.bound(estimate.at)
    # Two SystemClocks map wall to monotonic separately (a few µs apart): allow for that.
    assert abs(offset - skew) <= bound + 5e-5
    for received, stamp in zip(got, due):
        assert received.timetag is not None
        shift = tt.difference(received.timetag, stamp)
        # Held, then translated at lock, from the first three exchanges (a looser estimate).
        assert abs(shift - (-skew)) <= 1e-3
    assert follower.unsynced == 0


def test_choose_offset_covers_the_slowest_one_way_delay() -> None:
    link = _Link(skew=0.4)
    rng = random.Random(2)
    outbound = []
    for _ in range(100):
        out_delay = 0.010 + rng.uniform(0, 0.015)
        outbound.append(out_delay)
        link.exchange(out_delay, 0.0001, 0.010 + rng.uniform(0, 0.015))
    samples = link.sync.samples()  # the filter keeps the last FILTER_SIZE
    choice = choose_offset(samples)
    assert choice is not None
    kept = outbound[-len(samples) :]
    assert choice.offset >= max(kept) - choice.clock_error
    assert choice.offset <= max(kept) + 2 * choice.clock_error + OFFSET_MARGIN + 1e-6
    assert "one-way delay p99" in choice.describe()
    assert choose_offset([]) is None


def test_a_pong_may_carry_the_listeners_playout_latency_and_offset_auto_covers_it() -> None:
    """Issue 29: followers playing through JACK (21.3 ms output latency + a block) played ticks
    late with --offset auto, which covered only the network. A listener's pong now carries its
    playout latency as an optional trailing float (,itttf), and the offset adds it."""
    link = _Link(skew=0.0)
    link.sync.ping()
    arrived = _received(link.outbox.pop(), link.peer_clock.now())
    data = pong_for(arrived, link.peer_clock, playout=0.032)
    (pong,) = codec.decode(data)
    assert pong.types == "itttf" and pong.args[4] == pytest.approx(0.032)
    assert len(data) == 60  # 56 + 4: still a small answer to a 36-byte ping
    sample = link.sync.on_pong(_received(data, link.client_clock.now()))
    assert sample is not None and link.sync.playout == pytest.approx(0.032)
    without = choose_offset([sample])
    with_playout = choose_offset([sample], playout=link.sync.playout)
    assert without is not None and with_playout is not None
    assert with_playout.offset - without.offset == pytest.approx(0.032)
    assert "+ playout 32.00 ms" in with_playout.describe()


def test_pongs_without_playout_or_with_more_after_it_still_count() -> None:
    """,ittt is what every other oscsync (and anything that answers pings) sends; arguments
    after the optional playout are left for a signature (merges with an HMAC'd pong)."""
    t1 = tt.from_unix(1000.0)
    plain = parse_pong(_received(encode_pong(1, t1, t1, t1), 1000.0))
    assert plain.playout == 0.0
    # Written out: the codec's encoder has no 't'. A blob of 3 bytes, padded to 4.
    signed = (
        b"/oscsync/clock/pong\x00,itttfb\x00"
        + struct.pack(">iQQQf", 2, t1, t1, t1, 0.01)
        + struct.pack(">i", 3)
        + b"mac\x00"
    )
    assert parse_pong(_received(signed, 1000.0)).playout == pytest.approx(0.01)


@pytest.mark.parametrize("playout", [-0.001, 5.0, float("nan"), float("inf")])
def test_an_unbelievable_playout_makes_the_pong_malformed(playout: float) -> None:
    t1 = tt.from_unix(1000.0)
    bad = encode_pong(1, t1, t1, t1, playout)
    with pytest.raises(ClockSyncError):
        parse_pong(_received(bad, 1000.0))


@pytest.mark.parametrize(("playout", "sent"), [(2.5, MAX_PLAYOUT), (-0.001, 0.0), (0.02, 0.02)])
def test_a_listener_never_sends_a_playout_its_peers_would_drop_the_pong_for(
    playout: float, sent: float
) -> None:
    """A player may report up to 10 s (audio.playout_of), a client believes 1 s at most and
    drops the whole pong beyond: a listener with a slow sound card lost every clock sample."""
    clock = FakeClock()
    answers: list[bytes] = []
    endpoint = SimpleNamespace(
        clock=clock,
        stats=SimpleNamespace(drops=Counter()),
        answer=lambda received, data: answers.append(data),
    )
    responder = PingResponder(playout=lambda: playout)
    t1 = clock.now_timetag()
    responder.service(endpoint, _received(encode_ping(1, t1), clock.now()))  # type: ignore[arg-type]
    (data,) = answers
    pong = parse_pong(_received(data, clock.now()))
    assert pong.playout == pytest.approx(sent)
    assert endpoint.stats.drops == Counter()


def test_a_follower_takes_pongs_that_carry_playout() -> None:
    clock = FakeClock()
    sent: list[bytes] = []

    class _Endpoint:
        local_address = None

        def __init__(self) -> None:
            self.clock = clock
            self.peers = [HostPort("127.0.0.1", 9)]

        def send_bytes(self, data: bytes, peers: object = None) -> int:
            sent.append(data)
            return 1

        def add_service(self, *args: object) -> None:
            pass

    follower = ClockFollower(_Endpoint(), peer=("127.0.0.1", 9))  # type: ignore[arg-type]
    follower.ping()
    (ping,) = codec.decode(sent.pop())
    arrived = Received(ping, ("127.0.0.1", 9), clock.now())
    pong = pong_for(arrived, clock, playout=0.02)
    assert follower.take_pong(_received(pong, clock.now()))
    assert follower.answered == 1


def test_metronome_send_offset_auto_measures_and_says_why(cli_runner: CliRunner) -> None:
    with _skewed_listener(0.2) as listener:
        result = cli_runner.invoke(
            cli,
            [
                "metronome",
                "send",
                "--peer",
                str(listener.local_address),
                "--offset",
                "auto",
                "--count",
                "2",
                "--bpm",
                "1200",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "offset auto:" in result.output and "one-way delay p99" in result.output
    assert "in bundles timetagged" in result.output


def test_peer_clocks_keep_one_filter_per_peer_and_cover_the_slowest() -> None:
    """Two peers whose clocks disagree by 2 s: each gets its own estimate, none is mixed up."""
    base = SystemClock()
    skews = (-0.75, 1.25)
    listeners = [
        open_endpoint(HostPort("127.0.0.1", 0), clock=SkewedClock(base, skew)) for skew in skews
    ]
    try:
        for listener in listeners:
            listener.start(lambda received: None)
        peers = [listener.local_address for listener in listeners]
        assert all(peer is not None for peer in peers)
        with open_endpoint(peers=peers, clock=base) as sender:  # type: ignore[arg-type]
            clocks = PeerClocks(base, sender, peers)  # type: ignore[arg-type]
            sender.add_service(PONG, clocks.service)
            sender.start(lambda received: None)
            choice, silent = clocks.choose_offset(8, 0.005, 2.0)
            estimates = [clocks.syncs[peer].estimate() for peer in peers]  # type: ignore[index]
    finally:
        for listener in listeners:
            listener.close()
    assert silent == []
    assert choice is not None
    for estimate, skew in zip(estimates, skews):
        assert estimate is not None
        assert estimate.offset == pytest.approx(skew, abs=estimate.error_bound + 1e-3)


def test_clock_command_reports_frequency_and_watches(cli_runner: CliRunner) -> None:
    """A listener whose clock runs 300 ppm fast: --json has frequency_ppm, --watch live lines."""
    listener = open_endpoint(
        HostPort("127.0.0.1", 0), clock=SkewedClock(SystemClock(), skew=0.1, drift_ppm=300.0)
    )
    listener.start(lambda _: None)
    with listener:
        peer = str(listener.local_address)
        result = cli_runner.invoke(
            cli, ["clock", "--peer", peer, "--duration", "2.5", "--interval", "0.005", "--json"]
        )
        watched = cli_runner.invoke(cli, ["clock", "--peer", peer, "--duration", "0.6", "--watch"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # Loopback: round trips of ~0.1 ms over 2.5 s pin the frequency to within tens of ppm.
    assert report["frequency_ppm"] == pytest.approx(300.0, abs=40.0)
    # Its 95 % bound: at least the timestamps' allowance over the span (50 µs / 2.5 s = 20 ppm).
    assert report["frequency_bound_ppm"] >= 20.0
    assert report["state"] == "locked"
    assert watched.exit_code == 0, watched.output
    live = [line for line in watched.output.splitlines() if line.startswith("offset +")]
    assert len(live) >= 2 and "rtt" in live[0]


def test_clock_command_refuses_count_with_duration(cli_runner: CliRunner) -> None:
    result = cli_runner.invoke(
        cli, ["clock", "--peer", "127.0.0.1:9", "--count", "3", "--duration", "1"]
    )
    assert result.exit_code == 2
    assert "--count or --duration" in result.output


def test_ntp_era_sample_across_the_2036_rollover_keeps_offset_and_delay() -> None:
    # #20 item 13: T1/T2 just before 2036-02-07 06:28:16 (era 0, huge numbers), T3/T4 just after
    # it (era 1, small numbers); the exchange must read as 10 ms round trip, peer 1 ms ahead.
    second = tt.FRACTION_UNITS
    t1 = tt.MAX_TIMETAG + 1 - 5 * second // 1000  # 5 ms before the rollover
    t2 = tt.add_seconds(t1, 0.006)  # 5 ms on the way + the peer 1 ms ahead
    t3 = tt.add_seconds(t2, 0.0)
    t4 = tt.add_seconds(t1, 0.010)
    assert t4 < t1  # wrapped
    sample = Sample(t1, t2, t3, t4)
    assert sample.delay == pytest.approx(0.010, abs=1e-9)
    assert sample.offset == pytest.approx(0.001, abs=1e-9)
    estimate = choose([sample])
    assert estimate is not None
    outbound = one_way_delays([sample], estimate)
    assert outbound == [pytest.approx(0.005, abs=1e-9)]


def test_a_keyed_listener_signs_its_pong_to_a_signed_ping_only() -> None:
    """Issue #27 item 2: the pong to a signed ping is signed (its MAC covers the ping's SEQ and
    T1); an unsigned ping still gets a plain pong (as an NTP server with keys answers plain
    requests); a listener without the key answers a signed ping with a plain pong."""
    from oscsync.osc import auth

    key = auth.Key(b"0123456789abcdef", "test")
    client = auth.PacketAuth(key)
    sent: list[bytes] = []
    clock = FakeClock()
    first_t1 = clock.now_timetag()
    for listener_auth in (auth.PacketAuth(key), None):
        with open_endpoint(clock=clock, auth=listener_auth) as endpoint:
            endpoint.reply = lambda data, to: sent.append(data) is None  # type: ignore[method-assign]
            ping = encode_ping(7, clock.now_timetag())
            endpoint.handle_datagram(client.sign_message(ping), ("127.0.0.1", 4000))
            clock.advance(1.0)
            endpoint.handle_datagram(ping, ("127.0.0.1", 4001))
    signed, plain, unkeyed_signed, unkeyed_plain = sent
    assert auth.is_signed(signed) and not auth.is_signed(plain)
    assert not auth.is_signed(unkeyed_signed) and not auth.is_signed(unkeyed_plain)
    body, checked = auth.PacketAuth(key).open(signed)  # type: ignore[misc]
    assert checked and codec.decode(body)[0].args[:2] == (7, first_t1)


def test_answers_with_key_tells_a_peer_holding_the_key_from_anyone_else() -> None:
    """Issue #27 item 5: what following a re-registered @NAME asks before it follows."""
    from oscsync.apps.endpoints import answers_with_key
    from oscsync.osc import auth

    key = auth.Key(b"0123456789abcdef", "test")
    other = auth.Key(b"fedcba9876543210", "test")
    clock = SystemClock()
    found = {}
    for label, listener_key in (("same", key), ("none", None), ("other", other)):
        listener_auth = None if listener_key is None else auth.PacketAuth(listener_key)
        with open_endpoint(HostPort("127.0.0.1", 0), clock=clock, auth=listener_auth) as peer:
            peer.start(lambda received: None)
            assert peer.local_address is not None
            found[label] = answers_with_key(
                peer.local_address, clock=clock, auth=auth.PacketAuth(key), timeout=0.5
            )
    assert found == {"same": True, "none": False, "other": False}
