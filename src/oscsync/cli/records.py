"""Printing a listen session's records: the live line on a terminal, one line each when piped."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import click

from oscsync import audio
from oscsync.apps.sessions import ListenSession, SessionError
from oscsync.apps.ticklog import LogWriter
from oscsync.cli.runtime import AppContext, leave_without_stdout

R = TypeVar("R")


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
        elif not self.app.quiet and not self.output_closed:
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
