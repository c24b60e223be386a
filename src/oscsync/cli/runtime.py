"""What every command shares at run time: the clock, notices on stderr, and a clean stop.

A command runs its work inside :func:`running`, which turns SIGTERM into the same clean stop as
Ctrl-C (summary printed, sockets closed, exit code 0) and turns socket set-up failures into a
one-line ``Error:`` with exit code 1 instead of a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

import click

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
        click.echo(click.style("warning: ", fg="yellow") + text, err=True)


class Stop(Exception):
    """Raised in the main thread by SIGTERM, handled like Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Run a command body: Ctrl-C and SIGTERM end it cleanly, socket errors become one line."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield
    except (KeyboardInterrupt, Stop):
        pass
    except TransportError as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
