"""The public Python API (``import oscsync``, issue 28): what an Endpoint does with callbacks,
bounds and timetags, the Grid's exact times, and that the commands use these same objects."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

import oscsync
from conftest import free_udp_port
from oscsync.apps import endpoints
from oscsync.cli.main import cli
from oscsync.cli.runtime import AppContext
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from waiting import wait_until


def test_callbacks_run_on_the_scheduler_thread_and_a_slow_one_delays_no_receiving() -> None:
    release, threads, handled = threading.Event(), set(), []
    with oscsync.Endpoint(listen=0) as receiver, oscsync.Endpoint(peers=receiver.port) as sender:

        @receiver.on("/slow")
        def slow(received: oscsync.Received) -> None:
            threads.add(threading.current_thread().name)
            release.wait(10)
            handled.append(received.args[0])

        for k in range(50):
            sender.send("/slow", k)
        # The first callback is stuck; the receive thread read all 50 regardless.
        wait_until(lambda: receiver.stats.messages == 50, what="all 50 read while blocked")
        assert handled == []
        release.set()
        wait_until(lambda: len(handled) == 50, what="all 50 handled, in order")
    assert handled == list(range(50))
    assert threads == {"oscsync-scheduler"}


def test_callbacks_that_cannot_keep_up_are_refused_and_counted_not_queued_without_end() -> None:
    release = threading.Event()
    handled: list[int] = []
    with (
        oscsync.Endpoint(listen=0, max_queued=4) as receiver,
        oscsync.Endpoint(peers=receiver.port) as sender,
    ):
        receiver.on("/x", lambda received: (release.wait(10), handled.append(received.args[0])))
        for k in range(20):
            sender.send("/x", k)
        wait_until(lambda: receiver.stats.messages == 20, what="20 read")
        release.set()
        wait_until(lambda: receiver.scheduler.held == 0, what="the queue drained")
        refused = receiver.dropped.get("callback-refused", 0)
        assert refused > 0
        assert len(handled) + refused == 20


def test_unread_messages_are_bounded_and_counted() -> None:
    with (
        oscsync.Endpoint(listen=0, inbox_size=3) as receiver,
        oscsync.Endpoint(peers=receiver.port) as sender,
    ):
        for k in range(10):
            sender.send("/unread", k)
        wait_until(lambda: receiver.dropped.get("inbox-full") == 7, what="7 counted")
        assert [receiver.receive(1).args for _ in range(3)] == [(0,), (1,), (2,)]  # type: ignore[union-attr]
        assert receiver.receive(0.01) is None


def test_unread_messages_are_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,024 unread TCP packets of up to 16 MiB each were 16 GiB: the bytes are capped as well.
    blob = bytes(1000)
    cost = codec.footprint(codec.Message("/blob", (blob,), "b"))
    monkeypatch.setattr(endpoints, "INBOX_BYTES", 3 * cost, raising=False)
    with (
        oscsync.Endpoint(listen=0) as receiver,
        oscsync.Endpoint(peers=receiver.port) as sender,
    ):
        for _ in range(10):
            sender.send("/blob", blob)
        wait_until(lambda: receiver.dropped.get("inbox-full") == 7, what="7 counted")
        assert [receiver.receive(1) is not None for _ in range(3)] == [True] * 3
        sender.send("/blob", blob)  # read: room again
        assert receiver.receive(5) is not None


def test_held_callbacks_run_exactly_at_the_timetag_and_unheld_ones_on_arrival(
    autojump_clock: oscsync.FakeClock,
) -> None:
    clock = autojump_clock
    calls: dict[str, int] = {}
    done = threading.Event()
    with (
        oscsync.Endpoint(listen=0, clock=clock) as receiver,
        oscsync.Endpoint(peers=receiver.port, clock=clock) as sender,
    ):
        receiver.on("/now", lambda r: calls.setdefault("now", clock.now_timetag()), hold=False)

        @receiver.on("/held")
        def held(received: oscsync.Received) -> None:
            calls["held"] = clock.now_timetag()
            done.set()

        due = oscsync.add_seconds(clock.now_timetag(), 10)
        sender.send_bundle(due, [("/now",), ("/held",)])
        wait_until(lambda: "now" in calls, what="the unheld callback")  # real time: in flight
        assert calls["now"] < due
        assert clock.wait(done, 60)  # virtual time: the clock jumps to the timetag
        assert calls["held"] == due


def test_a_bundle_s_messages_reach_every_matching_pattern_and_the_rest_the_default() -> None:
    got: list[tuple[str, str]] = []
    all_in = threading.Event()

    def note(tag: str) -> Callable[[oscsync.Received], None]:
        def record(received: oscsync.Received) -> None:
            got.append((tag, received.address))
            if len(got) == 4:
                all_in.set()

        return record

    with oscsync.Endpoint(listen=0) as receiver, oscsync.Endpoint(peers=receiver.port) as sender:
        receiver.on("/voice/{1,2}", note("pair"))
        receiver.on("/voice/*", note("any"))
        receiver.set_default_handler(note("default"))
        sender.send_bundle(oscsync.IMMEDIATELY, [("/voice/1", 1), ("/other", 2), ("/voice/3",)])
        assert all_in.wait(10)
    assert sorted(got) == [
        ("any", "/voice/1"),
        ("any", "/voice/3"),
        ("default", "/other"),
        ("pair", "/voice/1"),
    ]


def test_a_python_osc_float_timetag_is_refused_with_the_conversion_to_use() -> None:
    with (
        oscsync.Endpoint(peers=free_udp_port()) as sender,
        pytest.raises(TypeError, match=r"oscsync.from_unix"),
    ):
        sender.send("/x", 1, at=1_700_000_000.5)  # type: ignore[arg-type]
    with pytest.raises(oscsync.AddressError, match="@NAME is for peers"):
        oscsync.Endpoint(listen="@alice")
    with oscsync.Endpoint() as endpoint, pytest.raises(ValueError, match="oscsync's own"):
        endpoint.on("/oscsync/clock/ping", print)


def test_an_async_iteration_that_gave_up_is_not_woken_after_its_loop_closed() -> None:
    with oscsync.Endpoint(listen=0) as receiver, oscsync.Endpoint(peers=receiver.port) as sender:

        async def nothing_for_a_while() -> list[oscsync.Received]:
            return [m async for m in receiver.messages(timeout=0.05)]

        assert asyncio.run(nothing_for_a_while()) == []  # that loop is closed now
        sender.send("/late", 1)
        assert receiver.receive(5) is not None
        wait_until(lambda: receiver.scheduler.stats().dispatched >= 1, what="handed on")
        assert receiver.scheduler.stats().errors == 0


def test_sleep_until_async_on_a_fake_clock_lands_on_the_timetag() -> None:
    clock = oscsync.FakeClock()
    due = oscsync.add_seconds(clock.now_timetag(), 0.75)
    assert asyncio.run(oscsync.sleep_until_async(due, clock=clock)) == 0.0
    assert clock.now_timetag() == due


def test_grid_times_are_exact_far_out_swung_and_joinable() -> None:
    start = oscsync.from_unix(1_700_000_000)
    grid = oscsync.Grid(bpm=90, steps_per_beat=4, beats_per_bar=3, swing=50, start=start)
    period = Fraction(60, 90 * 4)
    k = 1_000_000
    assert grid.timetag(k) == tt.add_seconds(start, period * k)
    assert grid.timetag(k + 1) == tt.add_seconds(start, period * (k + 1) + period / 2)
    tick = grid.tick(13)
    assert (tick.bar, tick.beat, tick.step, tick.accent) == (1, 0, 1, False)
    assert grid.tick(12).accent
    assert grid.index_at(grid.timetag(7)) == 7
    assert grid.index_at(tt.add_seconds(grid.timetag(7), Fraction(1, 10**6))) == 8
    assert [t.index for t in grid.ticks(3, first=5)] == [5, 6, 7]
    with pytest.raises(ValueError, match="swing"):
        oscsync.Grid(swing=80)


def test_oscsync_send_goes_through_the_public_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []
    real = endpoints.Endpoint.send_packet

    def spy(self: endpoints.Endpoint, data: bytes) -> int:
        sent.append(data)
        return real(self, data)

    monkeypatch.setattr(endpoints.Endpoint, "send_packet", spy)
    port = free_udp_port()
    with oscsync.Endpoint(listen=port) as receiver:
        result = CliRunner().invoke(
            cli, ["send", f"127.0.0.1:{port}", "/chat", "hi"], obj=AppContext(oscsync.SystemClock())
        )
        assert result.exit_code == 0, result.output
        assert receiver.receive(5).args == ("hi",)  # type: ignore[union-attr]
    assert len(sent) == 1


def test_metronome_and_sequence_senders_take_their_times_from_the_public_grid() -> None:
    from oscsync.apps.metronome import TickSender
    from oscsync.apps.sequence import SequenceSender
    from oscsync.files.pattern import parse

    scheduler = oscsync.Scheduler(oscsync.FakeClock())
    ticks = TickSender(lambda data: None, scheduler, bpm=100)
    t0 = ticks.start(count=0)
    assert isinstance(ticks.grid, oscsync.Grid)
    assert ticks.grid_timetag(7) == oscsync.Grid(100, start=t0).timetag(7)
    steps = SequenceSender(
        lambda data: None,
        scheduler,
        parse("kick: x...\n"),
        bpm=100,
        steps_per_beat=4,
        swing=30,
    )
    t0 = steps.start(count=0)
    grid = oscsync.Grid(100, steps_per_beat=4, swing=30, start=t0)
    assert [steps.grid_timetag(k) for k in range(5)] == [grid.timetag(k) for k in range(5)]


def test_a_shared_key_signs_what_send_and_send_bundle_send_and_sync_follows_only_it() -> None:
    """Issue #27 item 2 in the public API: ``key=`` signs bundles (not a packet sent as it
    is), the receiver marks them authenticated, and ``sync=True`` with the key refuses a
    stranger's unsigned timetags (``unauthenticated``) and follows the keyed sender."""
    key = "a key both ends hold, 32 bytes!"
    got: list[oscsync.Received] = []
    with (
        oscsync.Endpoint(listen=0, key=key, sync=True) as receiver,
        oscsync.Endpoint(peers=receiver.port) as stranger,
        oscsync.Endpoint(peers=receiver.port, key=key) as leader,
    ):
        receiver.set_default_handler(got.append, hold=False)
        later = tt.add_seconds(leader.now(), 0.5)
        stranger.send("/tick", 0, at=later)
        assert receiver.sync is not None
        wait_until(lambda: receiver.sync.ignored["unauthenticated"] == 1, what="refused")  # type: ignore[union-attr]
        leader.send("/tick", 1, at=later)
        leader.send_bundle(later, [("/tick", 2)])
        leader.send_packet(codec.encode_bundle(later, [codec.encode_message("/raw", [3], "i")]))
        wait_until(lambda: len(got) == 2, what="the leader's two signed bundles")
        wait_until(lambda: receiver.sync.ignored["unauthenticated"] == 2, what="raw: unsigned")  # type: ignore[union-attr]
    assert [(r.args, r.authenticated) for r in got] == [((1,), True), ((2,), True)]


def test_a_sound_beyond_the_horizon_is_refused_whatever_the_backend(tmp_path: Path) -> None:
    # A player that places sounds itself (wav:, the sound card) was handed any timetag: an hour
    # ahead was accepted (an hour of silence rendered), where playsound's scheduler refused it.
    clock = oscsync.SystemClock()
    with oscsync.SoundPlayer(f"wav:{tmp_path / 'out.wav'}", clock=clock) as player:
        assert not player.play_at(tt.add_seconds(clock.now_timetag(), 3600.0))
        assert player.dropped == 1
        assert player.play_at(tt.add_seconds(clock.now_timetag(), 0.05))
        assert player.dropped == 1


def test_a_closed_endpoint_calls_back_nothing_more_on_a_shared_scheduler(
    autojump_clock: oscsync.FakeClock,
) -> None:
    clock = autojump_clock
    shared = oscsync.Scheduler(clock)
    shared.start()
    called: list[object] = []
    try:
        with oscsync.Endpoint(peers=free_udp_port(), clock=clock) as sender:
            receiver = oscsync.Endpoint(listen=0, clock=clock, scheduler=shared)
            receiver.on("/held", called.append)
            sender.set_peers(receiver.port)
            sender.send("/held", at=oscsync.add_seconds(clock.now_timetag(), 10))
            wait_until(lambda: shared.held == 1, what="the bundle held")  # real time: in flight
            receiver.close()
            clock.sleep(20)  # virtual time: past the timetag
            wait_until(lambda: shared.held == 0, what="the held callback taken off")
        assert called == []
    finally:
        shared.close()


def test_on_refuses_an_address_that_could_never_match_and_remove_an_unregistered_one() -> None:
    # on("tick") was taken and never called (no OSC address lacks the "/"), where send refuses
    # it; remove() of a misspelt address left the real callback running, silently.
    with oscsync.Endpoint(listen=0) as receiver:
        for bad in ("tick", "", "/has space", "/no#hash"):
            with pytest.raises(ValueError, match="not an OSC address"):
                receiver.on(bad, print)
        receiver.on("/tick", print)
        with pytest.raises(ValueError, match="no callback is registered"):
            receiver.remove("/tock")
        receiver.remove("/tick")
        with pytest.raises(ValueError, match="no callback is registered"):
            receiver.remove("/tick")


def test_send_bundle_refuses_an_element_that_is_not_one_with_an_encode_error() -> None:
    with oscsync.Endpoint(peers=free_udp_port()) as sender:
        at = oscsync.add_seconds(oscsync.now(), 1)
        # () raised a bare unpacking ValueError; "/tick" was sent as "/" with args t, i, c, k.
        for bad in ((), "/tick", 7):
            with pytest.raises(codec.EncodeError, match="bundle element"):
                sender.send_bundle(at, [bad])  # type: ignore[list-item]
        assert sender.stats.sent == 0
