"""The metronome's logic on a FakeClock: the send grid, offsets as timetags, onsets handed over."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import pytest

from oscsync.apps import metronome
from oscsync.apps.metronome import (
    MetronomeListener,
    TickRecord,
    TickSender,
    beat_of,
    tick_line,
    ticks_in,
)
from oscsync.audio import ACCENT, TICK
from oscsync.clock import FakeClock
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.scheduler import Scheduler

START = 1_700_000_000.0


class Wire:
    """A fake send: records (clock time, decoded messages) and costs ``cost`` seconds per send."""

    def __init__(self, clock: FakeClock, cost: float = 0.0) -> None:
        self.clock = clock
        self.cost = cost
        self.sent: list[tuple[float, list[codec.Message]]] = []

    def __call__(self, data: bytes) -> int:
        self.sent.append((self.clock.now(), codec.decode(data)))
        self.clock.advance(self.cost)
        return 1


# -- sending ----------------------------------------------------------------------------------


def run_sender(sender: TickSender, count: int | None = None, **start: object) -> int:
    """Start ``sender`` and step its scheduler on the fake clock until it is done; return t0."""
    t0 = sender.start(count, **start)  # type: ignore[arg-type]
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    while True:
        wait = sender.scheduler.run_due()
        if sender.done.is_set():
            return t0
        assert wait is not None, "the sender stopped submitting ticks"
        clock.advance(wait)


def test_grid_has_no_drift_over_10000_ticks_even_when_each_send_is_slow() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock, cost=0.003)  # every send takes 3 ms: accumulated sleeps would drift 30 s
    sender = TickSender(wire, Scheduler(clock), bpm=97.0)  # period not a binary fraction
    t0 = run_sender(sender, 10_000)
    assert sender.sent == len(wire.sent) == 10_000
    period = Fraction(60, 97)
    for k in (1, 2, 999, 5_000, 9_999):
        assert wire.sent[k][0] == pytest.approx(float(tt.to_unix_exact(t0) + k * period), abs=1e-6)
    # The timetag grid itself is exact to the NTP unit, computed from k, not summed.
    assert sender.grid_timetag(9_999) == t0 + round(9_999 * period * 2**32)
    assert sender.lateness.maximum < 1e-6  # each send ran at its grid time


def test_a_late_send_delays_that_tick_only() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    sender = TickSender(wire, Scheduler(clock), bpm=120)
    sender.start(4)
    sender.scheduler.run_due()  # tick 0
    clock.advance(0.75)  # the thread was held up: tick 1 (due at +0.5) runs 0.25 s late
    sender.scheduler.run_due()
    clock.advance(0.25)
    sender.scheduler.run_due()
    clock.advance(0.5)
    sender.scheduler.run_due()
    assert [when - START for when, _ in wire.sent] == [0.0, 0.75, 1.0, 1.5]


def test_plain_ticks_carry_the_beat_in_the_bar_as_int() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    run_sender(TickSender(wire, Scheduler(clock), bpm=120, beats_per_bar=3), 7)
    messages = [m for _, batch in wire.sent for m in batch]
    assert [(m.address, m.types, m.args, m.timetag) for m in messages] == [
        ("/tick", "i", (beat,), None) for beat in (0, 1, 2, 0, 1, 2, 0)
    ]
    # 120 bpm: every half second, starting now.
    assert [when - START for when, _ in wire.sent] == [k * 0.5 for k in range(7)]


@pytest.mark.parametrize("offset", [0.05, 0.1, 0.25])
def test_offset_ticks_are_bundles_timetagged_offset_after_their_grid_time(offset: float) -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock, cost=0.001)
    sender = TickSender(wire, Scheduler(clock), bpm=120, offset=offset)
    t0 = run_sender(sender, 5)
    for k, (sent_at, batch) in enumerate(wire.sent):
        (message,) = batch
        grid = tt.add_seconds(t0, Fraction(k, 2))
        assert message.timetag == tt.add_seconds(grid, Fraction(offset))
        # Sent at the grid time, so the timetag is `offset` ahead of the moment of sending.
        assert tt.to_unix(message.timetag) - sent_at == pytest.approx(offset, abs=1e-6)
        assert message.args == (k % 4,)


def test_plain_false_at_offset_zero_sends_bundles_due_at_their_grid_time() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    t0 = run_sender(TickSender(wire, Scheduler(clock), bpm=120, plain=False), 3)
    assert [batch[0].timetag for _, batch in wire.sent] == [
        tt.add_seconds(t0, Fraction(k, 2)) for k in range(3)
    ]


def test_a_run_longer_than_the_scheduler_horizon_loses_no_tick() -> None:
    # The lab's leader sends whole sweeps through TickSender: only the next tick is ever held.
    clock = FakeClock(start=START)
    wire = Wire(clock)
    scheduler = Scheduler(clock, horizon=10.0)
    sender = TickSender(wire, scheduler, bpm=60, offset=0.5)
    run_sender(sender, 30)  # 30 s of ticks
    assert sender.sent == 30
    assert scheduler.stats().dropped_total == 0


def test_sender_stops_when_asked_and_when_its_scheduler_closes() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    sender = TickSender(wire, Scheduler(clock), bpm=120)
    run_sender(sender, on_sent=lambda k: sender.stop() if k == 2 else None)
    assert sender.sent == 3
    clock.advance(10)
    sender.scheduler.run_due()  # the tick submitted before the stop is not sent
    assert sender.sent == 3

    closing = TickSender(Wire(clock), Scheduler(clock), bpm=120)
    closing.scheduler.close()
    closing.start()
    assert closing.done.is_set() and closing.sent == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bpm": 0}, "bpm"),
        ({"bpm": float("nan")}, "bpm"),
        ({"beats_per_bar": 0}, "beats per bar"),
        ({"offset": -0.1}, "offset"),
    ],
)
def test_sender_rejects_impossible_settings(kwargs: dict[str, float], message: str) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match=message):
        TickSender(Wire(clock), Scheduler(clock), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("duration", "bpm", "expected"), [(2.0, 120, 4), (2.1, 120, 5), (0.0, 120, 0), (1, 60, 1)]
)
def test_ticks_in_duration(duration: float, bpm: float, expected: int) -> None:
    assert ticks_in(duration, bpm) == expected


# -- listening --------------------------------------------------------------------------------


class RecordingPlayer:
    """A Player that writes down what it is asked to play."""

    name = "recording"

    def __init__(self, lead: float) -> None:
        self.lead = lead
        self.played: list[tuple[float, str]] = []

    def load(self, path: str | Path, key: str = TICK) -> None:
        pass

    def start(self) -> None:
        pass

    def play_at(self, t: float, key: str = TICK) -> None:
        self.played.append((t, key))

    def describe(self) -> str:
        return ""

    def close(self) -> None:
        pass


def tick(
    clock: FakeClock, args: tuple[object, ...] = (1,), types: str = "i", ahead: float | None = None
) -> Received:
    """A /tick as the endpoint would hand it over: arrived now, timetagged ``ahead`` s later."""
    stamp = None if ahead is None else tt.from_unix(clock.now() + ahead)
    return Received(
        codec.Message("/tick", args, types, stamp), ("127.0.0.1", 9000), arrival=clock.now()
    )


def make_listener(
    clock: FakeClock, lead: float, **kwargs: object
) -> tuple[MetronomeListener, RecordingPlayer, Scheduler]:
    player = RecordingPlayer(lead)
    scheduler = Scheduler(clock)
    listener = MetronomeListener(player, scheduler, clock, **kwargs)  # type: ignore[arg-type]
    return listener, player, scheduler


def test_sample_placing_player_gets_the_timetag_at_once_not_the_arrival_time() -> None:
    clock = FakeClock(start=START)
    listener, player, scheduler = make_listener(clock, lead=float("inf"))
    listener.on_message(tick(clock, ahead=0.125))
    scheduler.run_due()
    assert player.played == [(START + 0.125, TICK)]  # told right away, about the timetag


def test_player_without_lead_is_told_at_the_timetag() -> None:
    clock = FakeClock(start=START)
    listener, player, scheduler = make_listener(clock, lead=0.0)
    listener.on_message(tick(clock, ahead=0.25))
    scheduler.run_due()
    assert player.played == []  # held until its time
    clock.advance(0.25)
    scheduler.run_due()
    assert player.played == [(START + 0.25, TICK)]
    assert listener.stats.late == 0


def test_plain_tick_plays_now_and_late_bundle_plays_when_handled() -> None:
    clock = FakeClock(start=START)
    listener, player, scheduler = make_listener(clock, lead=float("inf"))
    listener.on_message(tick(clock))  # plain
    listener.on_message(tick(clock, ahead=-0.5))  # its time passed before it arrived
    clock.advance(0.25)
    scheduler.run_due()
    handled = START + 0.25
    assert player.played == [(handled, TICK), (handled, TICK)]
    assert listener.stats.late == 1
    assert (listener.stats.arrived_late, listener.stats.played_late) == (1, 0)
    assert listener.stats.ticks == 2


class PlacingPlayer(RecordingPlayer):
    """A sound card's player: places sounds itself, needs ``playout`` s to do so on time."""

    def __init__(self, playout: float) -> None:
        super().__init__(float("inf"))
        self.playout = playout

    def playout_latency(self) -> float:
        return self.playout


def test_early_tick_dispatched_late_is_played_late_not_arrived_late() -> None:
    """Issue 29: a tick 100 ms early that the timer ran 2 ms late read 'headroom +99.8 ms LATE';
    it arrived in time, this machine played it late."""
    clock = FakeClock(start=START)
    records: list[TickRecord] = []
    listener, _, scheduler = make_listener(clock, lead=0.0, on_tick=records.append)
    listener.on_message(tick(clock, ahead=0.1))
    clock.advance(0.1 + 0.002)  # the timer thread woke 2 ms late
    scheduler.run_due()
    (record,) = records
    assert (record.arrived_late, record.played_late, record.late) == (False, True, True)
    assert record.played_ms == pytest.approx(2.0, abs=1e-3)
    assert (listener.stats.arrived_late, listener.stats.played_late) == (0, 1)
    assert tick_line(record).endswith("headroom +100.000 ms  PLAYED LATE +2.000 ms")
    assert "arrived late 0  played late 1" in listener.status()


def test_tick_after_its_timetag_is_arrived_late_and_within_1_ms_is_on_time() -> None:
    clock = FakeClock(start=START)
    records: list[TickRecord] = []
    listener, _, scheduler = make_listener(clock, lead=0.0, on_tick=records.append)
    listener.on_message(tick(clock, ahead=-0.0005))  # 0.5 ms after: within the threshold
    listener.on_message(tick(clock, ahead=-0.003))  # 3 ms after its timetag
    scheduler.run_due()
    assert [(r.arrived_late, r.played_late) for r in records] == [(False, False), (True, False)]
    assert tick_line(records[1]).endswith("ARRIVED LATE")


def test_a_placing_player_whose_playout_exceeds_the_headroom_plays_late() -> None:
    """The two-machine rig: 50 ms offset, 21.3 ms output latency + a block: ticks arriving with
    less headroom than that were played late by the sound card; the listener says so."""
    clock = FakeClock(start=START)
    records: list[TickRecord] = []
    player = PlacingPlayer(playout=0.032)
    scheduler = Scheduler(clock)
    warnings: list[str] = []
    listener = MetronomeListener(
        player, scheduler, clock, on_tick=records.append, on_warning=warnings.append
    )
    listener.on_message(tick(clock, ahead=0.05))  # 50 ms headroom: room for 32 ms
    listener.on_message(tick(clock, ahead=0.02))  # 20 ms headroom: 12 ms short
    listener.on_message(tick(clock, ahead=0.01))  # again: the warning is not repeated
    scheduler.run_due()
    assert [(r.arrived_late, r.played_late) for r in records] == [
        (False, False),
        (False, True),
        (False, True),
    ]
    assert records[1].played_ms == pytest.approx(12.0, abs=1e-3)
    assert records[1].onset == START + 0.02  # still asked for at its timetag
    assert warnings == [
        "offset too small for this listener: a tick arrived 20.0 ms before its timetag, but its "
        "player needs 32.0 ms (output latency + one block), so it is played late; the sender's "
        "--offset must grow by at least 12.0 ms (--offset auto counts it)"
    ]


def test_log_source_brackets_an_ipv6_sender() -> None:
    clock = FakeClock(start=START)
    records: list[metronome.TickRecord] = []
    listener, _, scheduler = make_listener(clock, lead=float("inf"), on_tick=records.append)
    listener.on_message(tick(clock))
    listener.on_message(tick(clock)._replace(source=("::1", 9000, 0, 0)))  # type: ignore[arg-type]
    scheduler.run_due()
    assert [record.source for record in records] == ["127.0.0.1:9000", "[::1]:9000"]


def test_beat_zero_of_the_bar_is_the_accent() -> None:
    clock = FakeClock(start=START)
    listener, player, scheduler = make_listener(clock, lead=float("inf"), beats_per_bar=3)
    for beat in range(7):
        listener.on_message(tick(clock, (beat,)))
    listener.on_message(tick(clock, (), ""))  # no beat: never an accent
    scheduler.run_due()
    assert [key for _, key in player.played] == [
        ACCENT, TICK, TICK, ACCENT, TICK, TICK, ACCENT, TICK,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "types", "beat"),
    [((), "", None), ((3,), "i", 3), ((2.0,), "f", 2), ((1.6,), "f", 2), ((5, "x"), "is", 5)],
)
def test_tick_accepts_no_argument_int_or_float(
    args: tuple[object, ...], types: str, beat: int | None
) -> None:
    assert beat_of(codec.Message("/tick", args, types)) == beat


def test_bad_ticks_and_other_addresses_are_counted_not_played() -> None:
    clock = FakeClock(start=START)
    listener, player, scheduler = make_listener(clock, lead=float("inf"))
    listener.on_message(tick(clock, ("one",), "s"))
    listener.on_message(tick(clock, (float("nan"),), "f"))
    listener.on_message(
        Received(codec.Message("/chat", ("hi",), "s"), ("127.0.0.1", 1), arrival=clock.now())
    )
    scheduler.run_due()
    assert player.played == []
    assert dict(listener.stats.ignored) == {"bad-beat": 2, "other-address": 1}


def test_log_has_one_documented_object_per_tick() -> None:
    clock = FakeClock(start=START)
    log = io.StringIO()
    listener, _, scheduler = make_listener(clock, lead=0.0, log=log)
    listener.on_message(tick(clock, (0,), ahead=0.125))
    clock.advance(0.0625)
    listener.on_message(tick(clock, (1.0,), "f"))
    scheduler.run_due()  # the plain tick
    clock.advance(0.0625)
    scheduler.run_due()  # the bundle, at its timetag
    first, second = (json.loads(line) for line in log.getvalue().splitlines())
    assert list(first) == metronome.record_fields()
    assert first == {
        "seq": 0,
        "beat": 1,
        "accent": False,
        "arrival": START + 0.0625,
        "timetag": None,
        "timetag_hex": None,
        "onset": START + 0.0625,
        "handled": START + 0.0625,
        "late": False,
        "headroom_ms": None,
        "source": "127.0.0.1:9000",
        "arrived_late": False,
        "played_late": False,
        "played_ms": None,
    }
    assert second["beat"] == 0 and second["accent"] is True
    assert second["arrival"] == START
    assert second["timetag"] == second["onset"] == START + 0.125
    assert second["timetag_hex"] == tt.format_hex(tt.from_unix(START + 0.125))
    assert second["headroom_ms"] == 125.0
    assert (second["arrived_late"], second["played_late"], second["played_ms"]) == (
        False,
        False,
        0.0,
    )
    # Every field the module docstring documents is in the record, and no other.
    for name in metronome.record_fields():
        assert f"``{name}``" in (metronome.__doc__ or "")


def test_limit_stops_playing_after_count_ticks() -> None:
    clock = FakeClock(start=START)
    listener, player, scheduler = make_listener(clock, lead=float("inf"), limit=2)
    for beat in range(4):
        listener.on_message(tick(clock, (beat,)))
    scheduler.run_due()
    assert len(player.played) == 2
    assert listener.stats.ignored["over-count"] == 2


def test_stats_line_shows_intervals_and_headroom() -> None:
    clock = FakeClock(start=START)
    listener, _, scheduler = make_listener(clock, lead=float("inf"))
    for k in range(4):
        listener.on_message(tick(clock, (k,), ahead=0.125))
        scheduler.run_due()
        clock.advance(0.5)
    stats = listener.stats
    assert stats.intervals.count == 3
    assert stats.intervals.mean == pytest.approx(0.5)
    assert stats.intervals.std == pytest.approx(0.0, abs=1e-9)
    assert listener.status() == (
        "ticks 4  arrived late 0  played late 0  interval 500.000 ± 0.000 ms  "
        "headroom mean +125.0 ms (min +125.0)"
    )


def test_ticks_beyond_the_horizon_are_refused_for_every_kind_of_player() -> None:
    for lead in (0.0, float("inf")):
        clock = FakeClock(start=START)
        listener, player, scheduler = make_listener(clock, lead=lead)
        listener.on_message(tick(clock, ahead=scheduler.horizon + 1))
        clock.advance(scheduler.horizon + 2)
        scheduler.run_due()
        assert player.played == []
        assert sum(listener.stats.ignored.values()) == 1


# -- issue #13: what a listener tells a newcomer ------------------------------------------------


def test_inter_onset_statistics_restart_after_a_gap_of_several_beats() -> None:
    # Two senders one after the other: 4 ticks at 500 ms, a 10 s pause, 4 ticks at 250 ms.
    clock = FakeClock(start=START)
    listener, _, scheduler = make_listener(clock, lead=float("inf"))
    for period, count in ((0.5, 4), (0.25, 4)):
        for k in range(count):
            listener.on_message(tick(clock, (k,)))
            scheduler.run_due()
            clock.advance(period)
        clock.advance(10.0)
    stats = listener.stats
    assert stats.runs == 2
    assert stats.intervals.count == 3  # the second run's intervals only, not the pause
    assert stats.intervals.mean == pytest.approx(0.25)
    assert "interval 250.000 ± 0.000 ms (run 2)" in listener.status()


def test_inter_onset_statistics_drop_a_lone_tick_before_a_pause() -> None:
    stats = metronome.ListenerStats()
    for interval in (None, 9.0, 0.5, 0.5):  # one tick, a 9 s pause, then a steady 500 ms
        stats.add_onset_interval(interval)
    assert (stats.runs, stats.intervals.count) == (2, 2)
    assert stats.intervals.mean == pytest.approx(0.5)


def test_headroom_label_is_the_mean_not_the_last_tick() -> None:
    clock = FakeClock(start=START)
    listener, _, scheduler = make_listener(clock, lead=float("inf"))
    for ahead in (0.1, 0.3):
        listener.on_message(tick(clock, ahead=ahead))
        scheduler.run_due()
        clock.advance(0.5)
    assert "headroom mean +200.0 ms (min +100.0)" in listener.status()


def test_tick_lines_show_the_source_and_a_second_sender_is_warned_once() -> None:
    clock = FakeClock(start=START)
    warnings: list[str] = []
    lines: list[str] = []
    listener, _, scheduler = make_listener(
        clock,
        lead=float("inf"),
        on_warning=warnings.append,
        on_tick=lambda record: lines.append(metronome.tick_line(record)),
    )
    for source in (("127.0.0.1", 9000), ("127.0.0.1", 9000), ("10.0.0.2", 4000), ("10.0.0.3", 1)):
        listener.on_message(tick(clock)._replace(source=source))
        scheduler.run_due()
        clock.advance(0.5)
    assert lines[0] == "tick 0  beat 1  from 127.0.0.1:9000"
    assert lines[2] == "tick 2  beat 1  from 10.0.0.2:4000"
    assert len(warnings) == 1
    assert "10.0.0.2:4000" in warnings[0] and "127.0.0.1:9000" in warnings[0]
    assert "senders 3" in listener.status()


def test_ntp_era_1_metronome_send_keeps_ticking_across_the_rollover_and_exits() -> None:
    start = float(tt.UNIX_MAX) - 1.0  # one second before 2036-02-07 06:28:16 UTC
    clock = FakeClock(start=start)
    wire = Wire(clock)
    sender = TickSender(wire, Scheduler(clock), bpm=240, offset=0.125)  # 0.25 s grid
    t0 = run_sender(sender, 8)  # ticks 4..7 are in era 1
    assert sender.done.is_set() and sender.sent == 8
    assert [when - start for when, _ in wire.sent] == [k * 0.25 for k in range(8)]
    stamps = [messages[0].timetag for _, messages in wire.sent]
    assert stamps[-1] < stamps[0]  # the wire values wrapped
    for k, stamp in enumerate(stamps):
        assert stamp is not None
        assert tt.to_unix(stamp, near=start) == start + k * 0.25 + 0.125
        assert tt.difference(stamp, t0) == k * 0.25 + 0.125


def test_blob_bomb_metronome_listener_declares_held_ticks_in_bytes() -> None:
    clock = FakeClock(start=START)
    player = RecordingPlayer(0.0)
    scheduler = Scheduler(clock, max_bytes=1_500_000)
    listener = MetronomeListener(player, scheduler, clock)  # type: ignore[arg-type]
    heavy = tuple(range(16_000))  # what one 64 KB /tick can carry after its beat
    for _ in range(5):
        listener.on_message(tick(clock, heavy, "i" * len(heavy), ahead=0.5))
    assert scheduler.held == 1 and 1_000_000 < scheduler.held_bytes <= 1_500_000
    assert listener.stats.ignored == {"refused": 4}
    clock.advance(0.5)
    scheduler.run_due()
    assert player.played == [(START + 0.5, ACCENT)]
