"""Printing lines for a person who may be typing: incoming text goes above the line being edited.

A chat reads what the user types while messages arrive on the receive thread. Writing them
straight to the terminal would splice them into the half-typed line. On a terminal,
:class:`Console` therefore reads with prompt_toolkit (line editing and history on Linux, macOS
and Windows alike) and keeps its ``patch_stdout`` in force for the whole session, as IPython does:
anything written to ``sys.stdout`` or ``sys.stderr`` from any thread (messages, warnings, click's
notes) is printed above the prompt, which is then drawn again with what was typed so far
(issue #21: the GNU-readline redraw through ctypes this replaces did not exist on macOS's libedit
or on Windows, and needed SIGUSR1).

Ctrl-C and Ctrl-D are keys to prompt_toolkit (the terminal is in raw mode while it reads): Ctrl-C
raises KeyboardInterrupt, which the CLI's ``running()`` turns into a clean stop; Ctrl-D on an
empty line ends the input.

When stdin or stdout is not a terminal there is no prompt: lines are simply written (under a
lock, so lines from two threads never interleave) and stdin is read on a thread
(:class:`_PipedLines`).
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from typing import Any, TextIO

from oscsync import threads


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


_BACKLOG_LIMIT = 1_000
"""Lines waiting for the terminal at most; beyond, lines are dropped and counted (a line is at
most a datagram's worth of escaped text, so this bounds the bytes held too)."""


def _backlog(out: object) -> int:
    # prompt_toolkit's StdoutProxy queues each line for its writer thread; a plain stream has no
    # queue (its writes block instead).
    pending = getattr(out, "_flush_queue", None)
    qsize = getattr(pending, "qsize", None)
    return int(qsize()) if callable(qsize) else 0


class Console:
    """Writes lines to ``out``; on a terminal, reads lines under a prompt that output respects."""

    def __init__(self, out: TextIO, prompt: str = "> ", interactive: bool = False) -> None:
        self.out = out
        self.prompt = prompt
        self.interactive = interactive
        self.dropped = 0
        """Lines not shown because the terminal fell too far behind (the CLI says so at exit)."""
        self._lock = threading.Lock()
        self._piped: _PipedLines | None = None
        self._session: Any = None
        self._patch: contextlib.ExitStack | None = None
        self._prompt_tried = False

    def _start_prompt(self) -> None:
        # At the first read, not before: until then nothing needs redirecting, and an error on
        # the way (port in use) is printed as usual, not through a prompt that never ran.
        self._prompt_tried = True
        try:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.patch_stdout import patch_stdout
        except ImportError:  # a broken install: plain input(), lines may cross what is typed
            return
        self._session = PromptSession()
        self._patch = contextlib.ExitStack()
        # raw: keep the ANSI styles click added (dim "not chat" lines, yellow warnings).
        self._patch.enter_context(patch_stdout(raw=True))

    def print(self, text: str) -> None:
        """Show one line (thread-safe); on a terminal it appears above the prompt."""
        with self._lock:
            # sys.stdout, looked up now: while the prompt runs it is prompt_toolkit's proxy.
            out = sys.stdout if self._patch is not None else self.out
            if _backlog(out) >= _BACKLOG_LIMIT:
                self.dropped += 1  # the terminal is not keeping up (paused with Ctrl-S?)
                return
            out.write(text + "\n")
            out.flush()

    def read_line(self) -> str | None:
        """The next line typed (without its newline), or None at end of input."""
        if not self.interactive:
            if self._piped is None:
                self._piped = _PipedLines(sys.stdin)
            line = self._piped.next_line()
            return line.rstrip("\r\n") if line else None
        if not self._prompt_tried:
            self._start_prompt()
        try:
            if self._session is not None:
                return str(self._session.prompt(self.prompt))
            return input(self.prompt)
        except EOFError:
            return None

    def close(self) -> None:
        """Stop redirecting output through the prompt; print what is still queued."""
        if self._patch is not None:
            self._patch.close()
            self._patch = None
        self.out.flush()
