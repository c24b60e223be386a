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
from oscsync.transport import TransportError


@dataclass
class AppContext:
    """The group's shared state (``ctx.obj``): one clock for the whole process, and verbosity."""

    clock: Clock
    quiet: bool = False

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
            click.echo(text, err=True)

    def warn(self, text: str) -> None:
        """A warning line on stderr (kept even with -q)."""
        # Warnings quote the network (addresses, names): never let one reach the terminal raw.
        click.echo(click.style("warning: ", fg="yellow") + display.printable(text), err=True)


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


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Run a command body: Ctrl-C and SIGTERM end it cleanly, socket errors become one line."""
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        _pending_stop.clear()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            previous[signum] = signal.signal(signum, _on_stop_signal)
    try:
        yield
    except (KeyboardInterrupt, Stop):
        pass
    except TransportError as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None
    finally:
        if previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)


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
