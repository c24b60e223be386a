"""``oscsync sequence send | listen | pair``: a drum-machine pattern on the synchronised clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from oscsync import audio
from oscsync.apps import sequence as app_sequence
from oscsync.apps.metronome import TickSender
from oscsync.apps.sequence import PatternFile, SequenceSender, describe, event_line
from oscsync.apps.sessions import SendSession, SequenceListenSession
from oscsync.cli import records
from oscsync.cli.metronome import OFFSET, _check_sync, _compose, _sync_options, audio_option
from oscsync.cli.params import (
    DURATION,
    DurationType,
    advertise_option,
    allow_option,
    framing_option,
    iface_option,
    listen_option,
    log_option,
    peers_option,
)
from oscsync.cli.peers import Advertising, following, resolve_peer, resolve_peers
from oscsync.cli.runtime import AppContext, running
from oscsync.framing import Framing
from oscsync.hostport import HostPort
from oscsync.pattern import NAME, PatternError
from oscsync.transport import Network

F = TypeVar("F", bound=Callable[..., Any])


class VoiceSoundType(click.ParamType):  # type: ignore[type-arg]
    """``VOICE=FILE``: the WAV file voice VOICE plays."""

    name = "voice_sound"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "VOICE=FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        voice, equals, path = str(value).partition("=")
        if not equals or not NAME.fullmatch(voice.strip()) or not path:
            self.fail(f"{value!r} is not VOICE=FILE (e.g. kick=my-kick.wav)", param, ctx)
        try:
            audio.read_wav(path)
        except audio.AudioError as exc:
            self.fail(str(exc), param, ctx)
        return voice.strip(), Path(path)


def _pattern_argument() -> Callable[[F], F]:
    return click.argument(
        "pattern_path",
        metavar="PATTERN",
        type=click.Path(dir_okay=False, path_type=Path),
    )


def _send_options() -> Callable[[F], F]:
    return _compose(
        _pattern_argument(),
        peers_option("Where to send the steps (repeatable: every peer gets every step)."),
        click.option(
            "--bpm",
            type=click.FloatRange(min=1, max=1000),
            default=app_sequence.DEFAULT_BPM,
            show_default=True,
            help="Beats per minute.",
        ),
        click.option(
            "--steps-per-beat",
            type=click.IntRange(min=1, max=16),
            default=app_sequence.DEFAULT_STEPS_PER_BEAT,
            show_default=True,
            help="Pattern steps in one beat (4: each step is a 16th note).",
        ),
        click.option(
            "--beats-per-bar",
            "-b",
            type=click.IntRange(min=1, max=64),
            default=app_sequence.DEFAULT_BEATS_PER_BAR,
            show_default=True,
            help="A changed pattern file takes effect at the next bar line.",
        ),
        click.option(
            "--swing",
            type=click.FloatRange(min=0, max=app_sequence.MAX_SWING),
            default=0.0,
            show_default=True,
            metavar="PERCENT",
            help="Push every odd step later by this percent of a step (33 ≈ triplet feel).",
        ),
        click.option(
            "--offset",
            type=OFFSET,
            default=0.0,
            show_default=True,
            help="0: bundles played on arrival. X > 0: each step timetagged X seconds after its "
            "grid time (forward sync; e.g. 0.1, 100ms). auto: ping the peers and pick one.",
        ),
        click.option("--bars", type=click.IntRange(min=1), help="Send this many bars."),
        click.option(
            "--duration", "-d", type=DurationType(minimum=0.0), help="Send for this many seconds."
        ),
        iface_option(),
        framing_option(),
    )


def _listen_options() -> Callable[[F], F]:
    return _compose(
        listen_option(),
        audio_option(),
        click.option(
            "--sound",
            "voice_sounds",
            type=VoiceSoundType(),
            multiple=True,
            help="WAV file for a voice (repeatable) [default: sounds/kick.wav, snare.wav, "
            "hat.wav; other drum voices play the tick, pitched voices a tone].",
        ),
        log_option(
            "Write one JSON object per event (voice, step, velocity, onset, timetag, late)."
        ),
        allow_option(),
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


def _step_count(
    bars: int | None, duration: float | None, bpm: float, steps_per_beat: int, beats_per_bar: int
) -> int | None:
    if bars is not None and duration is not None:
        raise click.UsageError("use --bars or --duration, not both")
    if duration is not None:
        return app_sequence.steps_in(duration, bpm, steps_per_beat)
    if bars is not None:
        return bars * beats_per_bar * steps_per_beat
    return None


def _sending_note(
    watched: PatternFile, peers: tuple[HostPort, ...], bpm: float, steps: int, offset: float
) -> str:
    kind = f"timetagged {offset * 1000:g} ms ahead" if offset else "played on arrival"
    where = ", ".join(str(peer) for peer in peers)
    return (
        f"sequencing {watched.path} ({describe(watched.pattern)}) to {where} at {bpm:g} bpm, "
        f"{steps} steps per beat, {kind}; edit the file to change it at the next bar"
    )


@sequence.command(
    epilog="""\b
Examples:
  oscsync sequence send beat.txt --peer 127.0.0.1:9001
  oscsync sequence send beat.txt --peer 127.0.0.1:9001 --offset 0.1 --swing 33 --bars 4
  oscsync sequence send beat.txt --peer 127.0.0.1:9000 --peer 192.168.1.20:9001 --offset auto
"""
)
@_send_options()
@allow_option(" Clock pings (and pongs) from elsewhere are dropped, counted.")
@click.pass_obj
def send(
    app: AppContext,
    pattern_path: Path,
    peers: tuple[HostPort, ...],
    bpm: float,
    steps_per_beat: int,
    beats_per_bar: int,
    swing: float,
    offset: float | str,
    bars: int | None,
    duration: float | None,
    iface: str | None,
    framing: Framing,
    allow: tuple[Network, ...],
) -> None:
    """Send the PATTERN file, one bundle per step with a /seq/VOICE message per sounding voice.

    The pattern loops; saving the file changes it at the next bar line. Runs until --bars,
    --duration or Ctrl-C. See docs/example4-sequencer.md for the pattern format.
    """
    total = _step_count(bars, duration, bpm, steps_per_beat, beats_per_bar)
    watched = _read_pattern(pattern_path, app)
    given, peers = peers, resolve_peers(peers)
    with (
        running(),
        records.session_errors(),
        SendSession(peers, records.setup(app, allow, iface, framing)) as session,
        following(app, given, peers, session.endpoint.set_peers),
    ):
        grid = _grid(bpm, steps_per_beat, beats_per_bar, swing)
        records.send_until_done(
            app,
            session,
            offset=offset,
            total=total,
            sender=lambda seconds: session.pattern_sender(watched, offset=seconds, **grid),
            sending_note=lambda seconds: _sending_note(
                watched, peers, bpm, steps_per_beat, seconds
            ),
            summary=_sent_summary,
        )


def _grid(bpm: float, steps_per_beat: int, beats_per_bar: int, swing: float) -> dict[str, Any]:
    return {
        "bpm": bpm,
        "steps_per_beat": steps_per_beat,
        "beats_per_bar": beats_per_bar,
        "swing": swing,
    }


def _sent_summary(sender: TickSender) -> str:
    assert isinstance(sender, SequenceSender)
    return f"sequence: sent {sender.sent} steps, {sender.reloads} pattern changes"


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
@_listen_options()
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@_sync_options()
@iface_option()
@advertise_option()
@click.pass_obj
def listen(
    app: AppContext,
    listen: HostPort,
    audio_choice: audio.AudioChoice,
    device: str | None,
    latency_compensation: float | None,
    voice_sounds: tuple[tuple[str, Path], ...],
    log_path: Path | None,
    allow: tuple[Network, ...],
    count: int | None,
    duration: float | None,
    sync: str | None,
    sync_peer: HostPort | None,
    iface: str | None,
    advertise: str | None,
    interface: str,
) -> None:
    """Play each /seq/VOICE event at its timetag, each voice with its own sound.

    Pitched voices (a MIDI note as third argument) play a short synthesised tone. On a terminal a
    live line counts events per voice; piped, one line per event (VOICE: STEP). Ctrl-C stops.
    """
    _check_sync(sync, sync_peer)
    sync_peer = resolve_peer(sync_peer)
    with (
        running(),
        records.log_file(log_path) as log,
        records.session_errors(),
        Advertising(app, advertise, interface, role="sequence", allow=allow) as advertised,
    ):
        session = SequenceListenSession(
            listen,
            (),
            records.setup(app, allow, iface),
            log=log,
            limit=count,
            audio_choice=audio_choice,
            audio_options=audio.PlayerOptions(
                device=device, latency_compensation=latency_compensation
            ),
            voice_sounds=voice_sounds,
        )
        # --sync as metronome listen --sync
        records.listen_until_done(
            app,
            session,
            event_line,
            duration=duration,
            sync=sync,
            sync_peer=sync_peer,
            publish=advertised.publish,
        )


# -- pair -------------------------------------------------------------------------------------


@sequence.command(
    epilog="""\b
Examples:
  oscsync sequence pair beat.txt --peer 127.0.0.1:9000      # with pd/example4_sequencer.pd
  oscsync sequence pair beat.txt --peer 127.0.0.1:9001 --offset 0.05 --bars 2   # hear yourself
"""
)
@_send_options()
@_listen_options()
@advertise_option()
@click.pass_obj
def pair(
    app: AppContext,
    pattern_path: Path,
    peers: tuple[HostPort, ...],
    bpm: float,
    steps_per_beat: int,
    beats_per_bar: int,
    swing: float,
    offset: float | str,
    bars: int | None,
    duration: float | None,
    iface: str | None,
    framing: Framing,
    listen: HostPort,
    audio_choice: audio.AudioChoice,
    device: str | None,
    latency_compensation: float | None,
    voice_sounds: tuple[tuple[str, Path], ...],
    log_path: Path | None,
    allow: tuple[Network, ...],
    advertise: str | None,
    interface: str,
) -> None:
    """Send the PATTERN and play the steps you receive, in one process.

    Steps go to every --peer; steps arriving on --listen (from anyone, yourself included) are
    played. With --bars or --duration it stops shortly after the last step's timetag.
    """
    total = _step_count(bars, duration, bpm, steps_per_beat, beats_per_bar)
    watched = _read_pattern(pattern_path, app)
    given, peers = peers, resolve_peers(peers)
    with (
        running(),
        records.log_file(log_path) as log,
        records.session_errors(),
        Advertising(app, advertise, interface, role="sequence", allow=allow) as advertised,
    ):
        session = SequenceListenSession(
            listen,
            peers,
            records.setup(app, allow, iface, framing),
            log=log,
            audio_choice=audio_choice,
            audio_options=audio.PlayerOptions(
                device=device, latency_compensation=latency_compensation
            ),
            voice_sounds=voice_sounds,
        )
        grid = _grid(bpm, steps_per_beat, beats_per_bar, swing)
        with following(app, given, peers, session.endpoint.set_peers):
            records.pair_until_done(
                app,
                session,
                event_line,
                peers=peers,
                offset=offset,
                total=total,
                # One timer thread for both halves, as metronome pair.
                sender=lambda seconds: session.sender(watched, offset=seconds, **grid),
                sending_note=lambda seconds: _sending_note(
                    watched, peers, bpm, steps_per_beat, seconds
                ),
                publish=advertised.publish,
            )
