"""The sequencer's logic on a FakeClock: grid, swing, bars, reload at the bar line, wire, listener."""

from __future__ import annotations

import io
import json
import os
from fractions import Fraction
from pathlib import Path

import pytest

from oscsync import audio
from oscsync.apps import sequence
from oscsync.apps.sequence import (
    EventError,
    PatternFile,
    SequenceListener,
    SequenceSender,
    VoiceSounds,
    event_of,
    steps_in,
)
from oscsync.audio import TICK, sounds
from oscsync.clock import FakeClock
from oscsync.files.pattern import parse
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.scheduler import Scheduler

START = 1_700_000_000.0
BEAT = parse("kick: x... o...\nsnare: ..o. ....\nbass: 36 . . . . . 40 .\n")


class Wire:
    """A fake send: records (clock time, bundle timetag, decoded messages)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, int, list[codec.Message]]] = []

    def __call__(self, data: bytes) -> int:
        assert codec.is_bundle(data)
        messages = codec.decode(data)
        self.sent.append((self.clock.now(), tt.from_bytes(data[8:16]), messages))
        return 1


def run(sender: SequenceSender, count: int, between: object = None) -> int:
    """Start ``sender`` and step its scheduler on the fake clock until done; return t0."""
    t0 = sender.start(count)
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    while True:
        wait = sender.scheduler.run_due()
        if callable(between):
            between(sender)
        if sender.done.is_set():
            return t0
        assert wait is not None
        clock.advance(wait)


def test_one_bundle_per_sounding_step_with_a_message_per_voice() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    sender = SequenceSender(wire, Scheduler(clock), BEAT, bpm=120.0, offset=0.1)
    t0 = run(sender, 8)
    assert (sender.sent, sender.silent, sender.steps) == (4, 4, 8)  # rests: silent
    steps = [round((sent - START) / 0.125) for sent, _, _ in wire.sent]
    assert steps == [0, 2, 4, 6]  # steps 1, 3, 5, 7 are rests in every voice: nothing sent
    first = wire.sent[0][2]
    assert [(m.address, m.types, m.args) for m in first] == [
        ("/seq/kick", "fi", (1.0, 0)),
        ("/seq/bass", "fii", (pytest.approx(0.8), 0, 36)),
    ]
    assert [(m.address, m.args[1]) for m in wire.sent[1][2]] == [("/seq/snare", 2)]
    assert [(m.address, m.args[0]) for m in wire.sent[2][2]] == [("/seq/kick", pytest.approx(0.6))]
    # Each bundle is timetagged offset after its exact grid time (16ths at 120 bpm: 125 ms).
    assert [stamp for _, stamp, _ in wire.sent] == [
        tt.add_seconds(t0, Fraction(1, 8) * k + Fraction(1, 10)) for k in (0, 2, 4, 6)
    ]


def test_offset_zero_sends_immediate_bundles() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    run(SequenceSender(wire, Scheduler(clock), BEAT), 4)
    assert {stamp for _, stamp, _ in wire.sent} == {tt.IMMEDIATELY}


@pytest.mark.parametrize(("steps_per_beat", "bpm"), [(4, 120.0), (3, 90.0), (2, 97.0)])
def test_steps_per_beat_divide_the_beat_exactly(steps_per_beat: int, bpm: float) -> None:
    clock = FakeClock(start=START)
    every = parse("hat: x")
    sender = SequenceSender(
        Wire(clock), Scheduler(clock), every, bpm=bpm, steps_per_beat=steps_per_beat
    )
    t0 = sender.start(1)
    step = Fraction(60) / Fraction(bpm) / steps_per_beat
    for k in (1, 7, 1000):
        assert sender.grid_timetag(k) == tt.add_seconds(t0, step * k)


def test_swing_pushes_odd_steps_later_by_the_percent_of_a_step() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    every = parse("hat: xxxx")
    sender = SequenceSender(wire, Scheduler(clock), every, bpm=120.0, swing=33.0, offset=0.05)
    t0 = run(sender, 6)
    step = Fraction(1, 8)
    expected = [step * k + (step * Fraction(33, 100) if k % 2 else 0) for k in range(6)]
    assert [stamp for _, stamp, _ in wire.sent] == [
        tt.add_seconds(t0, due + Fraction(1, 20)) for due in expected
    ]
    # Sent at the swung grid time too (the fake clock moves only to what is due).
    assert [sent - START for sent, _, _ in wire.sent] == pytest.approx(
        [float(due) for due in expected], abs=1e-6
    )


def test_bars_count_steps() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    sender = SequenceSender(wire, Scheduler(clock), parse("hat: x"), beats_per_bar=3)
    assert sender.steps_per_bar == 12
    run(sender, 2 * sender.steps_per_bar)
    assert len(wire.sent) == 24


def test_reload_takes_effect_at_the_next_bar_line() -> None:
    clock = FakeClock(start=START)
    wire = Wire(clock)
    pending: list[object] = []
    asked: list[int] = []

    def reload() -> object:
        asked.append(round((clock.now() - START) / 0.125))
        return pending.pop() if pending else None

    def edit_mid_bar(sender: SequenceSender) -> None:
        if len(wire.sent) == 5 and not sender.reloads and not pending:
            pending.append(parse("snare: o"))  # saved during step 4 of bar 0

    sender = SequenceSender(
        wire,
        Scheduler(clock),
        parse("kick: x"),
        reload=reload,  # type: ignore[arg-type]
    )
    run(sender, 32, edit_mid_bar)
    voices = [messages[0].address for _, _, messages in wire.sent]
    assert voices == ["/seq/kick"] * 16 + ["/seq/snare"] * 16  # from the bar line, not step 5
    assert asked == [16]  # asked once per bar line, never in between
    assert sender.reloads == 1


def test_a_reload_that_raises_does_not_silence_the_sequencer() -> None:
    """Issue 27, item 13: a pattern saved mid-run with a 5,000-digit note made the reload raise
    a ValueError inside a step: that step and every one after it were never sent, and --duration
    (a step count) never ended the run. The step whose reload failed is counted by the scheduler
    as an error; the grid goes on."""
    clock = FakeClock(start=START)
    wire = Wire(clock)
    scheduler = Scheduler(clock)

    def reload() -> object:
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")

    sender = SequenceSender(wire, scheduler, parse("kick: x"), reload=reload)  # type: ignore[arg-type]
    run(sender, 48)
    assert sender.done.is_set()
    assert len(wire.sent) == 48 - 2  # the first step of bars 1 and 2 asked for a reload
    assert scheduler.stats().errors == 2


def test_pattern_file_is_read_again_when_it_changes_and_a_bad_edit_keeps_the_old(
    tmp_path: Path,
) -> None:
    path = tmp_path / "beat.txt"
    path.write_text("kick: x...\n")
    warnings: list[str] = []
    watched = PatternFile(path, on_warning=warnings.append)
    assert watched.poll() is None  # unchanged
    path.write_text("kick: x.x.x.\n")
    os.utime(path, ns=(1, 1))
    assert watched.poll() == parse("kick: x.x.x.")
    path.write_text("kick: x.q.\n")
    os.utime(path, ns=(2, 2))
    assert watched.poll() is None
    assert warnings == [
        f"{path}: line 1, column 9: unknown symbol 'q' (x accent, o normal, . rest, "
        "0-127 a MIDI note); still playing the previous pattern"
    ]
    assert watched.pattern == parse("kick: x.x.x.")
    assert watched.poll() is None  # warned once per change


def test_pattern_file_saved_with_a_5000_digit_note_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "beat.txt"
    path.write_text("bass: 36 .\n")
    warnings: list[str] = []
    watched = PatternFile(path, on_warning=warnings.append)
    path.write_text("bass: 36 " + "1" * 5000 + "\n")
    os.utime(path, ns=(1, 1))
    assert watched.poll() is None
    assert warnings == [
        f"{path}: line 1, column 10: MIDI note 11111111... (5000 digits) is out of range 0-127; "
        "still playing the previous pattern"
    ]


def test_steps_in_duration() -> None:
    assert steps_in(2.0, 120.0, 4) == 16
    assert steps_in(2.01, 120.0, 4) == 17
    assert steps_in(0.0, 120.0, 4) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"swing": 80.0}, "swing"), ({"steps_per_beat": 0}, "steps per beat")],
)
def test_sender_rejects_impossible_settings(kwargs: dict[str, float], message: str) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match=message):
        SequenceSender(Wire(clock), Scheduler(clock), BEAT, **kwargs)  # type: ignore[arg-type]


# -- the wire, received -------------------------------------------------------------------------


def test_event_of_reads_the_wire_format_and_pd_floats() -> None:
    assert event_of(codec.Message("/seq/kick", (1.0, 4), "fi")) == sequence.Event("kick", 1.0, 4)
    assert event_of(codec.Message("/seq/bass", (0.8, 3.0, 36.0), "fff")) == sequence.Event(
        "bass", 0.8, 3, 36
    )


@pytest.mark.parametrize(
    ("address", "args", "types", "reason"),
    [
        ("/tick", (1,), "i", "other-address"),
        ("/seq/a b", (1.0, 0), "fi", "bad-voice"),
        ("/seq/\x1b[2J", (1.0, 0), "fi", "bad-voice"),
        ("/seq/kick", (1.0,), "f", "bad-args"),
        ("/seq/kick", ("loud", 0), "si", "bad-args"),
        ("/seq/kick", (float("nan"), 0), "fi", "bad-args"),
        ("/seq/kick", (2.0, 0), "fi", "bad-args"),
        ("/seq/kick", (1.0, -1), "fi", "bad-args"),
        ("/seq/bass", (1.0, 0, 128), "fii", "bad-args"),
    ],
)
def test_malformed_events_are_dropped_by_reason(
    address: str, args: tuple[object, ...], types: str, reason: str
) -> None:
    with pytest.raises(EventError) as caught:
        event_of(codec.Message(address, args, types))
    assert caught.value.reason == reason


class RecordingPlayer:
    name = "recording"

    def __init__(self, lead: float) -> None:
        self.lead = lead
        self.played: list[tuple[float, str]] = []
        self.loaded: dict[str, Path] = {}

    def load(self, path: str | Path, key: str = TICK) -> None:
        self.loaded[key] = Path(path)

    def start(self) -> None:
        pass

    def play_at(self, t: float, key: str = TICK) -> None:
        self.played.append((t, key))

    def describe(self) -> str:
        return ""

    def close(self) -> None:
        pass


def received(
    clock: FakeClock, address: str, args: tuple[object, ...], types: str, ahead: float
) -> Received:
    stamp = tt.from_unix(clock.now() + ahead)
    message = codec.Message(address, args, types, stamp)
    return Received(message, ("127.0.0.1", 9000), arrival=clock.now())


def test_listener_plays_each_voice_at_its_timetag_and_logs_one_object_per_event(
    tmp_path: Path,
) -> None:
    clock = FakeClock(start=START)
    player = RecordingPlayer(float("inf"))
    scheduler = Scheduler(clock)
    voices = VoiceSounds(player, tmp_path)  # type: ignore[arg-type]
    kick = tmp_path / "kick-src.wav"
    audio.write_wav(kick, audio.Sound(48_000, sounds.synthesize("kick")))
    voices.load("kick", kick)
    log = io.StringIO()
    listener = SequenceListener(player, scheduler, clock, voices, log=log)  # type: ignore[arg-type]
    listener.on_message(received(clock, "/seq/kick", (1.0, 0), "fi", 0.1))
    listener.on_message(received(clock, "/seq/kick", (0.6, 4), "fi", 0.2))
    listener.on_message(received(clock, "/seq/bass", (0.8, 4, 36), "fii", 0.2))
    listener.on_message(received(clock, "/seq/hat", (1.0, 2), "fi", 0.15))
    listener.on_message(received(clock, "/tick", (1,), "i", 0.1))
    scheduler.run_due()
    assert player.played == [
        (START + 0.1, "kick"),
        (START + 0.2, "kick~soft"),
        (START + 0.2, "note:36"),
        (START + 0.15, TICK),  # a voice with no sound of its own plays the tick
    ]
    assert set(player.loaded) == {"kick", "kick~soft", "note:36"}
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert list(lines[0]) == sequence.record_fields()
    assert {k: lines[2][k] for k in ("voice", "step", "velocity", "note", "late")} == {
        "voice": "bass",
        "step": 4,
        "velocity": pytest.approx(0.8),
        "note": 36,
        "late": False,
    }
    assert lines[1]["onset"] == lines[1]["timetag"] == pytest.approx(START + 0.2)
    assert listener.stats.voices == {"kick": 2, "bass": 1, "hat": 1}
    assert listener.stats.ignored == {"other-address": 1}


def test_listener_counts_at_most_64_voice_names_from_the_network(tmp_path: Path) -> None:
    clock = FakeClock(start=START)
    player = RecordingPlayer(float("inf"))
    scheduler = Scheduler(clock)
    listener = SequenceListener(player, scheduler, clock, VoiceSounds(player, tmp_path))  # type: ignore[arg-type]
    for n in range(200):
        listener.on_message(received(clock, f"/seq/v{n}", (1.0, 0), "fi", 0.01))
    scheduler.run_due()
    assert len(listener.stats.voices) == sequence.MAX_COUNTED_VOICES + 1
    assert listener.stats.voices["other"] == 200 - sequence.MAX_COUNTED_VOICES
