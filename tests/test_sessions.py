"""Sessions below the CLI (issue #12, items 1 and 5): what a command builds and hands over."""

from __future__ import annotations

import functools
import socket
import threading
from typing import Any

import pytest
from click.testing import CliRunner

from oscsync.apps import endpoints, receiving
from oscsync.apps.endpoints import open_endpoint
from oscsync.apps.lab import OnsetRecorder
from oscsync.apps.metronome import TICK_METHOD, TickRecord
from oscsync.apps.receiving import SendingSession, SessionSetup
from oscsync.apps.sessions import SendSession, TickListenSession
from oscsync.audio.registry import BACKENDS
from oscsync.cli.main import cli
from oscsync.clock import SystemClock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.scheduler import Scheduler, SchedulerClosed
from oscsync.sync.ping import PING
from waiting import wait_until

LOOPBACK = HostPort("127.0.0.1", 0)


def test_sessions_a_listen_session_answers_to_tick_and_stops_at_its_limit() -> None:
    clock = SystemClock()
    player = OnsetRecorder()
    player.start()
    shown: list[TickRecord] = []
    session = TickListenSession(LOOPBACK, (), SessionSetup(clock), player=player, limit=2)
    session.show = shown.append
    try:
        session.start()
        # Declared where OSCQuery can list it, next to the clock services every command answers.
        paths = [method.path for method in session.endpoint.registry.methods()]
        assert TICK_METHOD.path in paths and PING in paths
        target = session.endpoint.local_address
        assert target is not None
        with SendSession([target], SessionSetup(clock)) as sender:
            for beat in range(3):
                sender.endpoint.send_bytes(codec.encode_message("/tick", [beat], "i"))
            assert session.done.wait(5.0)
    finally:
        session.close()
    assert [record.beat for record in shown] == [0, 1]
    assert "ticks 2" in session.summary()


def test_sessions_a_sending_session_closes_its_endpoint_when_its_scheduler_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[bool] = []
    opened_count = [0]

    def opened(*args: Any, **kwargs: Any) -> Any:
        opened_count[0] += 1
        endpoint = open_endpoint(*args, **kwargs)
        close = endpoint.close

        def closing(timeout: float = 2.0) -> bool:
            closed.append(True)
            return close(timeout)

        monkeypatch.setattr(endpoint, "close", closing)
        return endpoint

    # Where the public Endpoint (the session's) finds it.
    monkeypatch.setattr(endpoints, "open_endpoint", opened)
    with pytest.raises(ValueError, match="spin"):
        SendingSession([LOOPBACK], SessionSetup(SystemClock()), spin=-1.0)
    assert opened_count == [0]  # the scheduler is made first: no socket to leak
    with SendingSession([LOOPBACK], SessionSetup(SystemClock()), spin=0.0) as session:
        assert opened_count == [1] and not closed
    assert closed == [True]
    with pytest.raises(SchedulerClosed):
        session.scheduler.start()


def test_sessions_a_player_failure_stops_the_session_and_what_stops_with_it() -> None:
    player = OnsetRecorder()
    player.start()
    session = TickListenSession(LOOPBACK, (), SessionSetup(SystemClock()), player=player)
    stopped = threading.Event()
    session.on_failure.append(stopped.set)  # pair's sender
    try:
        session._fail("disk full")
    finally:
        session.close()
    assert session.done.is_set() and stopped.is_set()
    assert session.failure == "disk full"


def test_audio_registry_every_listen_command_offers_every_backend(cli_runner: CliRunner) -> None:
    for command in (["metronome", "listen"], ["sequence", "listen"], ["sequence", "pair"]):
        text = cli_runner.invoke(cli, [*command, "--help"]).output
        for backend in BACKENDS.values():
            assert backend.metavar in text, (command, backend.name)
        assert "--device" in text and "--latency-compensation" in text, command


def test_sessions_a_send_session_closes_what_it_opened_when_its_endpoint_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[str] = []
    real_close, real_scheduler_close = Endpoint.close, Scheduler.close

    def closing(self: Endpoint, timeout: float = 2.0) -> bool:
        closed.append("endpoint")
        return real_close(self, timeout)

    def scheduler_closing(self: Scheduler, timeout: float = 2.0) -> None:
        closed.append("scheduler")
        real_scheduler_close(self, timeout)

    def failing_start(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("no receive thread")

    monkeypatch.setattr(Endpoint, "close", closing)
    monkeypatch.setattr(Scheduler, "close", scheduler_closing)
    monkeypatch.setattr(Endpoint, "start", failing_start)
    with pytest.raises(OSError, match="no receive thread"):
        SendSession([LOOPBACK], SessionSetup(SystemClock()))
    assert sorted(set(closed)) == ["endpoint", "scheduler"]


class _SoundCard(OnsetRecorder):
    """A placing player whose sound card needs 32 ms (21.3 ms output latency + a 512-frame
    block at 48 kHz, the two-machine rig of issue 29)."""

    def playout_latency(self) -> float:
        return 0.032


def test_sessions_offset_auto_covers_the_listeners_playout_latency() -> None:
    clock = SystemClock()
    player = _SoundCard()
    player.start()
    notes: list[str] = []
    session = TickListenSession(LOOPBACK, (), SessionSetup(clock), player=player)
    try:
        session.start()
        target = session.endpoint.local_address
        assert target is not None
        with SendSession([target], SessionSetup(clock, note=notes.append)) as sender:
            offset = sender.offset("auto", 60.0)
    finally:
        session.close()
    assert offset > 0.032 + 0.005  # the playout, the margin, and loopback's delay
    assert any("+ playout 32.00 ms" in note for note in notes), notes


def test_sessions_what_peers_send_back_to_a_sender_is_never_held_on_its_ticks_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing reads a sender's replies, yet each went through its ticks' scheduler, and bundles
    # timetagged ahead were held there: 8 (10,000, or 32 MiB, by default) and its ticks were
    # refused. Now dropped and counted on the receive thread.
    monkeypatch.setattr(receiving, "Scheduler", functools.partial(Scheduler, max_items=8))
    clock = SystemClock()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(5.0)
        target = HostPort("127.0.0.1", peer.getsockname()[1])
        with SendSession([target], SessionSetup(clock)) as sender:
            sender.send(codec.encode_message("/tick", [0], "i"))
            _, source = peer.recvfrom(2048)
            ahead = tt.add_seconds(clock.now_timetag(), 30.0)
            reply = codec.encode_bundle(ahead, [codec.encode_message("/hi", [1], "i")])
            for _ in range(8):
                peer.sendto(reply, source)
            wait_until(
                lambda: sender.api.dropped.get("no-inbox", 0) + sender.scheduler.held == 8,
                what="the 8 replies read",
            )
            dropped = sender.api.dropped
            assert sender.scheduler.held == 0 and dropped == {"no-inbox": 8}
            assert sender.scheduler.submit(None, lambda dispatch: None)  # a tick: taken
