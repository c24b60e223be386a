"""What every command shares at run time: the clock, notices on stderr, and a clean stop.

A command runs its work inside :func:`running`, which turns SIGTERM into the same clean stop as
Ctrl-C (summary printed, sockets closed, exit code 0) and turns socket set-up failures into a
one-line ``Error:`` with exit code 1 instead of a traceback.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

import click

from oscsync import threads
from oscsync.clock import Clock, SkewedClock, SystemClock
from oscsync.net.udp import TransportError
from oscsync.osc.auth import AuthError, PacketAuth, load_key
from oscsync.realtime import Mode, Realtime, RealtimeRefused
from oscsync.terminal import display
from oscsync.terminal.liveline import LiveLine
from oscsync.terminal.wording import fit, terminal_width
from oscsync.threads import STOP_SIGNALS

if TYPE_CHECKING:
    from oscsync.apps.receiving import SessionSetup
    from oscsync.net.core import Network
    from oscsync.net.framing import Framing

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """The group's shared state (``ctx.obj``): one clock for the whole process, and verbosity."""

    clock: Clock
    quiet: bool = False
    live: LiveLine | None = None
    """The live status line on stdout, if a command keeps one: notices and warnings go above it."""
    auth: PacketAuth | None = None
    """The shared key's signer and checker (``--key-file``, ``OSCSYNC_KEY``), or None; set by
    :meth:`load_key`."""
    key_source: tuple[Path | None, Mapping[str, str]] | None = None
    """Where :meth:`load_key` reads the key: ``--key-file`` and the environment (None: no key)."""
    realtime: Realtime | None = None
    """``--realtime`` (None: a command invoked without the group, as tests do: nothing asked)."""

    @classmethod
    def create(
        cls,
        *,
        quiet: bool = False,
        clock_skew: float = 0.0,
        clock_drift_ppm: float = 0.0,
        base_clock: Clock | None = None,
        key_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        realtime: Realtime | str = "off",
    ) -> AppContext:
        """The context for one run; ``base_clock`` (a test's FakeClock) replaces the system's,
        ``realtime`` is ``--realtime`` (or a test's policy with a fake backend). The key
        (``key_file``, else ``OSCSYNC_KEY`` in ``environ``) is read later, by :meth:`load_key`."""
        clock: Clock = base_clock if base_clock is not None else SystemClock()
        if clock_skew or clock_drift_ppm:
            clock = SkewedClock(clock, skew=clock_skew, drift_ppm=clock_drift_ppm)
        policy = realtime if isinstance(realtime, Realtime) else Realtime(cast(Mode, realtime))
        source = None if key_file is None and environ is None else (key_file, environ or {})
        return cls(clock=clock, quiet=quiet, key_source=source, realtime=policy)

    def load_key(self) -> None:
        """Read the shared key, once: one that cannot be used is one line, exit 2."""
        source, self.key_source = self.key_source, None
        if source is None:
            return
        try:
            key, warning = load_key(*source)
        except AuthError as exc:
            # The root's context: its usage line is the one that shows --key-file.
            context = click.get_current_context(silent=True)
            root = None if context is None else context.find_root()
            raise click.BadParameter(str(exc), root, param_hint="'--key-file'") from None
        self.auth = None if key is None else PacketAuth(key)
        if warning is not None:
            self.warn(warning)

    def setup(
        self,
        allow: Sequence[Network] = (),
        iface: str | None = None,
        framing: Framing = "slip",
        *,
        warn: Callable[[str], None] | None = None,
        clock: Clock | None = None,
    ) -> SessionSetup:
        """What every session takes from the command line and this context (its key too)."""
        from oscsync.apps.receiving import SessionSetup  # the sessions' stack: not for --help

        return SessionSetup(
            self.clock if clock is None else clock,
            self.note,
            self.warn if warn is None else warn,
            allow,
            iface,
            framing,
            auth=self.auth,
        )

    def keep_time(self) -> None:
        """A command that keeps time starts here: ask for real-time priority (``--realtime``),
        say once whether it was granted, and let the timing threads ask on themselves until the
        command ends. ``--realtime on`` refused: one line saying how to get it, exit 1."""
        policy = self.realtime
        if policy is None or policy.outcome is not None or policy.mode == "off":
            return
        try:
            policy.probe()
        except RealtimeRefused as exc:
            raise click.ClickException(str(exc)) from None
        self.note(policy.notice())
        policy.install()
        context = click.get_current_context(silent=True)
        if context is not None:
            context.find_root().call_on_close(policy.uninstall)

    def realtime_text(self) -> str:
        """For a summary line: ``realtime SCHED_FIFO 6`` / ``refused`` / ``off``."""
        return "realtime off" if self.realtime is None else self.realtime.describe()

    def realtime_json(self) -> dict[str, Any]:
        """For JSON output (see :meth:`oscsync.realtime.Realtime.to_json`)."""
        return Realtime("off").to_json() if self.realtime is None else self.realtime.to_json()

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
        text = fit(text, terminal_width(sys.stderr))  # at word boundaries on a terminal
        if not color_wanted():
            # NO_COLOR from every thread: the group's ctx.color=False reaches only the main
            # thread's click context, and warnings also come from receive and timer threads.
            text = click.unstyle(text)
        # A warning from a receive thread must not be spliced into the live line (issue #13).
        if self.live is not None and self.live.enabled:
            self.live.above(click.unstyle(text) if not sys.stderr.isatty() else text, sys.stderr)
        else:
            click.echo(text, err=True)


def pass_app(command: F) -> F:
    """``click.pass_obj`` for a command that runs: it reads the shared key first. Not earlier,
    in the group: the group's callback runs before click parses ``COMMAND --help``, and --help
    must work with a missing or bad key."""

    @click.pass_obj
    @functools.wraps(command)
    def with_key(app: AppContext, *args: Any, **kwargs: Any) -> Any:
        app.load_key()
        return command(app, *args, **kwargs)

    return cast(F, with_key)


class Stop(Exception):
    """Raised in the main thread by Ctrl-C or SIGTERM; :func:`running` makes it a clean exit."""


class StopInEventLoop(Stop, KeyboardInterrupt):
    """A :class:`Stop` raised while an asyncio loop runs (chat's prompt_toolkit prompt).

    asyncio hands an Exception raised in one of its callbacks to the loop's exception handler
    (prompt_toolkit prints it and reads on); only KeyboardInterrupt and SystemExit get through,
    and the prompt then restores the terminal on its way out.
    """


_THREADING_FILE = threading.__file__


class _StopCourier:
    """Hands a stop that landed inside Thread.start/join back to the main thread, once outside.

    Re-raising from the handler itself cannot work (Python checks for signals right after the
    call that re-trips, so the handler recurses), and SIGALRM/setitimer, which did this before,
    do not exist on Windows (issue #21). So the handler writes one byte to a socket pair
    (``send`` on a non-blocking socket takes no lock a signal handler could deadlock on); this
    thread then watches the main thread's frames until it has left start/join (milliseconds; a
    join gives up after its timeout) and delivers the signal again: to the main thread itself
    where ``pthread_kill`` exists, so that a blocking read (piped chat) is interrupted, else with
    ``interrupt_main``.
    """

    _WATCH_INTERVAL = 0.001

    def __init__(self) -> None:
        self.stopping = False
        """Set when Stop has been raised: a deferred signal is not delivered again."""
        self._closed = False
        self._lock = threading.Lock()
        self._inbox, self._outbox = socket.socketpair()
        self._outbox.setblocking(False)
        threads.start(threads.daemon_thread(self._run, name="oscsync-stop"))

    def defer(self, signum: int) -> None:
        with contextlib.suppress(OSError):  # full (a byte is already waiting) or closed
            self._outbox.send(bytes([signum]))

    def _run(self) -> None:
        main = threading.main_thread().ident or 0
        pause = threading.Event()
        with self._inbox:
            while data := self._inbox.recv(64):
                while not self._closed and _stop_must_wait(sys._current_frames().get(main)):
                    pause.wait(self._WATCH_INTERVAL)
                with self._lock:  # close() waits for this: no signal after it returns
                    if not self._closed and not self.stopping:
                        _deliver_to_main(main, signal.Signals(data[-1]))

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._outbox.close()  # the thread sees end of stream and ends


def _deliver_to_main(main: int, signum: signal.Signals) -> None:
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(main, signum)
    else:
        _thread.interrupt_main(signum)


_courier: _StopCourier | None = None


def _stop_must_wait(frame: FrameType | None) -> bool:
    # Inside Thread.start/join (see _on_stop_signal), or inside the unraisable hook, where a
    # Stop raised would be swallowed again. Only these: an Event.wait (how commands idle) must
    # stay interruptible.
    while frame is not None:
        code = frame.f_code
        if code in _HOOK_CODES or (
            code.co_filename == _THREADING_FILE and code.co_name in ("start", "join")
        ):
            return True
        frame = frame.f_back
    return False


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    # An exception raised while the main thread is inside Thread.start() or join() leaves
    # threading's bookkeeping half-updated (the next join raises "cannot join thread before it
    # is started"): seen when SIGTERM came right as a listener started. A stop that lands there
    # is deferred (see _StopCourier) and raised outside.
    courier = _courier
    if courier is None:
        return  # running() is finishing: the command ends anyway
    if _stop_must_wait(frame):
        courier.defer(signum)
        return
    courier.stopping = True
    name = signal.Signals(signum).name
    # A stop that lands while asyncio is being imported (advertising imports it as a listener
    # starts) finds it half made, without _get_running_loop yet: no loop runs then.
    running_loop = getattr(sys.modules.get("asyncio"), "_get_running_loop", None)
    if running_loop is not None and running_loop() is not None:
        raise StopInEventLoop(name)
    raise Stop(name)


def _stop_swallowed(unraisable: Any) -> bool:
    """Deliver again a Stop that Python swallowed; True if it was one.

    A signal handled while a finalizer or weakref callback runs (``__del__``,
    ``WeakSet._remove`` under garbage collection) raises Stop there, and Python prints it as
    "Exception ignored in ..." and carries on: the command would run on, its stop lost (seen once
    in the suite: ``demo --duration 1.5`` under SIGTERM). The courier delivers it again.
    """
    courier = _courier
    if courier is None or not isinstance(unraisable.exc_value, Stop):
        return False
    courier.stopping = False
    courier.defer(signal.Signals.__members__.get(str(unraisable.exc_value), signal.SIGINT))
    return True


_previous_unraisable_hook: Callable[[Any], object] = sys.__unraisablehook__


def _unraisable_hook(unraisable: Any) -> None:
    """``sys.unraisablehook`` inside :func:`running`: a swallowed Stop goes back to the courier
    (which delivers it once the main thread has left this hook), anything else to the hook
    that was there before."""
    if not _stop_swallowed(unraisable):
        _previous_unraisable_hook(unraisable)


_HOOK_CODES = frozenset({_unraisable_hook.__code__, _stop_swallowed.__code__})


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

    The stop signals are those the platform has (:data:`oscsync.threads.STOP_SIGNALS`): SIGINT
    everywhere, SIGTERM and SIGHUP (terminal closed) on POSIX, Ctrl-Break on Windows.
    """
    global _courier, _previous_unraisable_hook
    run = Run()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        _courier = _StopCourier()
        _previous_unraisable_hook, sys.unraisablehook = sys.unraisablehook, _unraisable_hook
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, _on_stop_signal)
    try:
        yield run
    except Stop as stop:  # first: StopInEventLoop is a KeyboardInterrupt too
        run.stopped_by = signal.Signals.__members__.get(str(stop), signal.SIGINT)
    except KeyboardInterrupt:
        run.stopped_by = signal.SIGINT
    except TransportError as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None
    finally:
        courier, _courier = _courier, None
        if courier is not None:
            courier.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if sys.unraisablehook is _unraisable_hook:
            sys.unraisablehook = _previous_unraisable_hook
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


def color_wanted(stream: TextIO | None = None) -> bool:
    """Whether to style text for ``stream`` (default: none in particular, only NO_COLOR).

    Never when ``NO_COLOR`` is set to anything but "" (no-color.org); otherwise only on a
    terminal. click turns the styles into console calls on Windows' ``cmd.exe`` (colorama) and
    Windows Terminal understands them as they are.
    """
    if os.environ.get("NO_COLOR"):
        return False
    return stream is None or stream.isatty()
