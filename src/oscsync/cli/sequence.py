"""``oscsync sequence send | listen | pair``: a drum-machine pattern on the synchronised clock."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click

from oscsync import audio
from oscsync.apps import sequence as app_sequence
from oscsync.apps.grid import MAX_SWING
from oscsync.apps.metronome import TickSender
from oscsync.apps.sequence import PatternFile, SequenceSender, describe, event_line
from oscsync.apps.sessions import SequenceListenSession
from oscsync.cli import records
from oscsync.cli.link import LinkOptions, link_options, linked
from oscsync.cli.params import (
    DURATION,
    NumberRange,
    ParsedType,
    advertise_option,
    allow_option,
    beats_per_bar_option,
    bpm_option,
    collect,
    iface_option,
    options,
    room_option,
)
from oscsync.cli.peers import resolve_peers
from oscsync.cli.runtime import AppContext, pass_app, running
from oscsync.cli.syncing import sync_options
from oscsync.files.pattern import NAME, PatternError
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort
from oscsync.terminal.wording import milliseconds, plural


class VoiceSoundType(ParsedType):
    """``VOICE=FILE``: the WAV file voice VOICE plays."""

    name = "voice_sound"
    metavar = "VOICE=FILE"
    parsed = (tuple,)

    def parse(self, text: str) -> Any:
        voice, equals, path = text.partition("=")
        if not equals or not NAME.fullmatch(voice.strip()) or not path:
            raise ValueError(f"{text!r} is not VOICE=FILE (e.g. kick=my-kick.wav)")
        audio.read_wav(path)
        return voice.strip(), Path(path)

    def errors(self) -> tuple[type[Exception], ...]:
        return (ValueError, audio.AudioError)


_send_options = options(
    click.argument(
        "pattern_path", metavar="PATTERN", type=click.Path(dir_okay=False, path_type=Path)
    ),
    records.send_options(
        bpm_option(1000, app_sequence.DEFAULT_BPM, "Beats per minute."),
        click.option(
            "--steps-per-beat",
            type=click.IntRange(min=1, max=16),
            default=app_sequence.DEFAULT_STEPS_PER_BEAT,
            show_default=True,
            help="Pattern steps in one beat (4: each step is a 16th note).",
        ),
        beats_per_bar_option(
            app_sequence.DEFAULT_BEATS_PER_BAR,
            "A changed pattern file takes effect at the next bar line.",
        ),
        click.option(
            "--swing",
            type=NumberRange(0, MAX_SWING, example="33 for a triplet feel"),
            default=0.0,
            show_default=True,
            metavar="PERCENT",
            help="Push every odd step later by this percent of a step (33 ≈ triplet feel).",
        ),
        peers_help="Where to send the steps (repeatable: every peer gets every step).",
        offset_help="0: bundles played on arrival. X > 0: each step timetagged X seconds after "
        "its grid time (forward sync; e.g. 0.1, 100ms). auto: ping the peers and pick one.",
        limit=click.option("--bars", type=click.IntRange(min=1), help="Send this many bars."),
        duration_help="Send for this many seconds.",
    ),
)


_listen_options = records.listen_options(
    click.option(
        "--sound",
        "voice_sounds",
        type=VoiceSoundType(),
        multiple=True,
        help="WAV file for a voice (repeatable) [default: sounds/kick.wav, snare.wav, "
        "hat.wav; other drum voices play the tick, pitched voices a tone].",
    ),
    log_help="Write one JSON object per event (voice, step, velocity, onset, timetag, late).",
)


@click.group(
    epilog="""\b
Examples:
  oscsync sequence listen                                     # play steps arriving on 9001
  oscsync sequence send beat.txt --peer 127.0.0.1:9001 --offset 0.1
  oscsync sequence send beat.txt --peer 127.0.0.1:9000 --offset 0.1   # to pd/example4
  oscsync sequence pair beat.txt --peer 127.0.0.1:9001 --offset 0.05 --bars 2
"""
)
def sequence() -> None:
    """A networked step sequencer: send a pattern file on the clock's grid, play it on time."""


def _read_pattern(path: Path, app: AppContext) -> PatternFile:
    try:
        return PatternFile(path, on_warning=app.warn)
    except PatternError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="PATTERN") from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="PATTERN"
        ) from None


@dataclass(frozen=True)
class PatternSending(records.Sending):
    """``send`` and ``pair``'s send options (``_send_options``)."""

    pattern_path: Path
    bpm: float
    steps_per_beat: int
    beats_per_bar: int
    swing: float
    bars: int | None

    limit_option = "--bars"

    def given_total(self) -> int | None:
        return None if self.bars is None else self.bars * self.beats_per_bar * self.steps_per_beat

    def total_in(self, duration: float) -> int:
        return app_sequence.steps_in(duration, self.bpm, self.steps_per_beat)

    def grid(self) -> dict[str, Any]:
        """The sender's grid arguments."""
        return {
            "bpm": self.bpm,
            "steps_per_beat": self.steps_per_beat,
            "beats_per_bar": self.beats_per_bar,
            "swing": self.swing,
        }

    def note(
        self,
        watched: PatternFile,
        peers: tuple[HostPort, ...],
        offset: float,
        *,
        linked: bool = False,
    ) -> str:
        kind = f"timetagged {milliseconds(offset)} ahead" if offset else "played on arrival"
        where = ", ".join(str(peer) for peer in peers)
        tempo = "on the Link session's beats" if linked else f"at {self.bpm:g} bpm"
        return (
            f"sequencing {watched.path} ({describe(watched.pattern)}) to {where} {tempo}, "
            f"{self.steps_per_beat} steps per beat, {kind}; edit the file to change it at the "
            "next bar"
        )


@sequence.command(
    epilog="""\b
Examples:
  oscsync sequence send beat.txt --peer 127.0.0.1:9001
  oscsync sequence send beat.txt --peer 127.0.0.1:9001 --offset 0.1 --swing 33 --bars 4
  oscsync sequence send beat.txt --peer 127.0.0.1:9000 --peer 192.168.1.20:9001 --offset auto
"""
)
@_send_options
@allow_option(" Clock pings (and pongs) from elsewhere are dropped, counted.")
@link_options()
@room_option()
@pass_app
@collect("sending", PatternSending)
@collect("link", LinkOptions.given)
def send(
    app: AppContext,
    sending: PatternSending,
    allow: tuple[Network, ...],
    link: LinkOptions,
    room: bool,
) -> None:
    """Send the PATTERN file, one bundle per step with a /seq/VOICE message per sounding voice.

    The pattern loops; saving the file changes it at the next bar line. Runs until --bars,
    --duration or Ctrl-C. See docs/example4-sequencer.md for the pattern format. With --link,
    the steps are on an Ableton Link session's beats (docs/link.md).
    """
    total = sending.total()
    watched = _read_pattern(sending.pattern_path, app)
    peers = resolve_peers(sending.peers)
    grid = sending.grid()
    # A defined end (--bars, --duration) cut short exits 130, as metronome send (issue 30).
    with (
        running(interrupted_exit=total is not None),
        records.send_session(app, sending, peers, allow, room=room) as session,
        linked(app, link, **grid) as link_grid,
    ):
        if link_grid is not None and sending.duration is not None:
            tempo = link_grid.status().tempo  # the session's
            total = app_sequence.steps_in(sending.duration, tempo, sending.steps_per_beat)
        records.send_until_done(
            app,
            session,
            offset=sending.offset,
            total=total,
            sender=lambda seconds: session.pattern_sender(
                watched, offset=seconds, grid=link_grid, **grid
            ),
            sending_note=partial(sending.note, watched, peers, linked=link_grid is not None),
            summary=lambda sender: _sent_summary(sender, total),
            room=room,
        )


def _sent_summary(sender: TickSender, total: int | None) -> str:
    assert isinstance(sender, SequenceSender)
    # Steps gone by, rests and a stopped Link session's silent steps included (their count).
    of = f" of {total}" if total is not None and sender.steps < total else ""
    changes = plural(sender.reloads, "pattern change")
    text = f"sequence: sent {sender.steps}{of} steps, {changes}"
    if sender.lateness.count:
        text += "; " + sender.lateness_text()
    return text


# -- listen -----------------------------------------------------------------------------------


@sequence.command(
    epilog="""\b
Examples:
  oscsync sequence listen                                 # 127.0.0.1:9001, sound card if any
  oscsync sequence listen --listen 0.0.0.0:9001 --sync    # from another machine, its clock
  oscsync sequence listen --audio wav:out.wav --log events.jsonl --count 16
  oscsync sequence listen --sound kick=sounds/tock.wav --sound cowbell=sounds/tick.wav
  oscsync sequence listen --listen 0.0.0.0:9001 --advertise drums   # senders use @drums
"""
)
@_listen_options
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@sync_options()
@iface_option()
@advertise_option()
@pass_app
@collect("listening", records.Listening)
def listen(
    app: AppContext,
    listening: records.Listening,
    voice_sounds: tuple[tuple[str, Path], ...],
    count: int | None,
    duration: float | None,
    iface: str | None,
) -> None:
    """Play each /seq/VOICE event at its timetag, each voice with its own sound.

    Pitched voices (a MIDI note as third argument) play a short synthesised tone. On a terminal a
    live line counts events per voice; piped, one line per event (VOICE: STEP). Ctrl-C stops.
    """
    listening = listening.checked()
    with running(), records.listening(app, listening, "sequence") as run:
        session = run.session(
            SequenceListenSession, iface=iface, limit=count, voice_sounds=voice_sounds
        )
        # --sync as metronome listen --sync
        run.listen_until_done(session, event_line, duration=duration)


# -- pair -------------------------------------------------------------------------------------


@sequence.command(
    epilog="""\b
Examples:
  oscsync sequence pair beat.txt --peer 127.0.0.1:9000      # with pd/example4_sequencer.pd
  oscsync sequence pair beat.txt --peer 127.0.0.1:9001 --offset 0.05 --bars 2   # hear yourself
"""
)
@_send_options
@_listen_options
@advertise_option()
@pass_app
@collect("sending", PatternSending)
@collect("listening", records.Listening)
def pair(
    app: AppContext,
    sending: PatternSending,
    listening: records.Listening,
    voice_sounds: tuple[tuple[str, Path], ...],
) -> None:
    """Send the PATTERN and play the steps you receive, in one process.

    Steps go to every --peer; steps arriving on --listen (from anyone, yourself included) are
    played. With --bars or --duration it stops shortly after the last step's timetag.
    """
    total = sending.total()
    watched = _read_pattern(sending.pattern_path, app)
    peers = resolve_peers(sending.peers)
    with running(), records.listening(app, listening, "sequence", sending, peers) as run:
        session = run.session(SequenceListenSession, voice_sounds=voice_sounds)
        grid = sending.grid()
        run.pair_until_done(
            session,
            event_line,
            total=total,
            # One timer thread for both halves, as metronome pair.
            sender=lambda seconds: session.sender(watched, offset=seconds, **grid),
            sending_note=partial(sending.note, watched, peers),
        )
