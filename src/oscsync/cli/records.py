"""Running a session from a command: its options, its records on stdout, its summary.

``metronome`` and ``sequence`` build a session (``oscsync.apps.sessions``) and hand it to
:func:`listening` (then ``listen_until_done`` or ``pair_until_done``) or :func:`send_until_done`,
which wait for it and print; nothing here wires endpoints or schedulers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import click

from oscsync import audio
from oscsync.apps.metronome import TickSender
from oscsync.apps.receiving import SessionSetup
from oscsync.apps.sessions import AUTO, GRACE, ListenSession, SendSession, SessionError
from oscsync.apps.ticklog import LogWriter
from oscsync.cli.params import (
    DurationType,
    ParsedType,
    allow_option,
    framing_option,
    iface_option,
    listen_option,
    log_option,
    options,
    overwrite_option,
    peers_option,
    refuse_existing,
)
from oscsync.cli.peers import Advertising, following
from oscsync.cli.runtime import AppContext, leave_without_stdout, wait
from oscsync.cli.syncing import Syncing
from oscsync.net.core import Network
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort
from oscsync.sync import follow
from oscsync.terminal.wording import plural

R = TypeVar("R")
S = TypeVar("S", bound=ListenSession[Any])
F = TypeVar("F", bound=Callable[..., Any])

OFFSET_MAXIMUM = 60.0
"""Forward offsets beyond the scheduler's 60 s horizon would be refused by every listener."""


class RecordLines(Generic[R]):
    """Shows each record of ``session``: its status on the live line (a terminal), or
    ``line(record)`` on stdout (piped), or nothing (``-q``).

    When stdout goes away (``listen | head -3``) the session stops like a Ctrl-C, quietly
    (issue #13: it ran on, warning about BrokenPipeError on every tick).
    """

    def __init__(self, app: AppContext, session: ListenSession[R], line: Callable[[R], str]):
        self.app = app
        self.session = session
        self.line = line
        self.live = app.live_line()  # fits the terminal, warnings above it (issue #13)
        self.output_closed = False
        session.show = self

    def __call__(self, record: R) -> None:
        if self.live.enabled:
            self.live.show(self.session.status())
        elif not self.output_closed:  # -q: no live line, data lines still (issue #12 item 6)
            try:
                sys.stdout.write(self.line(record) + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
                self.output_closed = True
                self.session.stop()

    def finish(self) -> None:
        """Close the session, end the live line and print its summary; exit 1 on a player
        failure, quietly when stdout went away."""
        self.session.close()
        self.live.end()
        self.app.live = None
        if not self.output_closed:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                self.output_closed = True
        self.app.note(f"{self.session.summary()}  {self.app.realtime_text()}")
        if (hint := self.session.silence_hint()) is not None:
            self.app.warn(hint)
        if self.output_closed:
            leave_without_stdout(stopped_cleanly=True)
        if self.session.failure is not None:
            raise click.ClickException(f"audio: {self.session.failure}")


@contextlib.contextmanager
def session_errors() -> Iterator[None]:
    """Opening or running a session: a bad ``--device`` is a bad option (exit 2), another audio
    problem or a :class:`SessionError` one ``Error:`` line (exit 1), never a traceback."""
    try:
        yield
    except audio.DeviceNotFound as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None
    except (audio.AudioError, SessionError) as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def log_file(path: Path | None, overwrite: bool = False) -> Iterator[LogWriter | None]:
    """The --log file (an existing one only with ``--overwrite``); a write that fails while
    running ends the command with one ``Error:`` line (exit 1) once the summary is printed,
    never a traceback (issue 20, item 11)."""
    if path is None:
        yield None
        return
    refuse_existing(path, overwrite, "'--log'")
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


def setup(
    app: AppContext, allow: Sequence[Network], iface: str | None, framing: Framing = "slip"
) -> SessionSetup:
    """What every session takes from the command line and the app context."""
    return app.setup(allow, iface, framing)


class OffsetType(DurationType):
    """A forward offset in seconds, or ``auto`` (measured with clock pings: see ``send``)."""

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SECONDS|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return AUTO
        return super().convert(value, param, ctx)


OFFSET = OffsetType(minimum=0.0, maximum=OFFSET_MAXIMUM)
"""Forward offsets beyond the scheduler's 60 s horizon would be refused by every listener."""


class AudioType(ParsedType):
    """One of the players in ``oscsync.audio.registry`` (``auto``, ... ``wav:FILE``)."""

    name = "audio"
    parsed = (audio.AudioChoice,)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return audio.registry.audio_metavar()

    def parse(self, text: str) -> Any:
        return audio.parse_audio_choice(text)

    def errors(self) -> tuple[type[Exception], ...]:
        return (audio.AudioError,)


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


class LatencyCompensationType(ParsedType):
    """``auto`` (None), ``off`` (0) or milliseconds (returned in seconds)."""

    name = "latency"
    metavar = "off|auto|MS"
    parsed = (type(None), float)

    def parse(self, text: str) -> Any:
        word = text.strip().lower()
        if word == "auto":
            return None
        if word == "off":
            return 0.0
        try:
            ms = float(word.removesuffix("ms"))
        except ValueError:
            raise ValueError(f"{text!r} is not off, auto or a number of milliseconds") from None
        if not 0 <= ms <= 1000:  # NaN fails this too
            raise ValueError(f"{text!r}: give 0 to 1000 ms")
        return ms / 1000


def listen_options(*sounds: Callable[[F], F], log_help: str) -> Callable[[F], F]:
    """The options :class:`Listening` collects but ``--advertise`` and ``--sync``, with the
    command's own sound options (``sounds``) after ``--latency-compensation``."""
    return options(
        listen_option(),
        audio_option(),
        *sounds,
        log_option(log_help),
        overwrite_option("the --log file and a wav: file"),
        allow_option(),
    )


def send_options(
    *grid: Callable[[F], F],
    peers_help: str,
    offset_help: str,
    limit: Callable[[F], F],
    duration_help: str,
) -> Callable[[F], F]:
    """The options :class:`Sending` collects, with the command's own: its grid options
    (``grid``) after ``--peer``, and ``limit`` (its ``limit_option``) after ``--offset``."""
    return options(
        peers_option(peers_help),
        *grid,
        click.option("--offset", type=OFFSET, default=0.0, show_default=True, help=offset_help),
        limit,
        click.option("--duration", "-d", type=DurationType(minimum=0.0), help=duration_help),
        iface_option(),
        framing_option(),
    )


@dataclass(frozen=True)
class Sending:
    """The options every sending command here shares (metronome and sequence ``send`` and
    ``pair``), handed to it as one value by :func:`oscsync.cli.params.collect`; each command
    adds its own grid (bpm, ...) in a subclass."""

    peers: tuple[HostPort, ...]
    offset: float | str
    duration: float | None
    iface: str | None
    framing: Framing

    limit_option: ClassVar[str]
    """The option that says how many to send (``--count``, ``--bars``)."""

    def given_total(self) -> int | None:
        """How many to send as ``limit_option`` says (None: not given)."""
        raise NotImplementedError

    def total_in(self, duration: float) -> int:
        """How many are due within ``duration`` seconds."""
        raise NotImplementedError

    def total(self) -> int | None:
        """How many to send: ``limit_option``'s count, or as many as are due within
        ``--duration``; None: until stopped. Both is a usage error."""
        given = self.given_total()
        if given is not None and self.duration is not None:
            raise click.UsageError(f"use {self.limit_option} or --duration, not both")
        if self.duration is not None:
            return self.total_in(self.duration)
        return given


@dataclass(frozen=True)
class Listening:
    """The options every listening command here shares (metronome and sequence ``listen`` and
    ``pair``), handed to it as one value by :func:`oscsync.cli.params.collect`."""

    listen: HostPort
    audio_choice: audio.AudioChoice
    device: str | None
    latency_compensation: float | None
    log_path: Path | None
    allow: tuple[Network, ...]
    advertise: str | None
    interface: str
    sync: str | None = None
    sync_peer: HostPort | None = None
    sync_peer_given: object = None
    """``--sync-peer`` as given (an ``@NAME`` stays one): :meth:`checked` resolves
    :attr:`sync_peer`, and a run follows the name when it re-registers."""
    sync_start_interval: float = follow.ACQUIRE_INTERVAL
    sync_interval: float = follow.INTERVAL
    overwrite: bool = False

    def syncing(self) -> Syncing:
        """The ``--sync`` options among these."""
        return Syncing(
            self.sync,
            self.sync_peer,
            self.sync_start_interval,
            self.sync_interval,
            self.sync_peer_given,
        )

    def checked(self) -> Listening:
        """These options with ``--sync-peer @NAME`` resolved (:meth:`Syncing.checked`)."""
        syncing = self.syncing().checked()
        return dataclasses.replace(
            self, sync_peer=syncing.sync_peer, sync_peer_given=syncing.sync_peer_given
        )

    @contextlib.contextmanager
    def following_sync_peer(self, app: AppContext, session: ListenSession[Any]) -> Iterator[None]:
        """While the block runs, a ``--sync-peer @NAME`` that re-registers elsewhere is
        followed (:meth:`Syncing.following`)."""
        with self.syncing().following(app, session.move_sync_peer):
            yield


@dataclass
class ListenRun:
    """A listening command while it runs (see :func:`listening`): it opens the session on
    ``--listen`` and shows its records until it is done. In ``pair`` it has a sending half too
    (``sending``, to ``peers``: ``sending.peers`` resolved)."""

    app: AppContext
    options: Listening
    log: LogWriter | None
    advertised: Advertising
    sending: Sending | None = None
    peers: Sequence[HostPort] = ()

    def session(self, kind: Callable[..., S], *, iface: str | None = None, **specific: Any) -> S:
        """A ``kind`` session (:class:`ListenSession`) with these options; ``specific`` are
        the ones only ``kind`` takes (sounds, ``limit``, ...). ``iface`` is ``listen``'s; a
        pair's sending half brings its own, and its ``--framing``."""
        options, sending = self.options, self.sending
        if sending is not None:
            session_setup = setup(self.app, options.allow, sending.iface, sending.framing)
        else:
            session_setup = setup(self.app, options.allow, iface)
        return kind(
            options.listen,
            self.peers,
            session_setup,
            log=self.log,
            audio_choice=options.audio_choice,
            audio_options=audio.PlayerOptions(
                device=options.device, latency_compensation=options.latency_compensation
            ),
            **specific,
        )

    def listen_until_done(
        self,
        session: ListenSession[R],
        line: Callable[[R], str],
        *,
        duration: float | None,
        explain_sync: bool = False,
    ) -> None:
        """``listen``: start ``session``, print its records until it is done, ``duration``
        passes or Ctrl-C, then its summary."""
        sync, sync_peer = self.options.sync, self.options.sync_peer
        lines = RecordLines(self.app, session, line)
        try:
            session.start(
                sync,
                sync_peer,
                sync_start_interval=self.options.sync_start_interval,
                sync_interval=self.options.sync_interval,
            )
            with self.options.following_sync_peer(self.app, session):
                self.advertised.publish(session.endpoint.local_address, session.endpoint.registry)
                wait(session.done, self.app.clock, duration)
        finally:
            session.close_follower(sync_requested=explain_sync and (sync or sync_peer) is not None)
            lines.finish()

    def pair_until_done(
        self,
        session: ListenSession[R],
        line: Callable[[R], str],
        *,
        total: int | None,
        sender: Callable[[float], TickSender],
        sending_note: Callable[[float], str],
    ) -> None:
        """``pair``: ``listen_until_done`` with a sender on the same endpoint and scheduler,
        sending to :attr:`peers` (an ``@NAME`` that moves is followed); it stops shortly after
        the last item's timetag (``total``)."""
        app, sending, peers = self.app, self.sending, self.peers
        assert sending is not None, "a pair run has a sending half"
        with following(app, sending.peers, peers, session.endpoint.set_peers):
            lines = RecordLines(app, session, line)
            started: TickSender | None = None
            try:
                session.start(
                    self.options.sync,
                    self.options.sync_peer,
                    pings_to=peers,
                    sync_start_interval=self.options.sync_start_interval,
                    sync_interval=self.options.sync_interval,
                )
                with self.options.following_sync_peer(app, session):
                    self.advertised.publish(
                        session.endpoint.local_address, session.endpoint.registry
                    )
                    seconds = session.offset(sending.offset, OFFSET_MAXIMUM)
                    app.note(sending_note(seconds))
                    started = sender(seconds)
                    started.start(total)
                    wait(started.done, app.clock, None)
                    wait(session.done, app.clock, seconds + GRACE)
            finally:
                if started is not None:
                    started.stop()
                session.close_follower()
                lines.finish()
                if started is not None and started.lateness.count:
                    # The sender's own lateness beside what the listener counted (issue 29).
                    app.note(f"sender: {started.lateness_text()}")


@contextlib.contextmanager
def listening(
    app: AppContext,
    options: Listening,
    role: str,
    sending: Sending | None = None,
    peers: Sequence[HostPort] = (),
) -> Iterator[ListenRun]:
    """What a listening command holds while it runs: its ``--log`` file, its ``--advertise``
    announcement (as ``role``), and session errors as one line (:func:`session_errors`).
    ``pair`` gives its ``sending`` options and the ``peers`` they resolved to."""
    app.keep_time()
    refuse_existing(options.audio_choice.path, options.overwrite, "'--audio'")
    with (
        log_file(options.log_path, options.overwrite) as log,
        Advertising(
            app, options.advertise, options.interface, role=role, allow=options.allow
        ) as advertised,
        session_errors(),
    ):
        yield ListenRun(app, options, log, advertised, sending, peers)


@contextlib.contextmanager
def send_session(
    app: AppContext,
    sending: Sending,
    peers: Sequence[HostPort],
    allow: Sequence[Network],
    *,
    room: bool = False,
) -> Iterator[SendSession]:
    """``send``'s session to ``peers`` (``sending.peers`` resolved; an ``@NAME`` that moves is
    followed), with session errors as one line (:func:`session_errors`); ``room``: sync
    messages to every peer (``--room``)."""
    app.keep_time()
    with (
        session_errors(),
        SendSession(peers, setup(app, allow, sending.iface, sending.framing), room=room) as session,
        following(app, sending.peers, peers, session.endpoint.set_peers),
    ):
        yield session


def send_until_done(
    app: AppContext,
    session: SendSession,
    *,
    offset: float | str,
    total: int | None,
    sender: Callable[[float], TickSender],
    sending_note: Callable[[float], str],
    summary: Callable[[TickSender], str],
    progress: str | None = None,
    room: bool = False,
) -> None:
    """``send``: measure the offset if asked, then send until ``total`` items, the sender's
    end or Ctrl-C; ``progress`` (``tick``) counts the items on the live line. ``room``
    (``--room``): the followers' reports on the live line, or piped one JSON line every
    :data:`ROOM_EVERY` seconds, and a summary line."""
    seconds = session.offset(offset, OFFSET_MAXIMUM)
    started = sender(seconds)
    live = app.live_line() if progress is not None or room else None
    try:
        # Inside the try: a stop signal right after this line still prints the summary
        # (tests/test_signals.py waits for this line, then signals).
        app.note(sending_note(seconds))
        on_sent = None
        if live is not None and live.enabled:
            shown = live
            item = str(progress or "item")

            def on_sent(k: int) -> None:
                text = f"sent {plural(started.sent, item)}"
                if started.silent:
                    text += f", silent {started.silent}"
                if room:
                    text += "  " + session.room.summary().line()
                shown.show(text)

        started.start(total, on_sent=on_sent)
        session.scheduler.start()
        if room and not (live is not None and live.enabled):
            while True:
                wait(started.done, app.clock, ROOM_EVERY)
                if started.done.is_set() or not _print_room(app, session):
                    break
        else:
            wait(started.done, app.clock, None)
    finally:
        started.stop()
        session.scheduler.close()
        if live is not None:
            live.end()
            app.live = None
        text = f"{summary(started)}; {app.realtime_text()}"
        refused = session.endpoint.stats.send_errors.get("refused", 0)
        if refused:
            # A stream keeps sending to a closed port (it warned once); its summary says how
            # many were lost, as chat's does (issue 30).
            text += f"; refused {refused} (nothing listened)"
            beacon = session.beacon
            if beacon is not None and beacon.sent:
                # The kernel reports a refusal on the next send to that peer, whatever that
                # carries: the count is of ticks and sync messages together, so say so.
                shipped = plural(started.sent, progress or "step")
                text += f" over {shipped} and {plural(beacon.sent, 'sync message')} sent"
        app.note(text)
        if room:
            app.note(session.room.summary().line())


ROOM_EVERY = 2.0
"""Seconds between the JSON lines of ``send --room`` when stdout is not a terminal."""


def _print_room(app: AppContext, session: SendSession) -> bool:
    """One JSON line of the room; False when stdout went away (``| head``: stop quietly)."""
    shown = session.room.summary().to_json(app.clock.now())
    # What this leader's socket carries, for a workshop leader watching the Wi-Fi's load.
    shown["packets_in"] = session.endpoint.stats.datagrams
    shown["packets_out"] = session.endpoint.stats.sent
    line = json.dumps(shown, separators=(",", ":"))
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        leave_without_stdout(stopped_cleanly=True)
        return False
    return True
