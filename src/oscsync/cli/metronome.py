"""The ``oscsync metronome send | listen | pair`` commands: their options and what they print
(the work: :mod:`oscsync.apps.metronome`, :mod:`oscsync.apps.sessions`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import click

from oscsync import audio
from oscsync.apps import metronome as app_metronome
from oscsync.apps.metronome import TickSender, tick_line, ticks_in
from oscsync.apps.sessions import TickListenSession
from oscsync.audio import sounds
from oscsync.cli import records
from oscsync.cli.hangup import hangup_stops
from oscsync.cli.link import LinkOptions, link_options, linked
from oscsync.cli.params import (
    DURATION,
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
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort
from oscsync.terminal.wording import milliseconds, plural

_beats_per_bar_option = beats_per_bar_option(
    app_metronome.DEFAULT_BEATS_PER_BAR, "Beat 0 of each bar is the accent."
)


_send_options = records.send_options(
    # At 1 bpm (the least) a tick is 60 s ahead: the scheduler's horizon.
    bpm_option(
        6000,
        app_metronome.DEFAULT_BPM,
        "Beats per minute (120 = a tick every half second, as in the workshop).",
    ),
    _beats_per_bar_option,
    peers_help="Where to send ticks (repeatable: every peer gets every tick).",
    offset_help="0: plain /tick messages, played on arrival. X > 0: each tick in a bundle "
    "timetagged X seconds after its grid time, played at the timetag (e.g. 0.05, 100ms). "
    "auto: ping the peers first and pick one from the measured one-way delays.",
    limit=click.option("--count", "-c", type=click.IntRange(min=1), help="Send this many ticks."),
    duration_help="Send ticks for this many seconds.",
)


_listen_options = options(
    records.listen_options(
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
        log_help="Write one JSON object per tick (arrival, timetag, onset, beat, late, ...).",
    ),
    advertise_option(),
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
    """``send`` and ``pair``'s send options (``_send_options``)."""

    bpm: float
    beats_per_bar: int
    count: int | None

    limit_option = "--count"

    def given_total(self) -> int | None:
        return self.count

    def total_in(self, duration: float) -> int:
        return ticks_in(duration, self.bpm)

    def note(self, peers: tuple[HostPort, ...], offset: float, *, linked: bool = False) -> str:
        kind = (
            f"in bundles timetagged {milliseconds(offset)} ahead" if offset else "as plain messages"
        )
        where = ", ".join(str(peer) for peer in peers)
        tempo = "on the Link session's beats" if linked else f"at {self.bpm:g} bpm"
        return f"sending /tick to {where} {tempo}, {self.beats_per_bar} per bar, {kind}"


@metronome.command(
    epilog="""\b
Examples:
  oscsync metronome send --peer 127.0.0.1:9001
  oscsync metronome send --peer 127.0.0.1:9001 --offset 0.05 --count 16
  oscsync metronome send --peer 127.0.0.1:9000 --peer 192.168.1.20:9001 --bpm 100
"""
)
@_send_options
@allow_option(" Clock pings (and pongs) from elsewhere are dropped, counted.")
@link_options()
@room_option()
@pass_app
@collect("sending", TickSending)
@collect("link", LinkOptions.given)
def send(
    app: AppContext,
    sending: TickSending,
    allow: tuple[Network, ...],
    link: LinkOptions,
    room: bool,
) -> None:
    """Send /tick ,i BEAT on a drift-free grid (tick k at t0 + k·60/bpm).

    BEAT counts 0 .. beats-per-bar − 1; 0 is the accent. Runs until --count, --duration or
    Ctrl-C. Answers clock pings from listeners (metronome listen --sync) while it runs. With
    --link, the grid is an Ableton Link session's beats (docs/link.md).
    """
    total = sending.total()
    peers = resolve_peers(sending.peers)
    with (
        # With --count/--duration the run has an end: cut short, it exits 130 (issue #13).
        running(interrupted_exit=total is not None),
        hangup_stops(),
        records.send_session(app, sending, peers, allow, room=room) as session,
        linked(app, link, bpm=sending.bpm, beats_per_bar=sending.beats_per_bar) as grid,
    ):
        if grid is not None and sending.duration is not None:
            total = ticks_in(sending.duration, grid.status().tempo)  # the session's tempo
        records.send_until_done(
            app,
            session,
            offset=sending.offset,
            total=total,
            sender=lambda seconds: session.tick_sender(
                bpm=sending.bpm, beats_per_bar=sending.beats_per_bar, offset=seconds, grid=grid
            ),
            sending_note=partial(sending.note, peers, linked=grid is not None),
            summary=lambda sender: _sent_summary(sender, total),
            progress="tick",
            room=room,
        )


def _sent_summary(sender: TickSender, total: int | None) -> str:
    if total is not None and sender.steps < total:
        text = f"metronome: sent {sender.sent} of {plural(total, 'tick')}"
    else:
        text = f"metronome: sent {plural(sender.sent, 'tick')}"
    if sender.silent:  # only a Link session that was stopped (--link-start-stop) silences one
        text += f", silent {sender.silent} while the session was stopped"
    if sender.lateness.count:
        text += "; " + sender.lateness_text()
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
@_listen_options
@_beats_per_bar_option
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many ticks.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@sync_options()
@iface_option()
@pass_app
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
@_send_options
@_listen_options
@sync_options()
@pass_app
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
        records.listening(app, listening, "metronome", sending, peers) as run,
    ):
        session = run.session(
            TickListenSession,
            sound_paths=sound_paths,
            beats_per_bar=sending.beats_per_bar,
        )
        run.pair_until_done(
            session,
            tick_line,
            total=total,
            sender=lambda seconds: session.sender(bpm=sending.bpm, offset=seconds),
            sending_note=partial(sending.note, peers),
        )
