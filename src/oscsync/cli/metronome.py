"""``oscsync metronome send | listen | pair``."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import click

from oscsync import audio, sounds
from oscsync.apps import metronome as app_metronome
from oscsync.apps.endpoints import open_endpoint
from oscsync.apps.metronome import MetronomeListener, TickRecord, TickSender, tick_line, ticks_in
from oscsync.apps.ticklog import LogWriter
from oscsync.cli.hangup import hangup_stops
from oscsync.cli.params import (
    DURATION,
    PEER,
    DurationType,
    advertise_option,
    allow_option,
    bpm_range,
    iface_option,
    listen_option,
    peers_option,
)
from oscsync.cli.peers import advertising, following, resolve_peer, resolve_peers
from oscsync.cli.runtime import AppContext, leave_without_stdout, running, wait
from oscsync.clockfollow import ClockFollower
from oscsync.clocksync import PONG, PeerClocks
from oscsync.hostport import HostPort
from oscsync.scheduler import Scheduler
from oscsync.transport import Endpoint, Network, Received
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


AUTO = "auto"
OFFSET = OffsetType(minimum=0.0, maximum=60.0)
"""Forward offsets beyond the scheduler's 60 s horizon would be refused by every listener."""

_GRACE = 0.25
"""Seconds ``pair`` keeps listening after its last tick's timetag, for that tick to come back."""


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


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def _send_options() -> Callable[[F], F]:
    return _compose(
        peers_option("Where to send ticks (repeatable: every peer gets every tick)."),
        click.option(
            "--bpm",
            # At 1 bpm a tick is 60 s ahead: the scheduler's horizon.
            type=bpm_range(1, 6000),
            default=app_metronome.DEFAULT_BPM,
            show_default=True,
            help="Beats per minute (120 = a tick every half second, as in the workshop).",
        ),
        _beats_per_bar_option(),
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
    )


def _beats_per_bar_option() -> Callable[[F], F]:
    return click.option(
        "--beats-per-bar",
        "-b",
        type=click.IntRange(min=1, max=64),
        default=app_metronome.DEFAULT_BEATS_PER_BAR,
        show_default=True,
        help="Beat 0 of each bar is the accent.",
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
            help="auto: play each tick one output latency (as the sound card reports it) before "
            "its timetag, so the sound leaves the device at the timetag; off: start computing it "
            "at the timetag; MS: this many milliseconds early.",
        ),
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
        click.option(
            "--log",
            "log_path",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE.jsonl",
            help="Write one JSON object per tick (arrival, timetag, onset, beat, late, ...).",
        ),
        allow_option(),
        advertise_option(),
    )


def _sync_options() -> Callable[[F], F]:
    return _compose(
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


def _check_sync(sync: str | None, sync_peer: HostPort | None) -> None:
    if sync == "system" and sync_peer is not None:
        raise click.UsageError("--sync-peer follows a peer's clock: not with --sync system")


def _follower(
    app: AppContext, endpoint: Endpoint, sync: str | None, sync_peer: HostPort | None
) -> ClockFollower | None:
    """--sync peer: a ClockFollower; --sync system: None (timetags used as they are)."""
    if sync == "system":
        app.note("clock sync: system (timetags used as they are: this clock is trusted)")
        return None
    if sync is None and sync_peer is None:
        return None
    peer = None if sync_peer is None else sync_peer.sockaddr
    return ClockFollower(endpoint, peer=peer, on_warning=app.warn)


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


def _tick_count(count: int | None, duration: float | None, bpm: float) -> int | None:
    if count is not None and duration is not None:
        raise click.UsageError("use --count or --duration, not both")
    if duration is not None:
        return ticks_in(duration, bpm)
    return count


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
def send(
    app: AppContext,
    peers: tuple[HostPort, ...],
    bpm: float,
    beats_per_bar: int,
    offset: float | str,
    count: int | None,
    duration: float | None,
    iface: str | None,
    allow: tuple[Network, ...],
) -> None:
    """Send /tick ,i BEAT on a drift-free grid (tick k at t0 + k·60/bpm).

    BEAT counts 0 .. beats-per-bar − 1; 0 is the accent. Runs until --count, --duration or
    Ctrl-C. Answers clock pings from listeners (metronome listen --sync) while it runs.
    """
    total = _tick_count(count, duration, bpm)
    clock = app.clock
    given, peers = peers, resolve_peers(peers)
    with (
        # With --count/--duration the run has an end: cut short, it exits 130 (issue #13).
        running(interrupted_exit=total is not None),
        hangup_stops(),
        open_endpoint(
            peers=peers, allow=allow, clock=clock, on_warning=app.warn, multicast_interface=iface
        ) as ep,
        following(app, given, peers, ep.set_peers),
        Scheduler(clock, on_warning=app.warn) as scheduler,
    ):
        clocks = PeerClocks(clock, ep, peers, filter_size=_AUTO_PINGS)
        ep.add_service(PONG, clocks.service)
        # Started even without --offset auto: the endpoint's services answer the clock pings of
        # listeners that follow this sender's clock (metronome listen --sync).
        ep.start(_ignore)
        if offset == AUTO:
            offset = _auto_offset(app, clocks)
        assert isinstance(offset, float)
        sender = TickSender(
            ep.send_bytes, scheduler, bpm=bpm, beats_per_bar=beats_per_bar, offset=offset
        )
        live = app.live_line()
        try:
            # Inside the try: a stop signal right after this line still prints the summary
            # (tests/test_signals.py waits for this line, then signals).
            app.note(_sending_note(peers, bpm, beats_per_bar, offset))
            sender.start(
                total,
                on_sent=(lambda k: live.show(f"sent {plural(k + 1, 'tick')}"))
                if live.enabled
                else None,
            )
            scheduler.start()
            wait(sender.done, clock, None)
        finally:
            sender.stop()
            scheduler.close()
            live.end()
            app.live = None
            app.note(_sent_summary(sender, total))


_AUTO_PINGS = 16
_AUTO_INTERVAL = 0.02
_AUTO_TIMEOUT = 1.0


def _ignore(_: Received) -> None:
    pass


def _auto_offset(app: AppContext, clocks: PeerClocks) -> float:
    """--offset auto: ping each peer, then cover the slowest one-way delay (see choose_offset)."""
    choice, silent = clocks.choose_offset(_AUTO_PINGS, _AUTO_INTERVAL, _AUTO_TIMEOUT)
    if choice is None:
        raise click.ClickException(
            "--offset auto: no peer answered the clock pings (is an oscsync listener there?); "
            "give --offset SECONDS instead"
        )
    for peer in silent:
        app.warn(f"--offset auto: {peer} did not answer clock pings; it is not covered")
    app.note(choice.describe())
    return min(choice.offset, OFFSET.maximum or choice.offset)


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


def _sending_note(
    peers: tuple[HostPort, ...], bpm: float, beats_per_bar: int, offset: float
) -> str:
    kind = f"in bundles timetagged {offset * 1000:g} ms ahead" if offset else "as plain messages"
    where = ", ".join(str(peer) for peer in peers)
    return f"sending /tick to {where} at {bpm:g} bpm, {beats_per_bar} per bar, {kind}"


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


@contextlib.contextmanager
def _log_file(path: Path | None) -> Iterator[LogWriter | None]:
    """The --log file; a write that fails while running ends the command with one ``Error:``
    line (exit 1) once the summary is printed, never a traceback (issue 20, item 11)."""
    if path is None:
        yield None
        return
    try:
        writer = LogWriter(path)
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write {path}: {exc.strerror}", param_hint="'--log'"
        ) from None
    try:
        yield writer
    finally:
        writer.close()
    if writer.error is not None:
        raise click.ClickException(writer.describe_error())


class _Session:
    """The listening half shared by ``listen`` and ``pair``: player, scheduler, log, display."""

    def __init__(
        self,
        app: AppContext,
        audio_choice: audio.AudioChoice,
        sound_paths: dict[str, Path],
        beats_per_bar: int,
        log: LogWriter | None,
        limit: int | None,
        audio_options: audio.PlayerOptions | None = None,
    ) -> None:
        self.app = app
        self.done = threading.Event()
        self.limit = limit
        self.log = log
        self.failure: str | None = None
        self.on_failure: list[Callable[[], None]] = []
        """What else stops with the session (pair's sender): on a player failure, and when
        stdout goes away."""
        options = dataclasses.replace(
            audio_options or audio.PlayerOptions(), warn=app.warn, on_error=self._fail
        )
        if log is not None:
            log.on_error = self._log_failed
        try:
            self.player = audio.open_player(
                audio_choice, app.clock, sound_paths, notice=app.note, options=options
            )
        except audio.DeviceNotFound as exc:
            raise click.BadParameter(str(exc), param_hint="'--device'") from None
        except audio.AudioError as exc:
            raise click.ClickException(str(exc)) from None
        description = self.player.describe()
        if description:
            app.note(description)
        self.scheduler = Scheduler(app.clock, on_warning=app.warn)
        self.follower: ClockFollower | None = None
        """Set by ``--sync``: its state joins the live line."""
        self.live = app.live_line()
        self.output_closed = False
        """stdout went away (``| head -3``): the session stops, quietly."""
        self.listener = MetronomeListener(
            self.player,
            self.scheduler,
            app.clock,
            beats_per_bar=beats_per_bar,
            log=None if log is None else cast(TextIO, log),
            on_tick=self._on_tick,
            limit=limit,
            on_warning=app.warn,
        )
        self.scheduler.start()

    def _log_failed(self, exc: OSError) -> None:
        # Stop at once: a log that cannot be written is an error the user must see now, not
        # after an hour of ticks that were never recorded (_log_file reports it, exit 1).
        self.done.set()
        for stop in self.on_failure:
            stop()

    def _fail(self, message: str) -> None:
        """The player cannot go on (a WAV that cannot be written): stop, and exit 1 with it."""
        self.failure = message
        self.done.set()
        for stop in self.on_failure:
            stop()

    def _on_tick(self, record: TickRecord) -> None:
        if self.live.enabled:
            status = self.listener.status()
            if self.follower is not None:
                status += "  " + self.follower.status()
            self.live.show(status)
        elif not self.app.quiet and not self.output_closed:
            try:
                sys.stdout.write(tick_line(record) + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
                # Whoever read the tick lines is gone (issue #13: `listen | head -3` ran on,
                # warning about BrokenPipeError on every tick): stop like a Ctrl-C.
                self.output_closed = True
                self.done.set()
                for stop in self.on_failure:
                    stop()
        if self.limit is not None and record.seq + 1 >= self.limit:
            self.done.set()

    def close(self, endpoint: Endpoint | None) -> None:
        if endpoint is not None:
            endpoint.close()
        self.scheduler.close()
        try:
            self.player.close()
        except (audio.AudioError, OSError) as exc:
            if self.failure is None:
                self.failure = str(exc)
        self.live.end()
        self.app.live = None
        if not self.output_closed:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                self.output_closed = True
        extra: dict[str, Any] = {}
        sched = self.scheduler.stats()
        if sched.dropped_total:
            extra["dropped"] = sched.dropped_total
        if endpoint is not None and endpoint.stats.dropped:
            extra["bad datagrams"] = endpoint.stats.dropped
        if endpoint is not None and endpoint.stats.platform_note():
            extra["note"] = endpoint.stats.platform_note()
        if self.log is not None:
            # What reached the file, which is not "ticks" when the log failed.
            extra["logged"] = (
                self.log.lines
                if self.log.error is None
                else (f"{self.log.lines} (then the log failed)")
            )
        extra.update(audio.player_summary(self.player))
        self.app.note(app_metronome.summary(self.listener.stats, extra))
        if self.output_closed:
            leave_without_stdout(stopped_cleanly=True)
        if self.failure is not None:
            raise click.ClickException(f"audio: {self.failure}")


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
@_beats_per_bar_option()
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many ticks.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@_sync_options()
@iface_option()
@click.pass_obj
def listen(
    app: AppContext,
    listen: HostPort,
    audio_choice: audio.AudioChoice,
    device: str | None,
    latency_compensation: float | None,
    sound: Path | None,
    accent_sound: Path | None,
    log_path: Path | None,
    allow: tuple[Network, ...],
    beats_per_bar: int,
    count: int | None,
    duration: float | None,
    sync: str | None,
    sync_peer: HostPort | None,
    iface: str | None,
    advertise: str | None,
    interface: str,
) -> None:
    """Play each /tick at its timetag (plain ticks: on arrival); beat 0 of the bar is accented.

    /tick may carry an int, a float (Pure Data) or nothing. On a terminal a live line shows ticks,
    late ticks, the interval between onsets (mean ± std) and the headroom (timetag − arrival);
    piped, one line per tick. Ctrl-C stops and prints a summary.
    """
    _check_sync(sync, sync_peer)
    paths = _sound_paths(sound, accent_sound)
    sync_peer = resolve_peer(sync_peer)
    with (
        running(),
        hangup_stops(),
        _log_file(log_path) as log,
        advertising(app, advertise, interface, role="metronome", allow=allow) as advertised,
    ):
        endpoint = open_endpoint(
            listen, allow=allow, clock=app.clock, on_warning=app.warn, multicast_interface=iface
        )
        session: _Session | None = None
        follower: ClockFollower | None = None
        try:
            session = _Session(
                app,
                audio_choice,
                paths,
                beats_per_bar,
                log,
                count,
                audio.PlayerOptions(device=device, latency_compensation=latency_compensation),
            )
            app.note(f"listening on {endpoint.local_address}")
            handler: Callable[[Received], None] = session.listener.on_message
            follower = _follower(app, endpoint, sync, sync_peer)
            if follower is not None:
                session.follower = follower
                handler = follower.wrap(handler)
                follower.start()
            endpoint.start(handler)
            advertised.publish(endpoint.local_address)
            wait(session.done, app.clock, duration)
        finally:
            if follower is not None:
                follower.close()
            if (sync or sync_peer is not None) and (follower is None or follower.peer is None):
                # Stopped before any tick came: there was nobody to follow (issue #13).
                app.note("clock sync: no ticks arrived, so there was no sender's clock to follow")
            elif follower is not None:
                app.note(follower.describe())
            if session is not None:
                session.close(endpoint)
            else:
                endpoint.close()


# -- pair -------------------------------------------------------------------------------------


def _pong_router(
    follower: ClockFollower, clocks: PeerClocks
) -> Callable[[Endpoint, Received], None]:
    """Pongs for --offset auto's pings and for the clock follower's, on one endpoint: the
    follower takes those from the peer it follows, --offset auto (which matches its own pings
    and ignores the rest) sees every one."""

    def route(endpoint: Endpoint, received: Received) -> None:
        clocks.service(endpoint, received)
        if received.source == follower.peer:
            follower.take_pong(received)

    return route


@metronome.command(
    epilog="""\b
Examples:
  oscsync metronome pair --peer 127.0.0.1:9000              # with a PD patch (PD on 9000)
  oscsync metronome pair --peer 127.0.0.1:9001 --offset 0.05 --count 8   # hear yourself
"""
)
@_send_options()
@_listen_options()
@_sync_options()
@click.pass_obj
def pair(
    app: AppContext,
    peers: tuple[HostPort, ...],
    bpm: float,
    beats_per_bar: int,
    offset: float | str,
    count: int | None,
    duration: float | None,
    iface: str | None,
    listen: HostPort,
    audio_choice: audio.AudioChoice,
    device: str | None,
    latency_compensation: float | None,
    sound: Path | None,
    accent_sound: Path | None,
    log_path: Path | None,
    allow: tuple[Network, ...],
    sync: str | None,
    sync_peer: HostPort | None,
    advertise: str | None,
    interface: str,
) -> None:
    """Send ticks and play the ticks you receive, in one process (like the PD patch).

    Ticks go to every --peer; ticks arriving on --listen (from anyone, yourself included) are
    played. With --count or --duration it stops shortly after the last tick's timetag. With
    --sync, received timetags are translated from the sender's clock, as listen --sync does.
    """
    total = _tick_count(count, duration, bpm)
    _check_sync(sync, sync_peer)
    paths = _sound_paths(sound, accent_sound)
    clock = app.clock
    given, peers = peers, resolve_peers(peers)
    sync_peer = resolve_peer(sync_peer)
    with (
        running(interrupted_exit=total is not None),
        hangup_stops(),
        _log_file(log_path) as log,
        advertising(app, advertise, interface, role="metronome", allow=allow) as advertised,
        contextlib.ExitStack() as follow,
    ):
        endpoint = open_endpoint(
            listen,
            peers,
            allow=allow,
            clock=clock,
            on_warning=app.warn,
            multicast_interface=iface,
        )
        follow.enter_context(following(app, given, peers, endpoint.set_peers))
        session: _Session | None = None
        sender: TickSender | None = None
        follower: ClockFollower | None = None
        try:
            session = _Session(
                app,
                audio_choice,
                paths,
                beats_per_bar,
                log,
                None,
                audio.PlayerOptions(device=device, latency_compensation=latency_compensation),
            )
            app.note(f"listening on {endpoint.local_address}")
            clocks = PeerClocks(clock, endpoint, peers, filter_size=_AUTO_PINGS)
            endpoint.add_service(PONG, clocks.service)
            handler: Callable[[Received], None] = session.listener.on_message
            follower = _follower(app, endpoint, sync, sync_peer)
            if follower is not None:
                session.follower = follower
                handler = follower.wrap(handler)
                endpoint.add_service(PONG, _pong_router(follower, clocks))
            endpoint.start(handler)
            advertised.publish(endpoint.local_address)
            if follower is not None:
                follower.start()
            if offset == AUTO:
                offset = _auto_offset(app, clocks)
            assert isinstance(offset, float)
            app.note(_sending_note(peers, bpm, beats_per_bar, offset))
            # One timer thread for both halves: the sender's ticks are items on the listener's
            # scheduler.
            sender = TickSender(
                endpoint.send_bytes,
                session.scheduler,
                bpm=bpm,
                beats_per_bar=beats_per_bar,
                offset=offset,
            )
            session.on_failure.append(sender.stop)
            sender.start(total)
            wait(sender.done, clock, None)
            wait(session.done, clock, offset + _GRACE)
        finally:
            if sender is not None:
                sender.stop()
            if follower is not None:
                follower.close()
                app.note(follower.describe())
            if session is not None:
                session.close(endpoint)
            else:
                endpoint.close()
