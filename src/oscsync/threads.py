"""Background threads that leave Ctrl-C and SIGTERM to the main thread.

The kernel hands a process-directed signal to any thread that does not block it. Python runs
signal handlers only in the main thread, and only once that thread wakes up: a SIGINT that lands
on a receive thread while the main thread sits in a blocking wait (chat's prompt) waited for the
next keystroke. Where the platform has ``pthread_sigmask`` (Linux, macOS), every
oscsync thread is therefore started with the stop signals blocked, so they always reach the main
thread and interrupt whatever it is waiting in. Windows has no signal masks and needs none: it
runs a Ctrl-C handler on a thread of its own and Python passes it to the main thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK")
    if hasattr(signal, name)
)
"""Signals that mean "stop cleanly": Ctrl-C, kill, terminal closed (POSIX), Ctrl-Break (Windows)."""


def daemon_thread(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    """A daemon thread for ``target(*args)``, not started yet: keep it, then :func:`start` it.

    Two steps, so that the owner holds the thread before it runs: a Ctrl-C raised the moment it
    has started must not leave a running thread that ``close()`` does not know about.
    """
    return threading.Thread(target=target, args=args, name=name, daemon=True)


def start(thread: threading.Thread) -> threading.Thread:
    """Start ``thread`` with the stop signals blocked in it (they stay the main thread's)."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: signals only reach the main thread
        thread.start()
        return thread
    # The new thread inherits the mask in force while it is created; a signal arriving in the
    # meantime stays pending and is delivered to this thread when the mask is restored.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread


def join(thread: threading.Thread | None, timeout: float) -> bool:
    """Wait up to ``timeout`` s for an owner's ``thread`` to end, as its ``close()`` does; returns
    whether it has ended (True for None).

    Never joins the calling thread (a ``close()`` called from the thread's own callback: it ends
    once that returns) nor one that never started (a stop signal raised between
    :func:`daemon_thread` and :func:`start`): joining either raises ``RuntimeError``.
    """
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)
    return thread is None or not thread.is_alive()
