"""What every command shares at run time: the clock, notices on stderr, and a clean stop.

A command runs its work inside :func:`running`, which turns SIGTERM into the same clean stop as
Ctrl-C (summary printed, sockets closed, exit code 0) and turns socket set-up failures into a
one-line ``Error:`` with exit code 1 instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import click

from oscsync import display
from oscsync.clock import Clock, SkewedClock, SystemClock
from oscsync.liveline import LiveLine
from oscsync.transport import TransportError


@dataclass
class AppContext:
    """The group's shared state (``ctx.obj``): one clock for the whole process, and verbosity."""

    clock: Clock
    quiet: bool = False
    live: LiveLine | None = None
    """The live status line on stdout, if a command keeps one: notices and warnings go above it."""

    @classmethod
    def create(
        cls, *, quiet: bool = False, clock_skew: float = 0.0, clock_drift_ppm: float = 0.0
    ) -> AppContext:
        clock: Clock = SystemClock()
        if clock_skew or clock_drift_ppm:
            clock = SkewedClock(clock, skew=clock_skew, drift_ppm=clock_drift_ppm)
        return cls(clock=clock, quiet=quiet)

    def note(self, text: str) -> None:
        """An informational line on stderr (silenced by -q)."""
        if not self.quiet:
            self._stderr_line(text)

    def warn(self, text: str) -> None:
        """A warning line on stderr (kept even with -q)."""
        # Warnings quote the network (addresses, names): never let one reach the terminal raw.
        self._stderr_line(click.style("warning: ", fg="yellow") + display.printable(text))

    def live_line(self) -> LiveLine:
        """Start the command's live status line (drawn only when stdout is a terminal, not -q)."""
        self.live = LiveLine(sys.stdout, enabled=stdout_is_tty() and not self.quiet)
        return self.live

    def _stderr_line(self, text: str) -> None:
        # A warning from a receive thread must not be spliced into the live line (issue #13).
        if self.live is not None and self.live.enabled:
            self.live.above(click.unstyle(text) if not sys.stderr.isatty() else text, sys.stderr)
        else:
            click.echo(text, err=True)


class Stop(Exception):
    """Raised in the main thread by Ctrl-C or SIGTERM; :func:`running` makes it a clean exit."""


_THREADING_FILE = threading.__file__
_RETRY_SECONDS = 0.005
_pending_stop: list[int] = []


def _inside_thread_start_or_join(frame: FrameType | None) -> bool:
    # Only these two: an Event.wait (how commands idle) must stay interruptible.
    while frame is not None:
        code = frame.f_code
        if code.co_filename == _THREADING_FILE and code.co_name in ("start", "join"):
            return True
        frame = frame.f_back
    return False


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    # An exception raised while the main thread is inside Thread.start() or join() leaves
    # threading's bookkeeping half-updated (the next join raises "cannot join thread before it
    # is started"): seen when SIGTERM came right as a listener started. So a stop that lands
    # there is deferred a few milliseconds (SIGALRM, no thread needed) and raised outside.
    if signum != signal.SIGALRM:
        _pending_stop.append(signum)
    if not _pending_stop:
        return
    if _inside_thread_start_or_join(frame):
        signal.setitimer(signal.ITIMER_REAL, _RETRY_SECONDS)
        return
    raise Stop(signal.Signals(_pending_stop[0]).name)


@dataclass
class Run:
    """What :func:`running` saw: ``stopped_by`` names the stop signal, if one ended the body."""

    stopped_by: signal.Signals | None = None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a run cut short by a signal: 128 + its number (Ctrl-C 130)."""
        return 0 if self.stopped_by is None else 128 + int(self.stopped_by)


@contextlib.contextmanager
def running(*, interrupted_exit: bool = False) -> Iterator[Run]:
    """Run a command body: Ctrl-C and SIGTERM end it cleanly, socket errors become one line.

    Commands that run until stopped (dump, chat, listen) exit 0 on Ctrl-C: stopping is how they
    end. A run with a defined end (send --repeat, metronome send --count) passes
    ``interrupted_exit=True``: cut short, it exits 130 (SIGTERM: 143) after its clean-up has
    printed the partial summary (issue #13), so a script can tell. Commands that print their
    results after the body read the yielded :class:`Run` and exit with ``run.exit_code``.
    """
    run = Run()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        _pending_stop.clear()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            previous[signum] = signal.signal(signum, _on_stop_signal)
    try:
        yield run
    except KeyboardInterrupt:
        run.stopped_by = signal.SIGINT
    except Stop as stop:
        run.stopped_by = signal.Signals.__members__.get(str(stop), signal.SIGINT)
    except TransportError as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None
    finally:
        if previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if interrupted_exit and run.stopped_by is not None:
        raise click.exceptions.Exit(run.exit_code)


def wait(event: threading.Event, clock: Clock, duration: float | None) -> None:
    """Block until ``event`` is set or ``duration`` seconds pass (forever if None).

    Waits in short slices so Ctrl-C is handled promptly on every platform.
    """
    deadline = None if duration is None else clock.monotonic() + duration
    while not event.is_set():
        remaining = 0.25 if deadline is None else min(0.25, deadline - clock.monotonic())
        if remaining <= 0:
            return
        clock.wait(event, remaining)


def leave_without_stdout(*, stopped_cleanly: bool) -> None:
    """End a command whose stdout is gone (``| head``) or blocked (a reader that stopped reading).

    Python flushes stdout at exit: on a closed pipe that prints a BrokenPipeError, on a full one it
    waits forever (seen: a dump killed with SIGTERM sat in a futex wait, because its receive thread
    held the stdout lock inside a blocked write). So stdout is pointed at /dev/null, and if a
    thread is still stuck in such a write, the process ends here without waiting for it.
    """
    sys.stderr.flush()
    if not stopped_cleanly:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
