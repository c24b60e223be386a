"""``oscsync sequence``: a drum-machine pattern on the metronome's grid, played by every peer.

**The grid** (:class:`SequenceSender`, a :class:`~oscsync.apps.metronome.TickSender` whose ticks
are steps). Step ``k`` is due at ``t0 + k·60/(bpm·steps_per_beat)``, exactly, from ``k``; with
``swing`` every odd step is pushed later by that fraction of a step (0.33: a triplet feel). A bar
is ``beats_per_bar · steps_per_beat`` steps. The pattern loops over its own length: step ``k``
plays pattern step ``k mod length``. At each bar line the sender asks ``reload`` for a changed
pattern (the file watcher, :class:`PatternFile`); a new one takes effect from that bar on, and
since every peer receives the same bundles, on every peer at once.

**The wire** (``docs/protocol.md``). One bundle per step that has something to play, with one
message per sounding voice::

    /seq/VOICE ,fi  VELOCITY STEP          a drum hit: velocity 0-1, pattern step 0 .. length-1
    /seq/VOICE ,fii VELOCITY STEP NOTE     a pitched voice: also its MIDI note 0-127

An address per voice, not one address with the voice as an argument, because PD's
``[routeOSC /kick /snare ...]`` splits addresses into one outlet per voice with no
``[route]``/``[select]`` on symbols behind it. With ``offset > 0`` the bundle is timetagged
``offset`` seconds after the step's grid time (forward synchronisation); with ``offset == 0`` it is
timetagged ``IMMEDIATELY`` and played on arrival (the workshop's example 2, jitter and all).

**The event log** (``listen --log FILE.jsonl``): one JSON object per event, flushed per line; times
are Unix seconds on the listener's clock:

``seq``        int, 0, 1, 2 ... per event this listener handled
``voice``      the voice name (from the address ``/seq/VOICE``)
``step``       the pattern step received
``velocity``   0-1
``note``       the MIDI note, or null for a drum hit
``arrival``    when the datagram arrived
``timetag``    the bundle's timetag, or null for ``IMMEDIATELY``
``onset``      when the player was asked to start the sound (the timetag, or when handled if late
               or immediate)
``late``       bool, ``arrived_late or played_late``
``source``     ``HOST:PORT`` of the sender
``arrived_late`` bool, played more than 1 ms after its timetag, having arrived after it
``played_late``  bool, it arrived before its timetag but was played more than 1 ms after it
                 (:mod:`oscsync.lateness`)
``played_ms``    how long after its timetag it was played, in ms (null for ``IMMEDIATELY``)
"""

from __future__ import annotations

import math
import os
import threading
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from oscsync import audio
from oscsync.apps.grid import Grid, StepGrid
from oscsync.apps.metronome import JsonLine, OnsetListener, TickSender
from oscsync.audio import Player, sounds
from oscsync.clock import Clock
from oscsync.files import pattern as patterns
from oscsync.files.pattern import Pattern, PatternError
from oscsync.lateness import counts_text
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Method, Received
from oscsync.scheduler import Dispatch, Scheduler
from oscsync.stats import RunningStats

PREFIX = "/seq/"
VOICE_METHODS = tuple(
    Method(
        f"{PREFIX}{voice}",
        "fi",
        f"one {voice} hit: velocity 0-1, pattern step (a third int, a MIDI note, makes it a "
        "tone); a bundle's timetag says when to play it",
    )
    for voice in sounds.DRUMS
)
"""What ``sequence listen`` registers (OSCQuery lists them): the voices with their own sounds.
Any other ``/seq/VOICE`` plays too, through the endpoint's fallback handler (the same one)."""
DEFAULT_BPM = 120.0
DEFAULT_STEPS_PER_BEAT = 4
DEFAULT_BEATS_PER_BAR = 4
MAX_PATTERN_BYTES = 256 * 1024


# -- the pattern file -------------------------------------------------------------------------


def read_pattern(path: Path) -> Pattern:
    """Parse the pattern file ``path``; PatternError (line, column) or OSError."""
    with path.open("rb") as handle:
        data = handle.read(MAX_PATTERN_BYTES + 1)
    if len(data) > MAX_PATTERN_BYTES:
        raise PatternError(1, 1, f"the file is larger than {MAX_PATTERN_BYTES // 1024} KiB")
    return patterns.parse(data.decode("utf-8", errors="replace"))


class PatternFile:
    """A pattern file that is parsed again when it changes (its mtime or size).

    :meth:`poll` returns the new pattern once per change, or None. A change that does not parse
    (half-saved, a typo) is reported once through ``on_warning`` and the old pattern plays on.
    """

    def __init__(self, path: Path, *, on_warning: Callable[[str], None]) -> None:
        self.path = path
        self.on_warning = on_warning
        self._signature = self._stat()
        self.pattern = read_pattern(path)

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def poll(self) -> Pattern | None:
        signature = self._stat()
        if signature is None or signature == self._signature:
            return None
        self._signature = signature
        try:
            pattern = read_pattern(self.path)
        except (ValueError, OSError) as exc:  # PatternError is a ValueError
            self.on_warning(f"{self.path}: {exc}; still playing the previous pattern")
            return None
        self.pattern = pattern
        return pattern


# -- sending ----------------------------------------------------------------------------------


def step_messages(pattern: Pattern, k: int) -> list[bytes]:
    """One message per voice sounding at step ``k`` (see the module docstring for the format)."""
    step = k % pattern.length
    messages = []
    for name, hit in pattern.hits(k):
        if hit.note is None:
            messages.append(codec.encode_message(PREFIX + name, [hit.velocity, step], "fi"))
        else:
            messages.append(
                codec.encode_message(PREFIX + name, [hit.velocity, step, hit.note], "fii")
            )
    return messages


def steps_in(duration: float, bpm: float, steps_per_beat: int) -> int:
    """How many steps start in ``[0, duration)`` (straight grid; step 0 at 0)."""
    return max(0, math.ceil(Fraction(duration) * Fraction(bpm) * steps_per_beat / 60))


class SequenceSender(TickSender):
    """Sends one bundle per step of ``pattern`` on the exact grid (see the module docstring).

    ``reload`` is asked at every bar line after the first for a new pattern (None: no change);
    ``on_reload`` hears of each one taken. :attr:`reloads` counts them.
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        scheduler: Scheduler,
        pattern: Pattern,
        *,
        bpm: float = DEFAULT_BPM,
        steps_per_beat: int = DEFAULT_STEPS_PER_BEAT,
        beats_per_bar: int = DEFAULT_BEATS_PER_BAR,
        swing: float = 0.0,
        offset: float = 0.0,
        reload: Callable[[], Pattern | None] | None = None,
        on_reload: Callable[[int, Pattern], None] | None = None,
        grid: StepGrid | None = None,
    ) -> None:
        self.steps_per_beat = steps_per_beat
        self.swing = Fraction(swing) / 100
        self._swing_percent = swing
        super().__init__(
            send,
            scheduler,
            bpm=bpm,
            beats_per_bar=beats_per_bar,
            offset=offset,
            plain=False,
            grid=grid,
        )
        self.steps_per_bar = self.grid.steps_per_bar
        self.pattern = pattern
        self.reload = reload
        self.on_reload = on_reload
        self.reloads = 0
        self._bar_checked: int | None = None

    def _new_grid(self, bpm: float, beats_per_bar: int) -> Grid:
        """Steps on the grid, odd steps pushed later by the swing."""
        return Grid(
            bpm,
            beats_per_bar=beats_per_bar,
            steps_per_beat=self.steps_per_beat,
            swing=self._swing_percent,
            start=0,
        )

    def packet(self, k: int) -> bytes:
        """The bundle for step ``k`` (empty bytes when no voice sounds); reloads at a bar line."""
        tick = self.grid.tick(k)
        bar = tick.bar  # k's bar; on a Link grid the session's, so the pattern starts on a bar
        if self._bar_checked is None:
            self._bar_checked = bar
        elif bar > self._bar_checked and self.reload is not None:
            self._bar_checked = bar
            fresh = self.reload()
            if fresh is not None:
                self.pattern = fresh
                self.reloads += 1
                if self.on_reload is not None:
                    self.on_reload(bar, fresh)
        messages = step_messages(self.pattern, bar * self.steps_per_bar + tick.step)
        if not messages or not self.grid.sounds(tick):
            return b""
        if self.offset:
            stamp = tt.add_seconds(tick.timetag, Fraction(self.offset))
        else:
            stamp = tt.IMMEDIATELY  # no forward sync: played on arrival
        return codec.encode_bundle(stamp, messages)


def describe(pattern: Pattern) -> str:
    """``3 voices, 16 steps``."""
    voices = len(pattern.voices)
    return f"{voices} voice{'' if voices == 1 else 's'}, {pattern.length} steps"


def file_sender(
    send: Callable[[bytes], object],
    scheduler: Scheduler,
    watched: PatternFile,
    *,
    note: Callable[[str], None],
    bpm: float,
    steps_per_beat: int,
    beats_per_bar: int,
    swing: float,
    offset: float,
    grid: StepGrid | None = None,
) -> SequenceSender:
    """A sender of ``watched``'s pattern that picks up a saved file at the next bar (and says
    so through ``note``); its steps on ``grid`` if given (a Link session's)."""

    def reloaded(bar: int, pattern: Pattern) -> None:
        note(f"bar {bar}: {watched.path} changed; now playing {describe(pattern)}")

    return SequenceSender(
        send,
        scheduler,
        watched.pattern,
        bpm=bpm,
        steps_per_beat=steps_per_beat,
        beats_per_bar=beats_per_bar,
        swing=swing,
        offset=offset,
        reload=watched.poll,
        on_reload=reloaded,
        grid=grid,
    )


# -- listening --------------------------------------------------------------------------------


class LineSink(Protocol):
    """Where the event log goes: a text file, or the CLI's log writer that reports failures."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class EventError(ValueError):
    """A ``/seq/...`` message that is not an event; ``reason`` is a drop-counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Event:
    voice: str
    velocity: float
    step: int
    note: int | None = None


def _number(value: Any, tag: str) -> float:
    if tag not in ("i", "h", "f", "d"):
        raise EventError("bad-args")
    number = float(value)
    if not math.isfinite(number):
        raise EventError("bad-args")
    return number


def event_of(message: codec.Message) -> Event:
    """The event in a ``/seq/VOICE`` message (floats from PD accepted); EventError if none."""
    if not message.address.startswith(PREFIX):
        raise EventError("other-address")
    voice = message.address[len(PREFIX) :]
    if not patterns.NAME.fullmatch(voice):
        raise EventError("bad-voice")
    if len(message.args) not in (2, 3):
        raise EventError("bad-args")
    velocity = _number(message.args[0], message.types[0])
    step = _number(message.args[1], message.types[1])
    if not 0 <= velocity <= 1 or not 0 <= step < patterns.MAX_STEPS:
        raise EventError("bad-args")
    note = None
    if len(message.args) == 3:
        value = _number(message.args[2], message.types[2])
        if not 0 <= value <= 127:
            raise EventError("bad-args")
        note = round(value)
    return Event(voice, round(velocity, 4), round(step), note)


@dataclass
class EventRecord(JsonLine):
    """One handled event; :meth:`to_json` is one line of the event log (module docstring)."""

    seq: int
    voice: str
    step: int
    velocity: float
    note: int | None
    arrival: float
    timetag: float | None
    onset: float
    late: bool
    source: str
    arrived_late: bool = False
    played_late: bool = False
    played_ms: float | None = None


def record_fields() -> list[str]:
    """The event log's field names, in order (tests hold the documentation to this)."""
    return list(EventRecord.__dataclass_fields__)


MAX_COUNTED_VOICES = 64
"""Voice names come from the network: counted one by one up to this many, then as ``other``."""


@dataclass
class SequenceStats:
    events: int = 0
    arrived_late: int = 0
    played_late: int = 0
    voices: Counter[str] = field(default_factory=Counter)
    headroom: RunningStats = field(default_factory=RunningStats)
    """Milliseconds from arrival to timetag, for timetagged events."""
    ignored: Counter[str] = field(default_factory=Counter)

    def count(self, voice: str) -> None:
        if voice in self.voices or len(self.voices) < MAX_COUNTED_VOICES:
            self.voices[voice] += 1
        else:
            self.voices["other"] += 1

    @property
    def late(self) -> int:
        return self.arrived_late + self.played_late

    def line(self) -> str:
        """``events 12  arrived late 0  played late 0  kick 4 snare 2 hat 6  headroom min
        +99.1 ms``."""
        parts = [f"events {self.events}", counts_text(self.arrived_late, self.played_late)]
        if self.voices:
            parts.append(" ".join(f"{name} {n}" for name, n in self.voices.items()))
        if self.headroom.count:
            parts.append(f"headroom min {self.headroom.minimum:+.1f} ms")
        if self.ignored:
            parts.append(f"ignored {sum(self.ignored.values())}")
        return "  ".join(parts)


SOFT = "~soft"


class VoiceSounds:
    """Which loaded sound plays an event: ``--sound VOICE=FILE``, the drums, tones for notes.

    A voice with a sound plays it (at the level of the sample for an accent, at
    :data:`~oscsync.files.pattern.NORMAL_VELOCITY` otherwise); a voice without one plays the tick.
    A pitched event plays :func:`oscsync.audio.sounds.tone` of its note, synthesised into
    ``directory`` and loaded the first time that note is heard (at most 128 of them).
    """

    def __init__(self, player: Player, directory: Path) -> None:
        self.player = player
        self.directory = directory
        self._voices: set[str] = set()
        self._notes: set[int] = set()
        self._lock = threading.Lock()

    def load(self, voice: str, path: Path) -> None:
        """Load ``path`` for ``voice`` and a softer copy for its normal (non-accent) hits."""
        sound = audio.read_wav(path)
        self.player.load(path, voice)
        soft = self.directory / f"{voice}{SOFT}.wav"
        level = patterns.NORMAL_VELOCITY
        samples = array("h", (round(v * level) for v in sound.samples))
        audio.write_wav(soft, audio.Sound(sound.rate, samples))
        self.player.load(soft, voice + SOFT)
        self._voices.add(voice)

    def key(self, event: Event) -> str:
        """The player key for ``event``, loading its tone first if it is a new note."""
        if event.note is not None:
            key = f"note:{event.note}"
            with self._lock:
                if event.note in self._notes:
                    return key
                path = self.directory / f"note{event.note}.wav"
                audio.write_wav(path, audio.Sound(sounds.RATE, sounds.tone(event.note)))
                self.player.load(path, key)
                self._notes.add(event.note)
                return key
        if event.voice not in self._voices:
            return audio.TICK
        return event.voice if event.velocity >= 0.9 else event.voice + SOFT


class SequenceListener(OnsetListener[SequenceStats]):
    """Turns received ``/seq/VOICE`` messages into onsets, as the metronome's listener does ticks.

    Give :meth:`on_message` to an Endpoint. Every event goes through ``scheduler``
    (:func:`~oscsync.apps.playing.submit_onset`); a sample-placing player gets the timetag at
    once and places the sound on its frame. After ``limit`` events, more are ignored.
    """

    def __init__(
        self,
        player: Player,
        scheduler: Scheduler,
        clock: Clock,
        voice_sounds: VoiceSounds,
        *,
        log: LineSink | None = None,
        on_event: Callable[[EventRecord], None] | None = None,
        limit: int | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(player, scheduler, clock, SequenceStats(), on_warning)
        self.voice_sounds = voice_sounds
        self.log = log
        self.on_event = on_event
        self.limit = limit

    def on_message(self, received: Received) -> None:
        """Handle one received message (receive thread; never raises for bad data)."""
        try:
            event = event_of(received.message)
        except EventError as exc:
            self._ignore(exc.reason)
            return

        try:
            # Here, on the receive thread, ahead of the timetag: the first event of a note
            # synthesises its tone (~5 ms), which must not delay the scheduler's thread.
            key = self.voice_sounds.key(event)
        except (audio.AudioError, OSError):
            key = audio.TICK

        def handle(dispatch: Dispatch, stamp: int | None) -> None:
            self._handle(received, event, key, stamp, dispatch)

        self._submit(received, handle)

    def _handle(
        self, received: Received, event: Event, key: str, stamp: int | None, dispatch: Dispatch
    ) -> None:
        timing = self._timing(received, stamp, dispatch)
        target, onset, lateness = timing.target, timing.onset, timing.lateness
        with self._lock:
            stats = self.stats
            if self.limit is not None and stats.events >= self.limit:
                stats.ignored["over-count"] += 1
                return
            self.player.play_at(onset, key)
            record = EventRecord(
                seq=stats.events,
                voice=event.voice,
                step=event.step,
                velocity=event.velocity,
                note=event.note,
                arrival=received.arrival,
                timetag=target,
                onset=onset,
                late=lateness.late,
                source=str(HostPort(*received.source[:2])),
                arrived_late=lateness.arrived_late,
                played_late=lateness.played_late,
                played_ms=None if target is None else lateness.played_after * 1000.0,
            )
            stats.events += 1
            stats.arrived_late += lateness.arrived_late
            stats.played_late += lateness.played_late
            stats.count(event.voice)
            if target is not None:
                stats.headroom.add((target - received.arrival) * 1000.0)
            if self.log is not None:
                self.log.write(record.to_json() + "\n")
                self.log.flush()
        if self.on_event is not None:
            self.on_event(record)


def event_line(record: EventRecord) -> str:
    """One line per event for a pipe: ``kick: 4  velocity 1.00`` (``VOICE: STEP`` as PD prints)."""
    parts = [f"{record.voice}: {record.step}", f"velocity {record.velocity:.2f}"]
    if record.note is not None:
        parts.append(f"note {record.note}")
    if record.arrived_late:
        parts.append("ARRIVED LATE")
    elif record.played_late:
        parts.append(f"PLAYED LATE {record.played_ms or 0.0:+.3f} ms")
    return "  ".join(parts)
