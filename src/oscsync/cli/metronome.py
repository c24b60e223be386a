"""``oscsync metronome send | listen | pair``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click

from oscsync import audio, sounds
from oscsync.apps import metronome as app_metronome
from oscsync.apps.metronome import TickSender, tick_line, ticks_in
from oscsync.apps.sessions import AUTO, SendSession, TickListenSession
from oscsync.cli import records
from oscsync.cli.hangup import hangup_stops
from oscsync.cli.params import (
    DURATION,
    PEER,
    DurationType,
    advertise_option,
    allow_option,
    beats_per_bar_option,
    bpm_range,
    collect,
    framing_option,
    iface_option,
    listen_option,
    log_option,
    options,
    peers_option,
)
from oscsync.cli.peers import following, resolve_peers
from oscsync.cli.runtime import AppContext, running
from oscsync.hostport import HostPort
from oscsync.transport import Network
from oscsync.wording import plural

F = TypeVar("F", bound=Callable[..., Any])


class OffsetType(DurationType):
    """A forward offset in seconds, or ``auto`` (measured with clock pings: see ``send``)."""

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SECONDS|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return AUTO
        return super().convert(value, param, ctx)


OFFSET = OffsetType(minimum=0.0, maximum=records.OFFSET_MAXIMUM)
"""Forward offsets beyond the scheduler's 60 s horizon would be refused by every listener."""


class AudioType(click.ParamType):  # type: ignore[type-arg]
    """One of the players in ``oscsync.audio.registry`` (``auto``, ... ``wav:FILE``)."""

    name = "audio"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return audio.registry.audio_metavar()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, audio.AudioChoice):
            return value
        try:
            return audio.parse_audio_choice(str(value))
        except audio.AudioError as exc:
            self.fail(str(exc), param, ctx)


AUDIO = AudioType()


def audio_option() -> Callable[[F], F]:
    """``--audio`` (its choices, metavar and help come from ``oscsync.audio.registry``) and the
    options the players take: ``--device``, ``--latency-compensation``."""
    return options(
        click.option(
            "--audio",
            "-a",
            "audio_choice",
            type=AUDIO,
            default="auto",
            show_default=True,
            help=audio.registry.audio_help(),
        ),
        click.option(
            "--device",
            metavar="NAME|INDEX",
            help="Sound card for sounddevice: an index or part of a name "
            "(oscsync audio devices lists them) [default: the system's].",
        ),
        click.option(
            "--latency-compensation",
            type=LatencyCompensationType(),
            default="auto",
            show_default=True,
            help="auto: play each sound one output latency (as the sound card reports it) "
            "before its timetag, so the sound leaves the device at the timetag; off: start "
            "computing it at the timetag; MS: this many milliseconds early.",
        ),
    )


class LatencyCompensationType(click.ParamType):  # type: ignore[type-arg]
    """``auto`` (None), ``off`` (0) or milliseconds (returned in seconds)."""

    name = "latency"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "off|auto|MS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return None
        if text == "off":
            return 0.0
        try:
            ms = float(text.removesuffix("ms"))
        except ValueError:
            self.fail(f"{value!r} is not off, auto or a number of milliseconds", param, ctx)
        if not 0 <= ms <= 1000:  # NaN fails this too
            self.fail(f"{value!r}: give 0 to 1000 ms", param, ctx)
        return ms / 1000


def _send_options() -> Callable[[F], F]:
    return options(
        peers_option("Where to send ticks (repeatable: every peer gets every tick)."),
        click.option(
            "--bpm",
            # At 1 bpm a tick is 60 s ahead: the scheduler's horizon.
            type=bpm_range(1, 6000),
            default=app_metronome.DEFAULT_BPM,
            show_default=True,
            help="Beats per minute (120 = a tick every half second, as in the workshop).",
        ),
        _beats_per_bar_option,
        click.option(
            "--offset",
            type=OFFSET,
            default=0.0,
            show_default=True,
            help="0: plain /tick messages, played on arrival. X > 0: each tick in a bundle "
            "timetagged X seconds after its grid time, played at the timetag (e.g. 0.05, 100ms). "
            "auto: ping the peers first and pick one from the measured one-way delays.",
        ),
        click.option("--count", "-c", type=click.IntRange(min=1), help="Send this many ticks."),
        click.option(
            "--duration",
            "-d",
            type=DurationType(minimum=0.0),
            help="Send ticks for this many seconds.",
        ),
        iface_option(),
        framing_option(),
    )


_beats_per_bar_option = beats_per_bar_option(
    app_metronome.DEFAULT_BEATS_PER_BAR, "Beat 0 of each bar is the accent."
)


def _listen_options() -> Callable[[F], F]:
    return options(
        listen_option(),
        audio_option(),
        click.option(
            "--sound",
            type=click.Path(dir_okay=False, path_type=Path),
            help="WAV file for ordinary beats [default: sounds/tick.wav].",
        ),
        click.option(
            "--accent-sound",
            type=click.Path(dir_okay=False, path_type=Path),
            help="WAV file for beat 0 of the bar [default: sounds/tock.wav].",
        ),
        log_option("Write one JSON object per tick (arrival, timetag, onset, beat, late, ...)."),
        allow_option(),
        advertise_option(),
    )


def sync_options() -> Callable[[F], F]:
    return options(
        click.option(
            "--sync",
            type=click.Choice(["peer", "system"]),
            is_flag=False,
            flag_value="peer",
            default=None,
            help="peer (or --sync alone): follow the tick sender's clock: ping it (a burst, "
            "200 then 100 times a second), fit its offset and frequency, and translate its "
            "timetags through a map that is slewed, never stepped; ticks due before the first "
            "estimate are not played. system: trust this machine's clock (both machines "
            "disciplined by chrony or PTP): timetags are used as they are.",
        ),
        click.option(
            "--sync-peer",
            type=PEER,
            metavar="HOST:PORT|@NAME",
            help="Whose clock to follow with --sync (default: the first sender of a timetagged "
            "tick; give it to refuse anyone else's ticks and to sync before the first one).",
        ),
    )


@click.group(
    epilog="""\b
Examples:
  oscsync metronome listen                          # play ticks arriving on 127.0.0.1:9001
  oscsync metronome send --peer 127.0.0.1:9001      # example 2: plain ticks, 120 bpm
  oscsync metronome send --peer 127.0.0.1:9001 --offset 0.1   # example 3: timetagged 100 ms ahead
  oscsync metronome send --peer 127.0.0.1:9000 --bpm 90 -b 3  # to a PD patch, in 3/4
  oscsync metronome listen --audio wav:out.wav --log ticks.jsonl --count 8
  oscsync metronome pair --peer 127.0.0.1:9000 --listen 9001  # both, like the PD patch
"""
)
def metronome() -> None:
    """A networked metronome: send /tick on a grid, play received ticks at their timetag."""


# -- send -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickSending(records.Sending):
    """``send`` and ``pair``'s send options (:func:`_send_options`)."""

    bpm: float
    beats_per_bar: int
    count: int | None

    def total(self) -> int | None:
        """Ticks to send: --count, or those due within --duration; None: until stopped."""
        if self.count is not None and self.duration is not None:
            raise click.UsageError("use --count or --duration, not both")
        if self.duration is not None:
            return ticks_in(self.duration, self.bpm)
        return self.count

    def note(self, peers: tuple[HostPort, ...], offset: float) -> str:
        kind = (
            f"in bundles timetagged {offset * 1000:g} ms ahead" if offset else "as plain messages"
        )
        where = ", ".join(str(peer) for peer in peers)
        return f"sending /tick to {where} at {self.bpm:g} bpm, {self.beats_per_bar} per bar, {kind}"


@metronome.command(
    epilog="""\b
Examples:
  oscsync metronome send --peer 127.0.0.1:9001
  oscsync metronome send --peer 127.0.0.1:9001 --offset 0.05 --count 16
  oscsync metronome send --peer 127.0.0.1:9000 --peer 192.168.1.20:9001 --bpm 100
"""
)
@_send_options()
@allow_option(" Clock pings (and pongs) from elsewhere are dropped, counted.")
@click.pass_obj
@collect("sending", TickSending)
def send(app: AppContext, sending: TickSending, allow: tuple[Network, ...]) -> None:
    """Send /tick ,i BEAT on a drift-free grid (tick k at t0 + k·60/bpm).

    BEAT counts 0 .. beats-per-bar − 1; 0 is the accent. Runs until --count, --duration or
    Ctrl-C. Answers clock pings from listeners (metronome listen --sync) while it runs.
    """
    total = sending.total()
    peers = resolve_peers(sending.peers)
    with (
        # With --count/--duration the run has an end: cut short, it exits 130 (issue #13).
        running(interrupted_exit=total is not None),
        hangup_stops(),
        records.session_errors(),
        SendSession(peers, records.setup(app, allow, sending.iface, sending.framing)) as session,
        following(app, sending.peers, peers, session.endpoint.set_peers),
    ):
        records.send_until_done(
            app,
            session,
            offset=sending.offset,
            total=total,
            sender=lambda seconds: session.tick_sender(
                bpm=sending.bpm, beats_per_bar=sending.beats_per_bar, offset=seconds
            ),
            sending_note=partial(sending.note, peers),
            summary=lambda sender: _sent_summary(sender, total),
            progress="tick",
        )


def _sent_summary(sender: TickSender, total: int | None) -> str:
    if total is not None and sender.sent < total:
        text = f"metronome: sent {sender.sent} of {plural(total, 'tick')}"
    else:
        text = f"metronome: sent {plural(sender.sent, 'tick')}"
    if sender.lateness.count:
        text += (
            f"; send time after grid: mean {sender.lateness.mean * 1e6:.0f} µs, "
            f"max {sender.lateness.maximum * 1e6:.0f} µs"
        )
    return text


# -- listen -----------------------------------------------------------------------------------


def _sound_paths(sound: Path | None, accent_sound: Path | None) -> dict[str, Path]:
    chosen = {
        audio.TICK: (sound, "--sound", "tick"),
        audio.ACCENT: (accent_sound, "--accent-sound", "tock"),
    }
    paths: dict[str, Path] = {}
    for key, (given, option, default) in chosen.items():
        try:
            path = given if given is not None else sounds.default_path(default)
            audio.read_wav(path)
        except audio.AudioError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None
        paths[key] = path
    return paths


@metronome.command(
    epilog="""\b
Examples:
  oscsync metronome listen                               # 127.0.0.1:9001, sound card if any
  oscsync metronome listen --listen 0.0.0.0:9001         # accept ticks from other machines
  oscsync metronome listen --audio wav:out.wav --log ticks.jsonl --count 8
  oscsync metronome listen --audio playsound             # the workshop's way (high latency)
  oscsync metronome listen --audio sounddevice --device 0  # see: oscsync audio devices
  oscsync metronome listen --listen 0.0.0.0:9001 --advertise alice   # found as @alice
"""
)
@_listen_options()
@_beats_per_bar_option
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many ticks.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@sync_options()
@iface_option()
@click.pass_obj
@collect("listening", records.Listening)
def listen(
    app: AppContext,
    listening: records.Listening,
    sound: Path | None,
    accent_sound: Path | None,
    beats_per_bar: int,
    count: int | None,
    duration: float | None,
    iface: str | None,
) -> None:
    """Play each /tick at its timetag (plain ticks: on arrival); beat 0 of the bar is accented.

    /tick may carry an int, a float (Pure Data) or nothing. On a terminal a live line shows ticks,
    late ticks, the interval between onsets (mean ± std) and the headroom (timetag − arrival);
    piped, one line per tick. Ctrl-C stops and prints a summary.
    """
    listening = listening.checked()
    sound_paths = _sound_paths(sound, accent_sound)
    with running(), hangup_stops(), records.listening(app, listening, "metronome") as run:
        session = run.session(
            TickListenSession,
            iface=iface,
            limit=count,
            sound_paths=sound_paths,
            beats_per_bar=beats_per_bar,
        )
        run.listen_until_done(session, tick_line, duration=duration, explain_sync=True)


# -- pair -------------------------------------------------------------------------------------


@metronome.command(
    epilog="""\b
Examples:
  oscsync metronome pair --peer 127.0.0.1:9000              # with a PD patch (PD on 9000)
  oscsync metronome pair --peer 127.0.0.1:9001 --offset 0.05 --count 8   # hear yourself
"""
)
@_send_options()
@_listen_options()
@sync_options()
@click.pass_obj
@collect("sending", TickSending)
@collect("listening", records.Listening)
def pair(
    app: AppContext,
    sending: TickSending,
    listening: records.Listening,
    sound: Path | None,
    accent_sound: Path | None,
) -> None:
    """Send ticks and play the ticks you receive, in one process (like the PD patch).

    Ticks go to every --peer; ticks arriving on --listen (from anyone, yourself included) are
    played. With --count or --duration it stops shortly after the last tick's timetag. With
    --sync, received timetags are translated from the sender's clock, as listen --sync does.
    """
    total = sending.total()
    listening = listening.checked()
    sound_paths = _sound_paths(sound, accent_sound)
    peers = resolve_peers(sending.peers)
    with (
        running(interrupted_exit=total is not None),
        hangup_stops(),
        records.listening(app, listening, "metronome") as run,
    ):
        session = run.session(
            TickListenSession,
            iface=sending.iface,
            peers=peers,
            framing=sending.framing,
            sound_paths=sound_paths,
            beats_per_bar=sending.beats_per_bar,
        )
        run.pair_until_done(
            session,
            tick_line,
            sending=sending,
            peers=peers,
            total=total,
            sender=lambda seconds: session.sender(bpm=sending.bpm, offset=seconds),
            sending_note=partial(sending.note, peers),
        )
