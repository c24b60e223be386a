"""Running a session from a command: its options, its records on stdout, its summary.

``metronome`` and ``sequence`` build a session (``oscsync.apps.sessions``) and hand it to
:func:`listening` (then ``listen_until_done`` or ``pair_until_done``) or :func:`send_until_done`,
which wait for it and print; nothing here wires endpoints or schedulers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import click

from oscsync import audio
from oscsync.apps.metronome import TickSender
from oscsync.apps.receiving import SessionSetup
from oscsync.apps.sessions import GRACE, ListenSession, SendSession, SessionError
from oscsync.apps.ticklog import LogWriter
from oscsync.cli.peers import Advertising, following, resolve_peer
from oscsync.cli.runtime import AppContext, leave_without_stdout, wait
from oscsync.framing import Framing
from oscsync.hostport import HostPort
from oscsync.transport import Network
from oscsync.wording import plural

R = TypeVar("R")
S = TypeVar("S", bound=ListenSession[Any])

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
        self.app.note(self.session.summary())
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
def log_file(path: Path | None) -> Iterator[LogWriter | None]:
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


def setup(
    app: AppContext, allow: Sequence[Network], iface: str | None, framing: Framing = "slip"
) -> SessionSetup:
    """What every session takes from the command line and the app context."""
    return SessionSetup(app.clock, app.note, app.warn, allow, iface, framing)


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

    def checked(self) -> Listening:
        """These options with ``--sync-peer @NAME`` resolved (when the command starts, never
        while parsing); ``--sync system`` with ``--sync-peer`` is a usage error."""
        if self.sync == "system" and self.sync_peer is not None:
            raise click.UsageError("--sync-peer follows a peer's clock: not with --sync system")
        return dataclasses.replace(self, sync_peer=resolve_peer(self.sync_peer))


class ListenRun:
    """A listening command while it runs (see :func:`listening`): it opens the session on
    ``--listen`` and shows its records until it is done."""

    def __init__(
        self,
        app: AppContext,
        options: Listening,
        log: LogWriter | None,
        advertised: Advertising,
    ) -> None:
        self.app = app
        self.options = options
        self.log = log
        self.advertised = advertised

    def session(
        self,
        kind: Callable[..., S],
        *,
        iface: str | None,
        peers: Sequence[HostPort] = (),
        framing: Framing = "slip",
        **specific: Any,
    ) -> S:
        """A ``kind`` session (:class:`ListenSession`) with these options; ``specific`` are
        the ones only ``kind`` takes (sounds, ``limit``, ...)."""
        options = self.options
        return kind(
            options.listen,
            peers,
            setup(self.app, options.allow, iface, framing),
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
            session.start(sync, sync_peer)
            self.advertised.publish(session.endpoint.local_address)
            wait(session.done, self.app.clock, duration)
        finally:
            session.close_follower(sync_requested=explain_sync and (sync or sync_peer) is not None)
            lines.finish()

    def pair_until_done(
        self,
        session: ListenSession[R],
        line: Callable[[R], str],
        *,
        sending: Sending,
        peers: Sequence[HostPort],
        total: int | None,
        sender: Callable[[float], TickSender],
        sending_note: Callable[[float], str],
    ) -> None:
        """``pair``: ``listen_until_done`` with a sender on the same endpoint and scheduler,
        sending to ``peers`` (``sending.peers`` resolved; an ``@NAME`` that moves is
        followed); it stops shortly after the last item's timetag (``total``)."""
        app = self.app
        with following(app, sending.peers, peers, session.endpoint.set_peers):
            lines = RecordLines(app, session, line)
            started: TickSender | None = None
            try:
                session.start(self.options.sync, self.options.sync_peer, pings_to=peers)
                self.advertised.publish(session.endpoint.local_address)
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


@contextlib.contextmanager
def listening(app: AppContext, options: Listening, role: str) -> Iterator[ListenRun]:
    """What a listening command holds while it runs: its ``--log`` file, its ``--advertise``
    announcement (as ``role``), and session errors as one line (:func:`session_errors`)."""
    with (
        log_file(options.log_path) as log,
        Advertising(
            app, options.advertise, options.interface, role=role, allow=options.allow
        ) as advertised,
        session_errors(),
    ):
        yield ListenRun(app, options, log, advertised)


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
) -> None:
    """``send``: measure the offset if asked, then send until ``total`` items, the sender's
    end or Ctrl-C; ``progress`` (``tick``) counts the items on the live line."""
    seconds = session.offset(offset, OFFSET_MAXIMUM)
    started = sender(seconds)
    live = app.live_line() if progress is not None else None
    try:
        # Inside the try: a stop signal right after this line still prints the summary
        # (tests/test_signals.py waits for this line, then signals).
        app.note(sending_note(seconds))
        on_sent = None
        if live is not None and live.enabled:
            shown = live
            on_sent = lambda k: shown.show(f"sent {plural(k + 1, str(progress))}")  # noqa: E731
        started.start(total, on_sent=on_sent)
        session.scheduler.start()
        wait(started.done, app.clock, None)
    finally:
        started.stop()
        session.scheduler.close()
        if live is not None:
            live.end()
            app.live = None
        app.note(summary(started))
