"""Printing lines for a person who may be typing: incoming text goes above the line being edited.

A chat reads what the user types with :func:`input` (GNU readline on a terminal: history, arrow
keys) while messages arrive on the receive thread. Writing them straight to the terminal would
splice them into the half-typed line. :class:`Console` instead

* queues each line and wakes the **main thread** with a signal (``SIGUSR1``, sent with
  ``pthread_kill``): Python's readline loop is interrupted between two keystrokes, runs the
  handler, and carries on reading, so readline's state is only ever touched by one thread;
* in the handler, hides the prompt and the partial input, prints the lines, then restores both
  with the cursor where it was (GNU readline's ``rl_save_prompt``/``rl_replace_line``/
  ``rl_redisplay``, reached through ctypes because Python's ``readline`` module does not expose
  them; without them, e.g. libedit, it clears the input rows and rewrites prompt + buffer).

When stdin or stdout is not a terminal there is no prompt and lines are simply written (under a
lock, so lines from two threads never interleave).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import queue
import shutil
import signal
import sys
import threading
from types import FrameType
from typing import Any, TextIO

from oscsync import threads

_WAKE_SIGNAL = getattr(signal, "SIGUSR1", None)
_RESIGNAL_INTERVAL = 0.02
_QUEUE_LIMIT = 10_000
"""Lines waiting for the main thread; beyond this the oldest are dropped (and counted)."""


class _GnuReadline:
    """The few GNU readline calls that redraw the input line; None if not GNU readline."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.point = ctypes.c_int.in_dll(lib, "rl_point")
        lib.rl_replace_line.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.rl_replace_line.restype = None

    @classmethod
    def find(cls) -> _GnuReadline | None:
        try:
            import readline

            name = ctypes.util.find_library("readline")
            if name is None or "libedit" in (readline.__doc__ or ""):
                return None
            lib = ctypes.CDLL(name)
            # Python names its readline instance "python": this proves the library we loaded
            # is the one the readline module uses, not a second copy.
            if ctypes.c_char_p.in_dll(lib, "rl_readline_name").value != b"python":
                return None
            return cls(lib)
        except (ImportError, OSError, ValueError, AttributeError):
            return None

    def print_above(self, out: TextIO, text: str, buffer: str) -> None:
        point = self.point.value
        self.lib.rl_save_prompt()
        self.lib.rl_replace_line(b"", 0)
        self.lib.rl_redisplay()  # the row now shows nothing: no prompt, no input
        out.write("\r" + text + "\n")
        out.flush()
        self.lib.rl_restore_prompt()
        self.lib.rl_replace_line(buffer.encode("utf-8", "surrogateescape"), 0)
        self.point.value = point
        self.lib.rl_redisplay()


class _PipedLines:
    """Lines of a piped stdin, read on a thread so the main thread never blocks in a read.

    A stop signal must reach the main thread wherever it waits: a blocking read on a pipe is not
    interrupted on Windows (Ctrl-C runs its handler on another thread), nor on a POSIX system
    without ``pthread_sigmask`` when the signal lands on another thread. Waiting on a queue in
    short slices is interrupted everywhere (issue #21).
    """

    _SLICE = 0.25
    _AHEAD = 256  # lines read ahead at most; the reader then waits (bounded memory)

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: queue.Queue[str] = queue.Queue(self._AHEAD)
        threads.start(threads.daemon_thread(self._read, name="oscsync-stdin"))

    def _read(self) -> None:
        try:
            for line in iter(self._stream.readline, ""):
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put("")  # end of input

    def next_line(self) -> str:
        """The next line with its newline, or "" at end of input."""
        while True:
            try:
                return self._lines.get(timeout=self._SLICE)
            except queue.Empty:
                continue


class Console:
    """Writes lines to ``out``; on a terminal, reads lines under a prompt that output respects."""

    def __init__(self, out: TextIO, prompt: str = "> ", interactive: bool = False) -> None:
        self.out = out
        self.prompt = prompt
        self.interactive = interactive
        self.dropped = 0
        self._lock = threading.Lock()
        self._pending: collections.deque[str] = collections.deque()
        self._reading = False
        self._readline: _GnuReadline | None = None
        self._previous_handler: Any = None
        self._main = threading.main_thread()
        self._use_signal = (
            interactive
            and _WAKE_SIGNAL is not None
            and hasattr(signal, "pthread_kill")
            and threading.current_thread() is self._main
        )
        if interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (input() gains line editing and history)
            self._readline = _GnuReadline.find()
        self._wanted = threading.Event()
        self._closed = False
        self._piped: _PipedLines | None = None
        if self._use_signal:
            assert _WAKE_SIGNAL is not None
            self._previous_handler = signal.signal(_WAKE_SIGNAL, self._on_wake)
            threads.start(threads.daemon_thread(self._waker, name="oscsync-console"))

    def print(self, text: str) -> None:
        """Show one line (thread-safe); on a terminal it appears above the prompt."""
        if not self._use_signal:
            with self._lock:
                if self.interactive and self._reading:
                    self._print_above_by_hand([text])
                else:
                    self.out.write(text + "\n")
                    self.out.flush()
            return
        with self._lock:
            if len(self._pending) >= _QUEUE_LIMIT:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(text)
        if threading.current_thread() is self._main:
            self._flush_pending()
        else:
            self._wanted.set()

    def _waker(self) -> None:
        # A signal only interrupts readline while it waits in select(); one that lands while it
        # is handling a keystroke is noticed at the next interruption. So keep signalling, every
        # few milliseconds, until the main thread has printed what is pending.
        assert _WAKE_SIGNAL is not None
        while not self._closed:
            self._wanted.wait()
            self._wanted.clear()
            while self._pending and not self._closed:
                if self._reading:
                    with contextlib.suppress(ProcessLookupError, OSError):
                        signal.pthread_kill(self._main.ident or 0, _WAKE_SIGNAL)
                self._wanted.wait(_RESIGNAL_INTERVAL)

    def read_line(self) -> str | None:
        """The next line typed (without its newline), or None at end of input."""
        if not self.interactive:
            if self._piped is None:
                self._piped = _PipedLines(sys.stdin)
            line = self._piped.next_line()
            return line.rstrip("\r\n") if line else None
        self._flush_pending()
        self._reading = True
        try:
            return input(self.prompt)
        except EOFError:
            self.out.write("\n")  # leave the terminal on a fresh line after ^D
            return None
        except BaseException:
            # ^C or SIGTERM (KeyboardInterrupt, or the CLI's own stop exception): the caller
            # handles it; leave the terminal on a fresh line for what it prints.
            self.out.write("\n")
            self.out.flush()
            raise
        finally:
            self._reading = False

    def close(self) -> None:
        """Print what is still queued and give the wake-up signal back."""
        if self._use_signal:
            assert _WAKE_SIGNAL is not None
            self._closed = True
            self._wanted.set()
            signal.signal(_WAKE_SIGNAL, self._previous_handler or signal.SIG_DFL)
            self._use_signal = False
            self._reading = False
            self._flush_pending()
        self.out.flush()

    # -- main thread only ------------------------------------------------------------------

    def _on_wake(self, signum: int, frame: FrameType | None) -> None:
        # Only while input() waits: then this runs between two keystrokes. Otherwise the main
        # thread may be inside print() (holding the lock) and flushes at the next read_line().
        if self._reading:
            self._flush_pending()

    def _flush_pending(self) -> None:
        with self._lock:
            lines = list(self._pending)
            self._pending.clear()
        if not lines:
            return
        if not self._reading:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()
            return
        if self._readline is not None:
            import readline

            self._readline.print_above(self.out, "\n".join(lines), readline.get_line_buffer())
        else:
            self._print_above_by_hand(lines)

    def _print_above_by_hand(self, lines: list[str]) -> None:
        try:
            import readline

            buffer = readline.get_line_buffer()
        except ImportError:
            buffer = ""
        # Go up to the first row of prompt + input (assuming the cursor is on its last row),
        # clear to the end of the screen, print, then draw prompt + input again.
        width = max(1, shutil.get_terminal_size().columns)
        rows_above = (len(self.prompt) + len(buffer)) // width
        up = f"\x1b[{rows_above}A" if rows_above else ""
        self.out.write("\r" + up + "\x1b[J" + "".join(line + "\n" for line in lines))
        self.out.write(self.prompt + buffer)
        self.out.flush()
