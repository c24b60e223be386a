"""Background threads that leave Ctrl-C and SIGTERM to the main thread.

The kernel hands a process-directed signal to any thread that does not block it. Python runs
signal handlers only in the main thread, and only once that thread wakes up: a SIGINT that lands
on a receive thread while the main thread sits in a blocking wait (chat's prompt) waited for the
next keystroke. Where the platform has ``pthread_sigmask`` (Linux, macOS), every
oscsync thread is therefore started with the stop signals blocked, so they always reach the main
thread and interrupt whatever it is waiting in. Windows has no signal masks and needs none: it
runs a Ctrl-C handler on a thread of its own and Python passes it to the main thread.

A thread that keeps time (a scheduler's timer thread, a receive thread) says so with its
``role`` (:data:`TIMER`, :data:`RECEIVE`): once a command has installed a promoter
(:func:`set_promoter`: ``oscsync --realtime``, :mod:`oscsync.realtime`), such a thread asks for
real-time priority first thing, on itself (the OS grants it per thread, and a thread created by a
real-time one would inherit it). Without a promoter nothing is asked: a library user's threads
stay as they are.
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


TIMER = "timer"
"""The role of a thread that runs actions at their due time (a scheduler's: ticks, steps,
``dump --schedule``, ``replay``'s sends)."""
RECEIVE = "receive"
"""The role of a thread that reads datagrams (an endpoint's receive thread)."""

Promoter = Callable[[str], bool]
"""Asks real-time priority for the calling thread in a role; True if granted."""

_promoter: Promoter | None = None


def set_promoter(promoter: Promoter | None) -> Promoter | None:
    """Install ``promoter`` for threads started with a role from now on (None: ask nothing);
    returns the one it replaces, to put back."""
    global _promoter
    previous, _promoter = _promoter, promoter
    return previous


def promote(role: str) -> bool:
    """Ask real-time priority for the calling thread in ``role``; False without a promoter or
    when refused. Never raises: a refusal only leaves the thread as it was."""
    promoter = _promoter
    if promoter is None:
        return False
    try:
        return promoter(role)
    except Exception:  # a promoter is OS glue: timing gets worse, the thread must still run
        return False


def daemon_thread(
    target: Callable[..., Any], *args: Any, name: str, role: str | None = None
) -> threading.Thread:
    """A daemon thread for ``target(*args)``, not started yet: keep it, then :func:`start` it.

    Two steps, so that the owner holds the thread before it runs: a Ctrl-C raised the moment it
    has started must not leave a running thread that ``close()`` does not know about. With a
    ``role`` the thread first asks for real-time priority (:func:`promote`); a thread that
    must know the answer (the scheduler's) passes no role and calls :func:`promote` itself.
    """
    if role is None:
        return threading.Thread(target=target, args=args, name=name, daemon=True)

    def promoted(*given: Any) -> Any:
        promote(role)
        return target(*given)

    return threading.Thread(target=promoted, args=args, name=name, daemon=True)


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
