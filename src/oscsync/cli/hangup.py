"""Stopping on SIGHUP (the terminal was closed, an ssh session dropped) as on SIGTERM.

Without a handler SIGHUP kills the process at once: no summary, no closed sockets, and a
``metronome listen --audio wav:FILE`` left a 0-byte WAV (issue 20, item 11). Used inside
:func:`~oscsync.cli.runtime.running`, :func:`hangup_stops` gives SIGHUP whatever handler SIGTERM
has there, so both take the same clean way out. Windows has no SIGHUP: there it does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def hangup_stops() -> Iterator[None]:
    """While inside, SIGHUP is handled as SIGTERM is (enter it after ``running()``)."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.getsignal(signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
