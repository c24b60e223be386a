"""``oscsync sequence send | listen | pair``: a drum-machine pattern on the synchronised clock."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from oscsync import audio, sounds
from oscsync.apps import sequence as app_sequence
from oscsync.apps.endpoints import open_endpoint
from oscsync.apps.sequence import (
    EventRecord,
    PatternFile,
    SequenceListener,
    SequenceSender,
    VoiceSounds,
    event_line,
)
from oscsync.apps.ticklog import LogWriter
from oscsync.cli.metronome import (
    _AUTO_PINGS,
    _GRACE,
    AUDIO,
    AUTO,
    OFFSET,
    _auto_offset,
    _check_sync,
    _compose,
    _follower,
    _ignore,
    _log_file,
    _sync_options,
)
from oscsync.cli.params import (
    DURATION,
    DurationType,
    advertise_option,
    allow_option,
    iface_option,
    listen_option,
    peers_option,
)
from oscsync.cli.peers import advertising, following, resolve_peer, resolve_peers
from oscsync.cli.runtime import AppContext, leave_without_stdout, running, wait
from oscsync.clockfollow import ClockFollower
from oscsync.clocksync import PONG, PeerClocks
from oscsync.hostport import HostPort
from oscsync.pattern import NAME, Pattern, PatternError
from oscsync.scheduler import Scheduler
from oscsync.transport import Endpoint, Network, Received

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
    )


def _listen_options() -> Callable[[F], F]:
    return _compose(
        listen_option(),
        click.option(
            "--audio",
            "-a",
            "audio_choice",
            type=AUDIO,
            default="auto",
            show_default=True,
            help="auto: sounddevice if a sound card is there, else none. "
            "wav:FILE renders the session into a WAV file (each hit at its exact frame).",
        ),
        click.option(
            "--sound",
            "voice_sounds",
            type=VoiceSoundType(),
            multiple=True,
            help="WAV file for a voice (repeatable) [default: sounds/kick.wav, snare.wav, "
            "hat.wav; other drum voices play the tick, pitched voices a tone].",
        ),
        click.option(
            "--log",
            "log_path",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE.jsonl",
            help="Write one JSON object per event (voice, step, velocity, onset, timetag, late).",
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


def _describe(pattern: Pattern) -> str:
    voices = len(pattern.voices)
    return f"{voices} voice{'' if voices == 1 else 's'}, {pattern.length} steps"


def _sender(
    app: AppContext,
    send: Callable[[bytes], object],
    scheduler: Scheduler,
    watched: PatternFile,
    *,
    bpm: float,
    steps_per_beat: int,
    beats_per_bar: int,
    swing: float,
    offset: float,
) -> SequenceSender:
    def reloaded(bar: int, pattern: Pattern) -> None:
        app.note(f"bar {bar}: {watched.path} changed; now playing {_describe(pattern)}")

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
    )


def _sending_note(
    watched: PatternFile, peers: tuple[HostPort, ...], bpm: float, steps: int, offset: float
) -> str:
    kind = f"timetagged {offset * 1000:g} ms ahead" if offset else "played on arrival"
    where = ", ".join(str(peer) for peer in peers)
    return (
        f"sequencing {watched.path} ({_describe(watched.pattern)}) to {where} at {bpm:g} bpm, "
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
    allow: tuple[Network, ...],
) -> None:
    """Send the PATTERN file, one bundle per step with a /seq/VOICE message per sounding voice.

    The pattern loops; saving the file changes it at the next bar line. Runs until --bars,
    --duration or Ctrl-C. See docs/example4-sequencer.md for the pattern format.
    """
    total = _step_count(bars, duration, bpm, steps_per_beat, beats_per_bar)
    watched = _read_pattern(pattern_path, app)
    clock = app.clock
    given, peers = peers, resolve_peers(peers)
    with (
        running(),
        open_endpoint(
            peers=peers, allow=allow, clock=clock, on_warning=app.warn, multicast_interface=iface
        ) as ep,
        following(app, given, peers, ep.set_peers),
        Scheduler(clock, on_warning=app.warn) as scheduler,
    ):
        clocks = PeerClocks(clock, ep, peers, filter_size=_AUTO_PINGS)
        ep.add_service(PONG, clocks.service)
        ep.start(_ignore)  # answers the clock pings of listeners with --sync
        if offset == AUTO:
            offset = _auto_offset(app, clocks)
        assert isinstance(offset, float)
        sender = _sender(
            app,
            ep.send_bytes,
            scheduler,
            watched,
            bpm=bpm,
            steps_per_beat=steps_per_beat,
            beats_per_bar=beats_per_bar,
            swing=swing,
            offset=offset,
        )
        try:
            app.note(_sending_note(watched, peers, bpm, steps_per_beat, offset))
            sender.start(total)
            scheduler.start()
            wait(sender.done, clock, None)
        finally:
            sender.stop()
            scheduler.close()
            app.note(f"sequence: sent {sender.sent} steps, {sender.reloads} pattern changes")


# -- listen -----------------------------------------------------------------------------------


class _Session:
    """The listening half of ``listen`` and ``pair``: player, voice sounds, scheduler, display."""

    def __init__(
        self,
        app: AppContext,
        audio_choice: audio.AudioChoice,
        voice_sounds: tuple[tuple[str, Path], ...],
        log: LogWriter | None,
        limit: int | None,
    ) -> None:
        self.app = app
        self.done = threading.Event()
        self.limit = limit
        self.live = app.live_line()  # fits the terminal, warnings above it (issue #13)
        self.output_closed = False
        self.on_failure: list[Callable[[], None]] = []  # what stops with it (pair's sender)
        if log is not None:
            log.on_error = self._log_failed
        self.directory = tempfile.TemporaryDirectory(prefix="oscsync-sequence-")
        try:
            chosen = {name: sounds.default_path(name) for name in sounds.DRUMS}
            chosen.update(dict(voice_sounds))
            self.player = audio.open_player(
                audio_choice,
                app.clock,
                {audio.TICK: sounds.default_path("tick")},
                notice=app.note,
                warn=app.warn,
            )
            self.sounds = VoiceSounds(self.player, Path(self.directory.name))
            for voice, path in chosen.items():
                self.sounds.load(voice, path)
        except audio.AudioError as exc:
            self.directory.cleanup()
            raise click.ClickException(str(exc)) from None
        description = self.player.describe()
        if description:
            app.note(description)
        self.scheduler = Scheduler(app.clock, on_warning=app.warn)
        self.listener = SequenceListener(
            self.player,
            self.scheduler,
            app.clock,
            self.sounds,
            log=log,
            on_event=self._on_event,
            limit=limit,
        )
        self.scheduler.start()

    def _log_failed(self, exc: OSError) -> None:
        # Stop at once, as metronome listen: _log_file reports the error (one line, exit 1).
        self.done.set()
        for stop in self.on_failure:
            stop()

    def _on_event(self, record: EventRecord) -> None:
        if self.live.enabled:
            self.live.show(self.listener.status())
        elif not self.app.quiet and not self.output_closed:
            try:
                sys.stdout.write(event_line(record) + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):  # `| head`: the reader is gone (issue #13)
                self.output_closed = True
                self.done.set()
        if self.limit is not None and record.seq + 1 >= self.limit:
            self.done.set()

    def close(self, endpoint: Endpoint) -> None:
        endpoint.close()
        self.scheduler.close()
        try:
            self.player.close()
        except (audio.AudioError, OSError) as exc:
            self.app.warn(f"audio: {exc}")
        self.directory.cleanup()
        self.live.end()
        self.app.live = None
        if not self.output_closed:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                self.output_closed = True
        text = "sequence: " + self.listener.stats.line()
        dropped = self.scheduler.stats().dropped_total
        if dropped:
            text += f"  dropped {dropped}"
        if endpoint.stats.dropped:
            text += f"  bad datagrams {endpoint.stats.dropped}"
        self.app.note(text)
        if self.output_closed:
            leave_without_stdout(stopped_cleanly=True)


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
        _log_file(log_path) as log,
        advertising(app, advertise, interface, role="sequence", allow=allow) as advertised,
    ):
        endpoint = open_endpoint(
            listen, allow=allow, clock=app.clock, on_warning=app.warn, multicast_interface=iface
        )
        session: _Session | None = None
        follower: ClockFollower | None = None
        try:
            session = _Session(app, audio_choice, voice_sounds, log, count)
            app.note(f"listening on {endpoint.local_address}")
            handler: Callable[[Received], None] = session.listener.on_message
            follower = _follower(app, endpoint, sync, sync_peer)  # as metronome listen --sync
            if follower is not None:
                handler = follower.wrap(handler)
                follower.start()
            endpoint.start(handler)
            advertised.publish(endpoint.local_address)
            wait(session.done, app.clock, duration)
        finally:
            if follower is not None:
                follower.close()
                app.note(follower.describe())
            if session is not None:
                session.close(endpoint)
            else:
                endpoint.close()


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
    listen: HostPort,
    audio_choice: audio.AudioChoice,
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
    clock = app.clock
    given, peers = peers, resolve_peers(peers)
    with (
        running(),
        _log_file(log_path) as log,
        advertising(app, advertise, interface, role="sequence", allow=allow) as advertised,
        contextlib.ExitStack() as follow,
    ):
        endpoint = open_endpoint(
            listen, peers, allow=allow, clock=clock, on_warning=app.warn, multicast_interface=iface
        )
        follow.enter_context(following(app, given, peers, endpoint.set_peers))
        session: _Session | None = None
        sender: SequenceSender | None = None
        try:
            session = _Session(app, audio_choice, voice_sounds, log, None)
            app.note(f"listening on {endpoint.local_address}")
            clocks = PeerClocks(clock, endpoint, peers, filter_size=_AUTO_PINGS)
            endpoint.add_service(PONG, clocks.service)
            endpoint.start(session.listener.on_message)
            advertised.publish(endpoint.local_address)
            if offset == AUTO:
                offset = _auto_offset(app, clocks)
            assert isinstance(offset, float)
            app.note(_sending_note(watched, peers, bpm, steps_per_beat, offset))
            # One timer thread for both halves, as metronome pair.
            sender = _sender(
                app,
                endpoint.send_bytes,
                session.scheduler,
                watched,
                bpm=bpm,
                steps_per_beat=steps_per_beat,
                beats_per_bar=beats_per_bar,
                swing=swing,
                offset=offset,
            )
            session.on_failure.append(sender.stop)
            sender.start(total)
            wait(sender.done, clock, None)
            wait(session.done, clock, offset + _GRACE)
        finally:
            if sender is not None:
                sender.stop()
            if session is not None:
                session.close(endpoint)
            else:
                endpoint.close()
