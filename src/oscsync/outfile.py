"""Files a command writes because the user named them: opened without ever waiting, and cut
back to their last whole record when the disk fills up (issue 27, item 12).

* :func:`open_output` opens ``--log``, ``wav:``, ``--csv``, ``--json-out``, ``--plot`` and
  ``record``'s files. A named pipe (FIFO) that nothing reads made a plain ``open`` wait, silently,
  until a reader came: it is now an :class:`OSError` saying so (``ENXIO``), before anything runs.
* :func:`holds_data` is what ``--overwrite`` protects: a regular file that is not empty. A named
  pipe, ``/dev/null`` or an empty file is written without asking.
* :class:`WholeRecords` remembers where each record handed to a buffered file ends, until a
  flush puts them on disk. After a failed write (``ENOSPC``) :meth:`WholeRecords.cut` truncates
  the file at the last whole record on disk, so that it never ends in half a line, and says how
  many handed-over records are not in it (``record`` on a full disk left a cut last line and
  said "dropped 0").
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections import deque
from pathlib import Path
from typing import IO, Any

NO_READER = "a named pipe (FIFO) that nothing reads: start its reader first"


def holds_data(path: Path) -> bool:
    """True for a regular file with something in it (what writing would destroy)."""
    try:
        info = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size > 0


def open_output(path: Path, *, binary: bool = False) -> IO[Any]:
    """``path`` opened for writing (text: UTF-8 with ``\\n`` line ends on every platform).

    OSError as ``open`` raises it, and ``ENXIO`` (:data:`NO_READER`) for a named pipe nobody
    reads, where ``open`` would block until someone does.
    """
    mode = "wb" if binary else "w"
    if hasattr(os, "O_NONBLOCK") and _is_fifo(path):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise OSError(errno.ENXIO, NO_READER, str(path)) from None
            raise
        os.set_blocking(fd, True)  # a reader is there: from now on, write as to any file
        if binary:
            return os.fdopen(fd, mode)
        return os.fdopen(fd, mode, encoding="utf-8", newline="\n")
    if binary:
        return open(path, mode)
    return open(path, mode, encoding="utf-8", newline="\n")


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


class WholeRecords:
    """Where the records written to one buffered file end, for cutting it back after a failure.

    Call :meth:`added` with each record's size as it is handed to the file object and
    :meth:`flushed` after each successful flush (everything handed over is then on disk). The
    ends since the last flush are kept; past :data:`MAX_PENDING` the owner should flush
    (:attr:`must_flush`), so what is kept stays bounded.
    """

    MAX_PENDING = 4096

    def __init__(self) -> None:
        self.on_disk = 0
        """Bytes known to be on disk (up to the last flush)."""
        self.records_on_disk = 0
        self.content_on_disk = 0
        self.handed = 0
        """Bytes handed to the file object."""
        self.records_handed = 0
        self.content_handed = 0
        """What the records carry (a recording's datagram bytes), summed."""
        self._ends: deque[tuple[int, int]] = deque()

    @property
    def must_flush(self) -> bool:
        return len(self._ends) >= self.MAX_PENDING

    def added(self, size: int, content: int = 0) -> None:
        """One record of ``size`` bytes handed to the file, carrying ``content`` bytes."""
        self.handed += size
        self.records_handed += 1
        self.content_handed += content
        self._ends.append((self.handed, self.content_handed))

    def flushed(self) -> None:
        self.on_disk = self.handed
        self.records_on_disk = self.records_handed
        self.content_on_disk = self.content_handed
        self._ends.clear()

    def cut(self, stream: IO[Any]) -> tuple[int, int]:
        """After a failed write: truncate ``stream``'s file at the last whole record that
        reached the disk and close it without writing what its buffers still hold. Returns
        how many handed records, and how many bytes of their content, are not in the file. A
        stream that is no regular file (a pipe, a terminal, an in-memory buffer) is left as it
        is, and what was not flushed counts as lost."""
        size = self.on_disk
        regular = False
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            info = os.fstat(stream.fileno())
            regular = stat.S_ISREG(info.st_mode)
            if regular:
                size = info.st_size
        end, kept, content = self.on_disk, self.records_on_disk, self.content_on_disk
        while self._ends and self._ends[0][0] <= size:
            end, content = self._ends.popleft()
            kept += 1
        if regular:
            with contextlib.suppress(OSError, ValueError):
                os.ftruncate(stream.fileno(), end)
            _close_without_flushing(stream)
        lost = (self.records_handed - kept, self.content_handed - content)
        self.on_disk, self.records_on_disk, self.content_on_disk = end, kept, content
        self.handed, self.records_handed, self.content_handed = end, kept, content
        self._ends.clear()
        return lost


def _close_without_flushing(stream: IO[Any]) -> None:
    """Close ``stream``'s descriptor, dropping what its buffers hold (closing it normally would
    write that, a cut record, into the space the truncation just freed)."""
    raw: Any = stream
    for layer in ("buffer", "raw"):
        raw = getattr(raw, layer, raw)
    with contextlib.suppress(OSError, ValueError):
        raw.close()  # the text and buffered layers above now see it closed and write nothing
    with contextlib.suppress(OSError, ValueError):
        stream.close()
