"""``oscsync bridge``: re-timetagged at once or sent plain at the timetag (on the fake clock,
exactly), through the real clock follower, and the command on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from conftest import LineReader, free_udp_port
from oscsync.apps import bridge as bridge_app
from oscsync.apps.bridge import (
    AT_TIMETAG,
    RETIMETAG,
    BridgeSession,
    Forwarded,
    Forwarder,
    record_json,
    record_line,
)
from oscsync.apps.endpoints import open_endpoint
from oscsync.apps.receiving import SessionSetup
from oscsync.cli.dump import sync_summary as dump_sync_summary
from oscsync.cli.main import cli
from oscsync.clock import FakeClock, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.osc import auth, codec
from oscsync.osc import timetag as tt
from oscsync.osc.rewrite import Rewriter, parse_rule
from oscsync.osc.routing import Received
from oscsync.scheduler import LatePolicy, Scheduler
from oscsync.sync.ping import encode_ping
from test_clockfollow import LEADER, _World
from waiting import wait_until

Spawn = Callable[..., subprocess.Popen[str]]
AHEAD = 0.5
LATENCY = 0.015625  # 2**-6 s: every time in these tests is exact in binary


class Outbox:
    """What a forwarder sends, with the (fake) wall time it left."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> None:
        self.sent.append((self.clock.now(), data))


def forwarder(
    clock: FakeClock, mode: str, latency: float = 0.0, rules: tuple[str, ...] = (), **kwargs: object
) -> tuple[Forwarder, Outbox, list[Forwarded], Scheduler | None]:
    outbox = Outbox(clock)
    records: list[Forwarded] = []
    scheduler = Scheduler(clock) if mode == AT_TIMETAG else None
    bridge = Forwarder(
        outbox,
        clock,
        mode=mode,
        scheduler=scheduler,
        latency=latency,
        rewriter=Rewriter([parse_rule(rule) for rule in rules]),
        on_record=records.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return bridge, outbox, records, scheduler


def tick(clock: FakeClock, stamp: int | None, beat: int = 1) -> Received:
    return Received(codec.Message("/tick", (beat,), "i", stamp), LEADER, clock.now())


# -- on the fake clock: exact ------------------------------------------------------------------


def test_retimetag_sends_at_once_a_bundle_timetagged_the_translated_time_plus_latency(
    fake_clock: FakeClock,
) -> None:
    bridge, outbox, records, _ = forwarder(
        fake_clock, RETIMETAG, LATENCY, ("/tick=/s_new s:tick i:-1 i:0 i:0 i:$1",)
    )
    stamp = tt.add_seconds(fake_clock.now_timetag(), AHEAD)
    bridge.on_message(tick(fake_clock, stamp, beat=3))
    ((at, data),) = outbox.sent
    assert at == fake_clock.now()  # at once: nothing waited
    assert codec.is_bundle(data)
    assert codec.decode(data) == [
        codec.Message("/s_new", ("tick", -1, 0, 0, 3), "siiii", tt.add_seconds(stamp, LATENCY))
    ]
    (record,) = records
    assert record.due == fake_clock.now() + AHEAD + LATENCY
    assert record.at - record.due == -(AHEAD + LATENCY)  # the receiver's headroom
    assert bridge.forwarded == bridge.timed == 1 and not record.late


def test_at_timetag_holds_each_message_and_sends_it_plain_exactly_at_its_timetag(
    fake_clock: FakeClock,
) -> None:
    bridge, outbox, records, scheduler = forwarder(fake_clock, AT_TIMETAG, LATENCY)
    assert scheduler is not None
    start = fake_clock.now()
    stamp = tt.add_seconds(fake_clock.now_timetag(), AHEAD)
    bridge.on_message(tick(fake_clock, stamp))
    assert scheduler.run_due() == AHEAD + LATENCY and outbox.sent == []  # held
    fake_clock.advance(AHEAD)
    assert scheduler.run_due() == LATENCY and outbox.sent == []  # --latency later still
    fake_clock.advance(LATENCY)
    assert scheduler.run_due() is None
    ((at, data),) = outbox.sent
    assert at == start + AHEAD + LATENCY
    assert not codec.is_bundle(data)  # plain: the receiver plays it on arrival
    assert codec.decode(data) == [codec.Message("/tick", (1,), "i", None)]
    (record,) = records
    assert record.at == record.due == start + AHEAD + LATENCY and not record.late


def test_at_timetag_with_a_negative_latency_sends_that_much_before_the_timetag(
    fake_clock: FakeClock,
) -> None:
    bridge, outbox, _, scheduler = forwarder(fake_clock, AT_TIMETAG, -LATENCY)
    assert scheduler is not None
    start = fake_clock.now()
    bridge.on_message(tick(fake_clock, tt.add_seconds(fake_clock.now_timetag(), AHEAD)))
    wait = scheduler.run_due()
    assert wait == AHEAD - LATENCY
    fake_clock.advance(wait)
    scheduler.run_due()
    assert [at for at, _ in outbox.sent] == [start + AHEAD - LATENCY]


@pytest.mark.parametrize("mode", [RETIMETAG, AT_TIMETAG])
def test_plain_and_immediate_messages_are_forwarded_at_once_in_both_modes(
    fake_clock: FakeClock, mode: str
) -> None:
    bridge, outbox, records, scheduler = forwarder(fake_clock, mode, LATENCY)
    bridge.on_message(tick(fake_clock, None))
    bridge.on_message(tick(fake_clock, tt.IMMEDIATELY, beat=2))
    if scheduler is not None:
        scheduler.run_due()  # (an inline_due scheduler would send them on the receive thread)
    assert [(at, codec.decode(data)[0].args) for at, data in outbox.sent] == [
        (fake_clock.now(), (1,)),
        (fake_clock.now(), (2,)),
    ]
    assert all(not codec.is_bundle(data) for _, data in outbox.sent)
    assert [record.due for record in records] == [None, None]
    assert bridge.timed == 0 and bridge.forwarded == 2


def test_late_messages_are_kept_and_counted_or_dropped_beyond_the_late_policy(
    fake_clock: FakeClock,
) -> None:
    past = tt.add_seconds(fake_clock.now_timetag(), -0.25)
    kept, outbox, records, _ = forwarder(fake_clock, RETIMETAG)
    kept.on_message(tick(fake_clock, past))
    assert len(outbox.sent) == 1 and records[0].late and kept.arrived_late == 1
    dropping, outbox, records, _ = forwarder(
        fake_clock, RETIMETAG, late_policy=LatePolicy(drop_after=0.125)
    )
    dropping.on_message(tick(fake_clock, past))
    assert outbox.sent == []
    assert dropping.dropped == {"late": 1} and records[0].dropped == "late"
    scheduled, outbox, _, scheduler = forwarder(fake_clock, AT_TIMETAG)
    assert scheduler is not None
    scheduled.on_message(tick(fake_clock, past))
    scheduler.run_due()
    assert len(outbox.sent) == 1 and scheduler.stats().late == 1


def test_what_a_rule_cannot_fill_or_does_not_take_is_dropped_by_reason(
    fake_clock: FakeClock,
) -> None:
    bridge, outbox, records, _ = forwarder(fake_clock, RETIMETAG, rules=("/tick=/beat i:$2",))
    stamp = tt.add_seconds(fake_clock.now_timetag(), AHEAD)
    bridge.on_message(tick(fake_clock, stamp))  # /tick has one argument, $2 is wanted
    bridge.on_message(Received(codec.Message("/chat", ("hi",), "s", None), LEADER, 0.0))
    assert outbox.sent == []
    assert bridge.dropped == {"map-missing-arg": 1, "unmapped": 1}
    assert [record.dropped for record in records] == ["map-missing-arg", "unmapped"]


def test_the_live_line_counts_a_refused_message_once_as_the_summary_does(
    fake_clock: FakeClock,
) -> None:
    # The forwarder counts "refused" and the scheduler its own reason for the same message.
    setup = SessionSetup(clock=fake_clock)
    listen = HostPort("127.0.0.1", 0)
    with BridgeSession(listen, [HostPort("127.0.0.1", 9)], setup, horizon=1.0) as session:
        session.forwarder.on_message(tick(fake_clock, tt.add_seconds(fake_clock.now_timetag(), 10)))
        assert session.status().startswith("forwarded 0, late 0, dropped 1")
        assert "; dropped 1 (horizon 1)" in session.summary()[0]


def test_a_mode_that_is_none_closes_the_endpoint_it_opened(fake_clock: FakeClock) -> None:
    # The endpoint was opened before the Forwarder refused the mode, and stayed bound.
    port = free_udp_port()
    setup = SessionSetup(clock=fake_clock)
    with pytest.raises(ValueError, match="mode must be one of"):
        BridgeSession(HostPort("127.0.0.1", port), [HostPort("127.0.0.1", 9)], setup, mode="x")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))  # free again


def test_records_waiting_to_be_shown_are_bounded_in_bytes(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4,096 records of 16 MiB TCP packets (what arrived and what went out) were 128 GiB.
    message = codec.Message("/blob", (bytes(1000),), "b", None)
    cost = 2 * codec.footprint(message)  # what arrived, and the same sent on
    monkeypatch.setattr(bridge_app, "MAX_RECORD_BYTES", 3 * cost, raising=False)
    setup = SessionSetup(clock=fake_clock)
    listen, target = HostPort("127.0.0.1", 0), HostPort("127.0.0.1", 9)
    with BridgeSession(listen, [target], setup, mode=RETIMETAG) as session:
        for _ in range(10):
            session.forwarder.on_message(Received(message, LEADER, fake_clock.now()))
        assert session.forwarder.forwarded == 10
        assert len(session.take_records()) == 3 and session.records_not_shown == 7
        session.forwarder.on_message(Received(message, LEADER, fake_clock.now()))
        assert len(session.take_records()) == 1  # taken: room again


def test_record_lines_say_what_went_where_and_escape_what_the_network_sent(
    fake_clock: FakeClock,
) -> None:
    bridge, _, records, _ = forwarder(fake_clock, RETIMETAG, rules=("/tick=/beat s:$1",))
    stamp = tt.add_seconds(fake_clock.now_timetag(), 0.25)
    hostile = "\x1b]0;owned\x07"
    bridge.on_message(Received(codec.Message("/tick", (hostile,), "s", stamp), LEADER, 0.0))
    bridge.on_message(Received(codec.Message("/x\x1b[2J", (), "", None), LEADER, 0.0))
    sent, dropped = records
    assert record_line(sent) == (
        "22:13:20.000000  127.0.0.1:7000  /tick ,s \\x1b]0;owned\\x07 -> "
        f"/beat ,s \\x1b]0;owned\\x07  @{tt.format_hex(stamp)} (-250.000 ms)"
    )
    assert record_line(dropped).endswith("/x\\x1b[2J ,  dropped (unmapped)")
    line = record_json(sent)
    assert line.isascii() and "\x1b" not in line
    assert json.loads(line) == {
        "arrival": 0.0, "source": "127.0.0.1:7000", "address": "/tick", "types": "s",
        "args": [hostile], "to_address": "/beat", "to_types": "s", "to_args": [hostile],
        "timetag": tt.format_hex(stamp), "sent": fake_clock.now(), "due": fake_clock.now() + 0.25,
        "lateness_ms": -250.0, "late": False,
    }  # fmt: skip
    assert json.loads(record_json(dropped))["dropped"] == "unmapped"


# -- through the real clock follower ----------------------------------------------------------


def follow(world: _World, handler: Callable[[Received], None]) -> None:
    """The world's ticks go through its follower to ``handler`` (the bridge) instead."""
    world.handle = world.follower.wrap(handler)
    world.endpoint.registry.remove("/tick")
    world.endpoint.registry.add("/tick", world.handle)


@pytest.mark.parametrize("mode", [RETIMETAG, AT_TIMETAG])
def test_through_the_follower_the_leaders_timetags_arrive_on_our_clock(mode: str) -> None:
    """The leader's clock is 150 ms ahead and 50 ppm fast, over a ±15 ms link: what the bridge
    forwards is due at the leader's timetag on our clock (within the follower's 0.25 ms), and
    exactly at the timetag the follower handed it, plus --latency."""
    world = _World(skew=0.15, ppm=50.0)
    bridge, outbox, records, scheduler = forwarder(world.clock, mode, LATENCY)
    translated: list[int] = []

    def spy(received: Received) -> None:
        assert received.timetag is not None
        translated.append(received.timetag)
        bridge.on_message(received)

    follow(world, spy)
    start = world.clock.monotonic()
    world.run(start + 12.0)
    stamps = [world.send_tick(0.25 + 0.125 * k) for k in range(4)]
    world.run(start + 12.05)  # all four have arrived (the link takes 5-35 ms); none is due
    if scheduler is not None:
        while (wait := scheduler.run_due()) is not None:
            world.clock.advance(wait)
    assert len(translated) == len(records) == 4
    truth = sorted(world.true_local(stamp) + LATENCY for stamp in stamps)
    due = sorted(record.due for record in records if record.due is not None)
    for local, true in zip(due, truth, strict=True):
        assert abs(local - true) <= 0.25e-3
    if mode == RETIMETAG:
        sent_tags = sorted(codec.decode(data)[0].timetag or 0 for _, data in outbox.sent)
        assert sent_tags == sorted(tt.add_seconds(stamp, LATENCY) for stamp in translated)
    else:
        for record in records:  # the fake clock stepped to each one (to a float's rounding)
            assert record.due is not None and 0 <= record.at - record.due < 1e-6


def test_before_the_clock_is_locked_messages_are_held_and_the_overdue_ones_dropped() -> None:
    world = _World(peer=None)  # learnt from the first timetagged message
    bridge, outbox, records, _ = forwarder(world.clock, RETIMETAG)
    follow(world, bridge.on_message)
    world.send_tick(0.030)  # due before any pong can come back
    world.send_tick(0.500)
    world.run(world.clock.monotonic() + 1.0)
    assert world.follower.unsynced == 1
    assert len(outbox.sent) == len(records) == 1 and not records[0].late
    assert "1 message due before sync (not played)" in world.follower.describe("message")
    # dump drops it the same way: it was not printed, and its summary says so.
    assert "1 message due before sync (not printed)" in dump_sync_summary(world.follower)


# -- the command, on loopback -----------------------------------------------------------------


@pytest.fixture
def target() -> Iterator[socket.socket]:
    """The application the bridge forwards to: a UDP socket on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        yield sock


def test_bridge_at_timetag_forwards_a_timetagged_send_plain_after_its_timetag(
    spawn: Spawn, target: socket.socket
) -> None:
    port = free_udp_port()
    to = target.getsockname()[1]
    bridge = spawn(
        "bridge", "-l", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{to}", "--mode", "at-timetag",
        "--map", "/probe=/beat i:$1 s:from-bridge", "--count", "2", "--jsonl",
    )  # fmt: skip
    assert bridge.stderr is not None and bridge.stdout is not None
    errors = LineReader(bridge.stderr)
    errors.wait_for(lambda line: line.startswith("forwarding to"), 60)
    sender = spawn("send", f"127.0.0.1:{port}", "/probe", "7", "--in", "0.2")
    assert sender.wait(10) == 0
    data, _ = target.recvfrom(65536)
    assert codec.decode(data) == [codec.Message("/beat", (7, "from-bridge"), "is", None)]
    assert spawn("send", f"127.0.0.1:{port}", "/other", "1").wait(10) == 0  # not mapped
    assert spawn("send", f"127.0.0.1:{port}", "/probe", "8").wait(10) == 0  # plain: at once
    data, _ = target.recvfrom(65536)
    assert codec.decode(data)[0].args == (8, "from-bridge")
    out = bridge.stdout.read()
    assert bridge.wait(30) == 0
    err = "\n".join(errors.rest())
    lines = [json.loads(line) for line in out.splitlines()]
    forwarded = [line for line in lines if "to_address" in line]
    assert [line["to_args"] for line in forwarded] == [[7, "from-bridge"], [8, "from-bridge"]]
    first = forwarded[0]
    assert first["due"] is not None and first["sent"] >= first["due"]  # never early
    assert forwarded[1]["due"] is None and forwarded[1]["timetag"] is None
    assert [line["dropped"] for line in lines if "dropped" in line] == ["unmapped"]
    assert "bridge: received 3 messages; forwarded 2" in err
    assert "dropped 1 (unmapped 1)" in err


def test_bridge_forwards_to_a_tcp_target_with_the_framing_asked_for(spawn: Spawn) -> None:
    """``--to tcp://`` (an application that listens on TCP, as scsynth can): each message is one
    size-prefixed frame (``--framing size``, OSC 1.0)."""
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(30)
        bridge = spawn(
            "bridge", "-l", f"127.0.0.1:{port}", "--to", f"tcp://127.0.0.1:{server.getsockname()[1]}",
            "--framing", "size", "--mode", "at-timetag", "--count", "1",
        )  # fmt: skip
        assert bridge.stderr is not None
        errors = LineReader(bridge.stderr)
        errors.wait_for(lambda line: line.startswith("forwarding to"), 60)
        assert spawn("send", f"127.0.0.1:{port}", "/x", "1", "--in", "0.1").wait(30) == 0
        connection, _ = server.accept()
        with connection:
            connection.settimeout(30)
            received = b""
            while len(received) < 4 or len(received) < 4 + int.from_bytes(received[:4], "big"):
                chunk = connection.recv(4096)
                assert chunk, received
                received += chunk
        assert bridge.wait(30) == 0, errors.rest()
    size = int.from_bytes(received[:4], "big")
    assert codec.decode(received[4 : 4 + size]) == [codec.Message("/x", (1,), "i", None)]


def test_bridge_retimetag_answers_clock_pings_and_ignores_what_its_target_replies(
    cli_runner: CliRunner, target: socket.socket
) -> None:
    """A reply from the target (scsynth's /fail) is counted and shown once, never forwarded
    back to the target (a loop) nor taken for the leader's clock."""
    port = free_udp_port()
    to = target.getsockname()[1]
    leader = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    leader.bind(("127.0.0.1", 0))
    stamp = tt.add_seconds(tt.from_unix(time.time()), 0.25)
    bundle = codec.encode_bundle(stamp, [codec.encode_message("/tick", [1])])

    def lead() -> None:
        wait_until(lambda: _answering(port), 10, "the bridge answering")
        leader.sendto(bundle, ("127.0.0.1", port))
        data, bridge_address = target.recvfrom(65536)
        assert codec.decode(data) == [codec.Message("/tick", (1,), "i", stamp)]
        for _ in range(2):
            target.sendto(
                codec.encode_bundle(stamp, [codec.encode_message("/fail", ["x"])]), bridge_address
            )

    thread = threading.Thread(target=lead)
    thread.start()
    result = cli_runner.invoke(
        cli,
        ["bridge", "-l", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{to}", "--duration", "1"],
    )
    thread.join(10)
    leader.close()
    assert result.exit_code == 0, result.output
    assert f"127.0.0.1:{to} answered: /fail x (replies are not forwarded)" in result.stderr
    assert f"replies from the targets (not forwarded): 127.0.0.1:{to} 2" in result.stderr
    assert "forwarded 1 to" in result.stderr and "re-timetagged (1 timetagged)" in result.stderr
    target.settimeout(0.2)
    with pytest.raises(TimeoutError):
        target.recvfrom(65536)  # the replies did not come back


SECRET = "a key both machines hold, 32 bytes"


def test_with_a_key_the_bridge_follows_only_a_leader_that_signs(
    cli_runner: CliRunner, target: socket.socket
) -> None:
    """Issue 27 through the bridge: with OSCSYNC_KEY, a stranger's unsigned timetagged message
    (sent first, which would win an unkeyed --sync) is neither followed nor forwarded; the
    leader that signs its bundles and pongs with the key is, and its tick arrives re-timetagged
    (unsigned: the local application knows no key)."""
    port = free_udp_port()
    to = target.getsockname()[1]
    key = auth.PacketAuth(auth.Key.from_text(SECRET, "test"))
    bridge_address = [HostPort("127.0.0.1", port)]
    leader = open_endpoint(None, bridge_address, clock=SystemClock(), auth=key)
    stranger = open_endpoint(None, bridge_address, clock=SystemClock())
    leader.start(lambda received: None)
    stranger.start(lambda received: None)
    soon = tt.add_seconds(tt.from_unix(time.time()), 0.5)
    forwarded: list[codec.Message] = []

    def lead() -> None:
        wait_until(lambda: _answering(port), 10, "the bridge answering")
        stranger.send_bytes(codec.encode_bundle(soon, [codec.encode_message("/tick", [1])]))
        leader.send_bytes(
            key.sign_bundles(codec.encode_bundle(soon, [codec.encode_message("/tick", [2])]))
        )
        data, _ = target.recvfrom(65536)
        forwarded.extend(codec.decode(data))

    thread = threading.Thread(target=lead)
    thread.start()
    try:
        result = cli_runner.invoke(
            cli,
            ["bridge", "-l", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{to}", "--sync",
             "--duration", "1"],
            env={"OSCSYNC_KEY": SECRET},
        )  # fmt: skip
        thread.join(10)
    finally:
        leader.close()
        stranger.close()
    assert result.exit_code == 0, result.output
    assert [(m.address, m.args) for m in forwarded] == [("/tick", (2,))]
    assert "forwarded 1 to" in result.stderr
    assert "unauthenticated 1" in result.stderr  # the stranger's tick, counted
    assert "sync locked" in result.stderr


def _answering(port: int) -> bool:
    """True once something on ``port`` answers a clock ping (every listener does, a bridge
    too). Probing by binding the port ourselves raced the bridge for it: "already in use",
    once in a full run."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        probe.sendto(encode_ping(1, tt.from_unix(time.time())), ("127.0.0.1", port))
        try:
            probe.recvfrom(2048)
        except OSError:  # timed out, or refused (ICMP port unreachable): not yet
            return False
    return True


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--map", "/tick=/a i:x"], "Invalid value for '--map': 'i:x': 'x' is not an int"),
        (["--map", "/a=/b", "--map", "/a=/c"], "'--map': /a is mapped twice"),
        (["--mode", "later"], "Invalid value for '--mode'"),
        (["--horizon", "1"], "--horizon applies to --mode at-timetag"),
        (["--latency", "20s"], "20s is above the maximum of 10 s"),
        (["--sync-interval", "0.5"], "give --sync"),
        (["--sync", "system", "--sync-peer", "127.0.0.1:9"], "not with --sync system"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    cli_runner: CliRunner, args: list[str], said: str
) -> None:
    result = cli_runner.invoke(cli, ["bridge", "-l", "127.0.0.1:0", "--to", "127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("listen", "to"),
    [
        ("127.0.0.1:9001", "127.0.0.1:9001"),
        # Every local address: 127.0.0.1 reaches it too, and each message came back forever.
        ("0.0.0.0:9001", "127.0.0.1:9001"),
        ("0.0.0.0:9001", "127.0.0.2:9001"),
    ],
)
def test_forwarding_to_where_it_listens_is_refused(
    cli_runner: CliRunner, listen: str, to: str
) -> None:
    result = cli_runner.invoke(cli, ["bridge", "-l", listen, "--to", to])
    assert result.exit_code == 2
    assert "forwarding there would loop" in result.output
    assert "Traceback" not in result.output


def test_dump_sync_shows_timetags_on_this_clock_from_the_senders(
    cli_runner: CliRunner, spawn: Spawn
) -> None:
    """dump --sync follows the sender's clock (here the same machine's, so it locks near 0) and
    says so; dump without --sync cannot follow anyone."""
    port = free_udp_port()
    sender = spawn(
        "metronome", "send", "--peer", f"127.0.0.1:{port}", "--bpm", "600", "--count", "20",
        "--offset", "0.3",
    )  # fmt: skip
    result = cli_runner.invoke(
        cli, ["dump", "-l", f"127.0.0.1:{port}", "--jsonl", "--count", "3", "--sync"]
    )
    sender.wait(20)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["address"] for line in lines] == ["/tick"] * 3
    assert all(250 < line["headroom_ms"] < 301 for line in lines), lines
    assert "clock sync with 127.0.0.1:" in result.stderr and "locked" in result.stderr
