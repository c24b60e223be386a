"""The timetag scheduler, driven step by step on a FakeClock (no sleeps), plus its timer thread."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

import pytest

from conftest import oscsync_command
from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import FakeClock, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.scheduler import (
    LATENESS_SAMPLES,
    Dispatch,
    LatePolicy,
    Scheduler,
    percentile,
)


def tag_in(clock: FakeClock, seconds: float) -> int:
    """The timetag ``seconds`` from the fake clock's now (use binary fractions: exact)."""
    return tt.from_unix(clock.now() + seconds)


class Recorder:
    """Actions that write down (name, Dispatch) when they run."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Dispatch]] = []

    def action(self, name: str) -> Callable[[Dispatch], None]:
        def run(dispatch: Dispatch) -> None:
            self.runs.append((name, dispatch))

        return run

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.runs]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def warnings() -> list[str]:
    return []


@pytest.fixture
def sched(fake_clock: FakeClock, warnings: list[str]) -> Scheduler:
    return Scheduler(fake_clock, on_warning=warnings.append)


def test_future_items_run_in_due_order_at_their_time(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    for name, ahead in (("c", 0.75), ("a", 0.25), ("b", 0.5)):
        assert sched.submit(tag_in(fake_clock, ahead), rec.action(name))
    start = fake_clock.monotonic()

    assert sched.run_due() == 0.25  # nothing due yet; the wait is to the earliest
    assert rec.names == []
    fake_clock.advance(0.25)
    assert sched.run_due() == 0.25
    assert rec.names == ["a"]
    fake_clock.advance(0.5)
    assert sched.run_due() is None
    assert rec.names == ["a", "b", "c"]
    dues = [d.due - start for _, d in rec.runs]
    assert dues == [0.25, 0.5, 0.75]
    # b and c ran late because the clock jumped past them; a ran exactly on time.
    assert [d.lateness for _, d in rec.runs] == [0.0, 0.25, 0.0]
    assert all(d.dispatched >= d.due for _, d in rec.runs)


def test_due_time_is_the_timetag_mapped_to_monotonic(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    tag = tag_in(fake_clock, 0.5)
    sched.submit(tag, rec.action("x"))
    fake_clock.advance(0.5)
    sched.run_due()
    (_, dispatch) = rec.runs[0]
    assert dispatch.timetag == tag
    assert dispatch.due == fake_clock.wall_to_monotonic(tt.to_unix(tag))
    assert fake_clock.monotonic_to_wall(dispatch.dispatched) == tt.to_unix(tag)


def test_equal_timetags_keep_arrival_order(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    tag = tag_in(fake_clock, 0.5)
    names = [f"m{i}" for i in range(20)]
    for name in names:
        sched.submit(tag, rec.action(name))
    fake_clock.advance(0.5)
    sched.run_due()
    assert rec.names == names


def test_nested_bundles_each_run_at_their_own_timetag(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    outer, inner = tag_in(fake_clock, 0.25), tag_in(fake_clock, 0.5)
    datagram = codec.encode_bundle(
        outer,
        [
            codec.encode_message("/a", [1]),
            codec.encode_bundle(inner, [codec.encode_message("/b", [2])]),
            codec.encode_message("/c", [3]),
        ],
    )
    for message in codec.decode(datagram):
        sched.submit(message.timetag, rec.action(message.address))

    fake_clock.advance(0.25)
    sched.run_due()
    assert sorted(rec.names) == ["/a", "/c"]
    fake_clock.advance(0.25)
    sched.run_due()
    assert rec.names[-1] == "/b"
    assert {name: d.timetag for name, d in rec.runs} == {"/a": outer, "/c": outer, "/b": inner}
    assert all(d.lateness == 0 for _, d in rec.runs)


def test_immediate_items_never_wait_behind_a_held_bundle(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    sched.submit(tag_in(fake_clock, 30.0), rec.action("far"))
    sched.submit(None, rec.action("plain"))
    sched.submit(tt.IMMEDIATELY, rec.action("immediately"))
    sched.submit(tag_in(fake_clock, 0.25), rec.action("near"))

    assert sched.run_due() == 0.25
    assert rec.names == ["plain", "immediately"]
    assert [d.timetag for _, d in rec.runs] == [None, None]
    assert not any(d.late for _, d in rec.runs)
    fake_clock.advance(0.25)
    assert sched.run_due() == 29.75
    assert rec.names[-1] == "near"
    assert sched.held == 1


def test_late_bundles_run_at_once_in_arrival_order_and_count_late(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    sched.submit(None, rec.action("plain"))
    sched.submit(tag_in(fake_clock, -0.5), rec.action("late"))
    sched.submit(tag_in(fake_clock, -0.25), rec.action("less late"))
    sched.run_due()

    assert rec.names == ["plain", "late", "less late"]
    assert [d.lateness for _, d in rec.runs] == [0.0, 0.5, 0.25]
    assert [d.late for _, d in rec.runs] == [False, True, True]
    stats = sched.stats()
    assert (stats.dispatched, stats.late, stats.dropped_total) == (3, 2, 0)
    assert (stats.arrived_late, stats.played_late) == (2, 0)  # submitted after their time
    assert stats.lateness_max == 0.5


def test_lateness_within_tolerance_is_not_counted_late(
    fake_clock: FakeClock, rec: Recorder
) -> None:
    sched = Scheduler(fake_clock, late_tolerance=0.25)
    sched.submit(tag_in(fake_clock, -0.25), rec.action("at the bound"))
    sched.submit(tag_in(fake_clock, -0.5), rec.action("beyond"))
    sched.run_due()
    assert [d.late for _, d in rec.runs] == [False, True]
    assert sched.stats().late == 1


def test_late_drop_policy_refuses_bundles_beyond_the_bound(
    fake_clock: FakeClock, rec: Recorder, warnings: list[str]
) -> None:
    sched = Scheduler(
        fake_clock, late_policy=LatePolicy(drop_after=0.25), on_warning=warnings.append
    )
    assert not sched.submit(tag_in(fake_clock, -0.5), rec.action("too late"))
    assert not sched.submit(tag_in(fake_clock, -0.375), rec.action("also too late"))
    assert sched.submit(tag_in(fake_clock, -0.25), rec.action("just in"))
    assert sched.submit(None, rec.action("plain"))  # no timetag: never late
    sched.run_due()

    assert rec.names == ["just in", "plain"]
    stats = sched.stats()
    assert stats.dropped == {"late": 2}
    assert stats.dispatched == 2
    assert len(warnings) == 1 and "late" in warnings[0]


def test_late_drop_applies_at_dispatch_after_a_slow_handler(
    fake_clock: FakeClock, rec: Recorder
) -> None:
    sched = Scheduler(fake_clock, late_policy=LatePolicy(drop_after=0.125))
    tag = tag_in(fake_clock, 0.25)

    def slow(dispatch: Dispatch) -> None:
        rec.runs.append(("slow", dispatch))
        fake_clock.advance(0.5)

    sched.submit(tag, slow)
    sched.submit(tag, rec.action("next"))
    sched.submit(None, rec.action("plain"))
    fake_clock.advance(0.25)
    sched.run_due()
    assert rec.names == ["plain", "slow"]
    assert sched.stats().dropped == {"late": 1}


def test_slow_handler_overrun_shows_as_lateness_of_the_next_item(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    tag = tag_in(fake_clock, 0.25)

    def slow(dispatch: Dispatch) -> None:
        rec.runs.append(("slow", dispatch))
        fake_clock.advance(0.125)

    sched.submit(tag, slow)
    sched.submit(tag, rec.action("next"))
    fake_clock.advance(0.25)
    sched.run_due()
    assert rec.names == ["slow", "next"]
    assert [d.lateness for _, d in rec.runs] == [0.0, 0.125]
    assert rec.runs[1][1].late
    assert sched.stats().lateness_max == 0.125
    # It arrived in time: this machine ran it late (issue 29: the two figures apart).
    assert (sched.stats().arrived_late, sched.stats().played_late) == (0, 1)


def test_cap_refuses_beyond_max_items_counts_and_warns_once(
    fake_clock: FakeClock, rec: Recorder, warnings: list[str]
) -> None:
    sched = Scheduler(fake_clock, max_items=3, on_warning=warnings.append)
    accepted = [sched.submit(tag_in(fake_clock, 0.5), rec.action(f"b{i}")) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert sched.held == 3
    assert sched.stats().dropped == {"cap": 2}
    assert len(warnings) == 1 and "3 items" in warnings[0]
    # Already-due items are not blocked by a cap full of waiting ones (python-osc #110) ...
    assert sched.submit(None, rec.action("plain"))
    sched.run_due()
    assert rec.names == ["plain"]
    # ... but a stalled timer thread cannot let them pile up either: 2 x max_items in all.
    assert [sched.submit(None, rec.action(f"p{i}")) for i in range(4)] == [True] * 3 + [False]
    assert sched.stats().dropped == {"cap": 3}

    fake_clock.advance(0.5)
    sched.run_due()
    assert rec.names == ["plain", "p0", "p1", "p2", "b0", "b1", "b2"]
    assert sched.submit(None, rec.action("after"))  # room again
    sched.run_due()
    assert rec.names[-1] == "after"


def test_horizon_refuses_far_timetags_counts_and_warns_once(
    fake_clock: FakeClock, rec: Recorder, warnings: list[str]
) -> None:
    sched = Scheduler(fake_clock, horizon=10.0, on_warning=warnings.append)
    assert not sched.submit(tag_in(fake_clock, 10.5), rec.action("beyond"))
    assert not sched.submit(tag_in(fake_clock, 3600.0), rec.action("far beyond"))
    assert sched.submit(tag_in(fake_clock, 10.0), rec.action("at the horizon"))
    assert sched.stats().dropped == {"horizon": 2}
    assert len(warnings) == 1 and "10 s" in warnings[0]
    fake_clock.advance(10.0)
    sched.run_due()
    assert rec.names == ["at the horizon"]


def test_close_with_items_held_discards_them_and_refuses_more(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    for ahead in (0.25, 0.5, 0.75):
        sched.submit(tag_in(fake_clock, ahead), rec.action("held"))
    sched.close()
    fake_clock.advance(1.0)
    assert sched.run_due() is None
    assert not sched.submit(None, rec.action("after close"))
    assert rec.runs == []
    assert sched.stats().dropped == {"closed": 3}
    assert sched.held == 0
    sched.close()  # twice is fine


def test_nothing_runs_after_close_called_from_an_action(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder
) -> None:
    tag = tag_in(fake_clock, 0.25)

    def closer(dispatch: Dispatch) -> None:
        rec.runs.append(("closer", dispatch))
        sched.close()

    sched.submit(tag, closer)
    sched.submit(tag, rec.action("after"))
    fake_clock.advance(0.25)
    assert sched.run_due() is None
    assert rec.names == ["closer"]
    assert sched.stats().dropped == {"closed": 1}


def test_an_action_may_submit_and_a_failing_one_is_counted(
    sched: Scheduler, fake_clock: FakeClock, rec: Recorder, warnings: list[str]
) -> None:
    def failing(_: Dispatch) -> None:
        raise RuntimeError("boom")

    def chaining(_: Dispatch) -> None:
        sched.submit(tag_in(fake_clock, 0.25), rec.action("chained"))

    sched.submit(None, failing)
    sched.submit(None, failing)
    sched.submit(None, chaining)
    assert sched.run_due() == 0.25
    fake_clock.advance(0.25)
    sched.run_due()
    assert rec.names == ["chained"]
    assert sched.stats().errors == 2
    assert len(warnings) == 1 and "boom" in warnings[0]


def test_lateness_percentiles_come_from_a_bounded_ring(
    sched: Scheduler, fake_clock: FakeClock
) -> None:
    dispatches: list[Dispatch] = []
    for k in range(1, 201):
        sched.submit(tag_in(fake_clock, -k / 1024), dispatches.append)
    sched.run_due()
    samples = sorted(d.lateness for d in dispatches)
    stats = sched.stats()
    assert stats.lateness_p50 == percentile(samples, 0.5) == samples[99]
    assert stats.lateness_p99 == samples[197]
    assert stats.lateness_max == samples[-1]

    # Far more on-time items than the ring holds: percentiles forget the old lateness, the
    # maximum does not, and memory stays bounded.
    sched.submit(tag_in(fake_clock, -100.0), dispatches.append)
    sched.run_due()
    for _ in range(LATENESS_SAMPLES):
        sched.submit(tag_in(fake_clock, 0.0), dispatches.append)
    sched.run_due()
    stats = sched.stats()
    assert stats.lateness_p99 == 0.0
    assert stats.lateness_max == 100.0
    assert stats.dispatched == 201 + LATENESS_SAMPLES


def test_stats_summary_names_counts_and_reasons(sched: Scheduler, fake_clock: FakeClock) -> None:
    assert sched.stats().summary() == (
        "scheduler: 0 dispatched, 0 arrived late, 0 played late, 0 dropped"
    )
    sched.submit(tag_in(fake_clock, -0.5), lambda _: None)
    sched.submit(tag_in(fake_clock, 120.0), lambda _: None)
    sched.run_due()
    assert sched.stats().summary() == (
        "scheduler: 1 dispatched, 1 arrived late, 0 played late, 1 dropped (horizon 1); "
        "lateness p50 500000.0 µs p99 500000.0 µs max 500000.0 µs"
    )


def test_late_policy_text_and_validation() -> None:
    assert str(LatePolicy()) == "keep"
    assert str(LatePolicy(drop_after=0.005)) == "drop:5ms"
    with pytest.raises(ValueError):
        LatePolicy(drop_after=-1.0)
    with pytest.raises(ValueError):
        Scheduler(FakeClock(), max_items=0)
    with pytest.raises(ValueError):
        Scheduler(FakeClock(), spin=-0.001)


# -- the timer thread on an autojump FakeClock: exact times, no real waiting -------------------


def test_timer_thread_dispatches_exactly_on_time_on_an_autojump_clock(
    autojump_clock: FakeClock,
) -> None:
    clock = autojump_clock
    start = clock.monotonic()
    ran: list[tuple[str, float]] = []
    with Scheduler(clock) as sched:
        sched.start()
        for name, ahead in (("c", 0.75), ("a", 0.25), ("b", 0.5)):
            sched.submit(
                tag_in(clock, ahead), lambda d, name=name: ran.append((name, d.dispatched))
            )
        clock.sleep(1.0)  # the clock jumps to each due time while this thread waits
        stats = sched.stats()
    # In order and exactly on time: no spin (it would never end on a clock that stands still).
    assert ran == [("a", start + 0.25), ("b", start + 0.5), ("c", start + 0.75)]
    assert stats.late == 0 and stats.dispatched == 3


def test_timer_thread_replans_for_an_earlier_item_on_an_autojump_clock(
    autojump_clock: FakeClock,
) -> None:
    clock = autojump_clock
    start = clock.monotonic()
    ran: list[tuple[str, float]] = []
    with Scheduler(clock) as sched:
        sched.start()
        sched.submit(tag_in(clock, 10.0), lambda d: ran.append(("far", d.dispatched)))
        clock.sleep(0.25)
        assert ran == [] and sched.held == 1
        # The thread waits for "far"; an earlier item must wake it to plan for that one.
        sched.submit(tag_in(clock, 0.25), lambda d: ran.append(("near", d.dispatched)))
        clock.sleep(1.0)
        assert ran == [("near", start + 0.5)]
        clock.sleep(10.0)
    assert ran == [("near", start + 0.5), ("far", start + 10.0)]


# -- the timer thread, on the real clock: ordering and >= bounds only, no timing asserts ------


def test_thread_runs_plain_messages_while_a_far_bundle_is_held() -> None:
    clock = SystemClock()
    ran = threading.Event()
    with Scheduler(clock) as sched:
        sched.start()
        sched.submit(tt.from_unix(clock.now() + 30.0), lambda _: None)
        sched.submit(None, lambda _: ran.set())
        assert ran.wait(10.0)
        assert sched.held == 1


def test_thread_never_dispatches_before_the_due_time() -> None:
    clock = SystemClock()
    dispatches: list[Dispatch] = []
    done = threading.Event()

    def record(dispatch: Dispatch) -> None:
        dispatches.append(dispatch)
        if len(dispatches) == 5:
            done.set()

    with Scheduler(clock) as sched:
        sched.start()
        base = clock.now()
        # Submitted out of order; an earlier one arriving must wake the thread to re-plan.
        # Spaced 0.1 s apart so a stall between two submits cannot reorder them.
        for ahead in (0.5, 0.1, 0.4, 0.2, 0.3):
            sched.submit(tt.from_unix(base + ahead), record)
        assert done.wait(10.0)
    assert [d.due for d in dispatches] == sorted(d.due for d in dispatches)
    for dispatch in dispatches:
        assert dispatch.timetag is not None
        assert dispatch.due == clock.wall_to_monotonic(tt.to_unix(dispatch.timetag))
        assert dispatch.dispatched >= dispatch.due


def test_close_returns_promptly_with_items_held_and_nothing_runs_after() -> None:
    clock = SystemClock()
    ran: list[Dispatch] = []
    sched = Scheduler(clock)
    sched.start()
    for k in range(100):
        sched.submit(tt.from_unix(clock.now() + 20.0 + k / 100), ran.append)
    sched.close(timeout=10.0)
    thread = sched._thread
    assert thread is not None and not thread.is_alive()
    assert ran == []
    assert sched.stats().dropped == {"closed": 100}


# -- a real socket: `oscsync send --in` into an Endpoint feeding the scheduler -----------------


def test_bundle_from_send_in_is_dispatched_at_or_after_its_timetag() -> None:
    clock = SystemClock()
    seen: list[tuple[Received, Dispatch]] = []
    done = threading.Event()
    with (
        Scheduler(clock) as sched,
        open_endpoint(HostPort("127.0.0.1", 0), clock=clock) as endpoint,
    ):

        def on_message(received: Received) -> None:
            def record(dispatch: Dispatch) -> None:
                seen.append((received, dispatch))
                done.set()

            sched.submit(received.timetag, record)

        sched.start()
        endpoint.start(on_message)
        where = str(endpoint.local_address)
        subprocess.run([*oscsync_command("send", where, "/go", "1", "--in", "0.2")], check=True)
        assert done.wait(10.0)
    ((received, dispatch),) = seen
    assert received.timetag is not None and dispatch.timetag == received.timetag
    assert received.arrival < tt.to_unix(received.timetag)  # it came early, so it was held
    assert dispatch.due == clock.wall_to_monotonic(tt.to_unix(received.timetag))
    assert dispatch.dispatched >= dispatch.due  # never before the timetag
    assert sched.stats().dispatched == 1


def test_close_after_an_interrupted_start_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGTERM can land inside Thread.start(); close() in the command's finally must still work.
    sched = Scheduler(FakeClock())

    def interrupted(self: threading.Thread) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sched.start()
    monkeypatch.undo()
    sched.close()
    assert sched.closed


# -- issue 20, item 1: held data is capped in bytes, not only items ---------------------------


def test_blob_bomb_scheduler_caps_held_bytes(fake_clock: FakeClock) -> None:
    warnings: list[str] = []
    sched = Scheduler(fake_clock, max_items=100, max_bytes=1000, on_warning=warnings.append)
    runs = Recorder()
    assert sched.submit(tag_in(fake_clock, 1.0), runs.action("a"), size=600)
    assert sched.submit(tag_in(fake_clock, 1.0), runs.action("b"), size=400)
    assert sched.held_bytes == 1000
    assert not sched.submit(tag_in(fake_clock, 1.0), runs.action("c"), size=1)
    # An item already due may use a second allowance, so a plain message is not blocked.
    assert sched.submit(None, runs.action("now"), size=500)
    assert sched.stats().dropped == {"cap-bytes": 1}
    assert len(warnings) == 1 and "1000 bytes" in warnings[0]
    sched.run_due()
    assert sched.held_bytes == 1000
    fake_clock.advance(1.0)
    sched.run_due()
    assert [name for name, _ in runs.runs] == ["now", "a", "b"]
    assert sched.held_bytes == 0
    assert sched.submit(tag_in(fake_clock, 1.0), runs.action("d"), size=1000)
    sched.close()
    assert sched.held_bytes == 0


# -- issue 20, item 13: NTP era 1 ---------------------------------------------------------------


def test_ntp_era_1_scheduler_holds_and_runs_items_across_the_rollover() -> None:
    clock = FakeClock(start=float(tt.UNIX_MAX) - 0.75)  # 0.75 s before 2036-02-07 06:28:16
    sched = Scheduler(clock)
    runs = Recorder()
    before = tt.add_seconds(clock.now_timetag(), 0.5)
    after = tt.add_seconds(clock.now_timetag(), 1.0)  # era 1: a small wire value
    assert after < before
    assert sched.submit(after, runs.action("after"))
    assert sched.submit(before, runs.action("before"))
    assert sched.run_due() == pytest.approx(0.5)
    clock.advance(0.5)
    sched.run_due()
    clock.advance(0.5)
    sched.run_due()
    assert [name for name, _ in runs.runs] == ["before", "after"]
    assert all(dispatch.lateness == 0 and not dispatch.late for _, dispatch in runs.runs)
    assert sched.stats().dropped == {}


# -- inline_due: already-due items on the submitting thread (issue 18, head-of-line lever) -------


def test_inline_due_runs_a_plain_message_before_submit_returns(
    fake_clock: FakeClock, rec: Recorder
) -> None:
    sched = Scheduler(fake_clock, inline_due=True)
    sched.submit(tag_in(fake_clock, 30.0), rec.action("far"))
    seen_on: list[threading.Thread] = []
    sched.submit(None, lambda d: seen_on.append(threading.current_thread()))
    sched.submit(tag_in(fake_clock, -0.5), rec.action("late"))  # late: due, so inline too
    assert seen_on == [threading.current_thread()]  # no run_due, no timer thread
    assert rec.names == ["late"] and rec.runs[0][1].late
    stats = sched.stats()
    assert (stats.submitted, stats.dispatched, stats.late, stats.held) == (3, 2, 1, 1)
    assert sched.held_bytes == 0


def test_inline_due_keeps_due_order_behind_items_already_due(
    fake_clock: FakeClock, rec: Recorder
) -> None:
    sched = Scheduler(fake_clock, inline_due=True)
    sched.submit(tag_in(fake_clock, 0.25), rec.action("bundle"))
    fake_clock.advance(0.5)  # the bundle is due but the timer has not run it yet
    sched.submit(None, rec.action("plain"))
    assert rec.names == []  # queued behind the due bundle, not run ahead of it
    sched.run_due()
    assert rec.names == ["bundle", "plain"]


def test_inline_due_queues_behind_an_action_the_timer_is_running(fake_clock: FakeClock) -> None:
    sched = Scheduler(fake_clock, inline_due=True)
    order: list[str] = []
    running = threading.Event()
    release = threading.Event()

    def slow(_: Dispatch) -> None:
        order.append("slow starts")
        running.set()
        release.wait(10)
        order.append("slow ends")

    sched.submit(tag_in(fake_clock, 0.25), slow)
    fake_clock.advance(0.25)
    timer = threading.Thread(target=sched.run_due)
    timer.start()
    assert running.wait(10)
    sched.submit(None, lambda d: order.append("plain"))  # returns at once: queued
    assert order == ["slow starts"]
    release.set()
    timer.join(10)
    assert order == ["slow starts", "slow ends", "plain"]


def test_inline_due_action_holds_back_the_timer_until_it_ends(fake_clock: FakeClock) -> None:
    """Actions never overlap: the timer waits for an inline action, then measures its own."""
    sched = Scheduler(fake_clock, inline_due=True)
    order: list[str] = []
    running = threading.Event()
    release = threading.Event()

    def inline(_: Dispatch) -> None:
        order.append("inline starts")
        running.set()
        release.wait(10)
        order.append("inline ends")

    sched.submit(tag_in(fake_clock, 0.25), lambda d: order.append("bundle"))
    submitter = threading.Thread(target=sched.submit, args=(None, inline))
    submitter.start()
    assert running.wait(10)
    fake_clock.advance(0.25)
    timer = threading.Thread(target=sched.run_due)
    timer.start()
    timer.join(0.2)
    assert order == ["inline starts"]  # the bundle waits for the inline action's end
    release.set()
    submitter.join(10)
    timer.join(10)
    assert order == ["inline starts", "inline ends", "bundle"]


# -- rehearsals (issue 18: the action's work once before its due time, on warm caches) --------


def test_rehearsal_runs_twice_before_the_action_with_an_on_time_dispatch() -> None:
    clock = SystemClock()
    events: list[tuple[str, Dispatch]] = []
    done = threading.Event()

    def action(dispatch: Dispatch) -> None:
        events.append(("action", dispatch))
        done.set()

    # A spin longer than the lead: the item is taken at once and the whole wait is the spin,
    # so both rehearsals run however loaded the machine is.
    with Scheduler(clock, spin=5.0) as sched:
        sched.start()
        sched.submit(
            tt.from_unix(clock.now() + 0.05),
            action,
            rehearsal=lambda dispatch: events.append(("rehearsal", dispatch)),
        )
        assert done.wait(10.0)
    assert [name for name, _ in events] == ["rehearsal", "rehearsal", "action"]
    due = events[-1][1].due
    for _, rehearsed in events[:2]:
        assert rehearsed.due == rehearsed.dispatched == due and not rehearsed.late
    assert events[-1][1].dispatched >= due


def test_failing_rehearsal_is_counted_and_warned_and_the_action_still_runs() -> None:
    clock = SystemClock()
    warned: list[str] = []
    ran = threading.Event()

    def rehearsal(_: Dispatch) -> None:
        raise ValueError("boom")

    with Scheduler(clock, spin=5.0, on_warning=warned.append) as sched:
        sched.start()
        sched.submit(tt.from_unix(clock.now() + 0.05), lambda _: ran.set(), rehearsal=rehearsal)
        assert ran.wait(10.0)
    stats = sched.stats()
    assert stats.dispatched == 1 and stats.errors == 2
    assert len(warned) == 1 and "rehearsal failed" in warned[0] and "boom" in warned[0]


def test_rehearsal_never_runs_for_an_item_already_due(sched: Scheduler, rec: Recorder) -> None:
    rehearsed: list[Dispatch] = []
    sched.submit(None, rec.action("plain"), rehearsal=rehearsed.append)
    sched.run_due()
    assert rec.names == ["plain"] and rehearsed == []
