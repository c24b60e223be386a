"""One status line redrawn in place on a terminal, with warnings printed above it.

``timetag monitor``, ``metronome listen`` and ``metronome send`` keep a live line on a terminal.
Two things went wrong when each drew its own (issue #13): a line wider than the terminal wraps,
and ``\\r`` then only returns to the start of the *last* row, so every redraw scrolls; and a
warning written to stderr mid-line was spliced into it (``sent 1 tickswarning: ...``).

:class:`LiveLine` fixes both in one place: each draw cuts the text to the terminal's width
*measured at that moment* (the window may have been resized), and :meth:`LiveLine.above` erases
the line, writes a whole line (a warning, a notice) and redraws the status below it. One lock
covers both, so a warning from a receive thread never lands inside a redraw.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from typing import TextIO

DEFAULT_COLUMNS = 80
"""Width assumed when the terminal cannot be asked (not a terminal, or no ioctl)."""

_ERASE = "\r\x1b[2K"  # carriage return, then erase the whole row (ECMA-48 EL 2)


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to, read now; COLUMNS, else 80, if unknown."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_COLUMNS
    except (AttributeError, ValueError, OSError):
        pass
    try:
        return int(os.environ.get("COLUMNS", "")) or DEFAULT_COLUMNS
    except ValueError:
        return DEFAULT_COLUMNS


def _width(ch: str) -> int:
    # East Asian wide and full-width characters take two columns; combining marks none.
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def fit(text: str, columns: int) -> str:
    """``text`` cut to ``columns − 1`` columns (the last column would wrap on some terminals).

    Cut with an ellipsis so a reader sees the line goes on. Text is expected escaped already
    (``display.escape``): no control characters, whose width would be unknown.
    """
    room = max(1, columns - 1)
    if text.isascii() and len(text) <= room:
        return text
    used = 0
    for index, ch in enumerate(text):
        used += _width(ch)
        if used > room:
            return _cut(text[:index], room - 1) + "…"
    return text


def _cut(text: str, room: int) -> str:
    while sum(_width(ch) for ch in text) > room:
        text = text[:-1]
    return text


class LiveLine:
    """A status line on ``out`` (a terminal) that :meth:`show` redraws and :meth:`above` keeps."""

    def __init__(self, out: TextIO, *, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self._lock = threading.Lock()
        self._text: str | None = None  # what the line shows now (None: nothing drawn)

    def show(self, text: str) -> None:
        """Redraw the line with ``text``, cut to the terminal's current width."""
        if not self.enabled:
            return
        with self._lock:
            self._text = text
            self._draw()

    def above(self, line: str, stream: TextIO | None = None) -> None:
        """Write ``line`` on a row of its own (to ``stream``, default ``out``), status redrawn."""
        target = self.out if stream is None else stream
        with self._lock:
            shown = self._text is not None and self.enabled
            if shown:
                self.out.write(_ERASE)
                self.out.flush()
            target.write(line + "\n")
            target.flush()
            if shown:
                self._draw()

    def end(self) -> None:
        """Finish the line (a newline after it) so what follows starts on a fresh row."""
        with self._lock:
            if self._text is not None and self.enabled:
                self.out.write("\n")
                self.out.flush()
            self._text = None

    def _draw(self) -> None:
        assert self._text is not None
        self.out.write(_ERASE + fit(self._text, terminal_columns(self.out)))
        self.out.flush()
