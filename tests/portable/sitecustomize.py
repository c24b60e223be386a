"""Portable mode: this interpreter loses the Unix-only APIs that CPython on Windows lacks.

Put this directory on ``PYTHONPATH`` and Python imports it at start-up (``site`` imports any
``sitecustomize`` it finds), before oscsync: the CLI then runs with only what every platform has
(issue #21). What goes:

* ``select.poll``, ``epoll``, ``devpoll``, ``kqueue``: ``selectors.DefaultSelector`` becomes
  ``SelectSelector``, as on Windows;
* ``signal.SIGALRM``, ``setitimer``/``getitimer``, ``pthread_sigmask``, ``pthread_kill``,
  ``SIGHUP``, ``SIGUSR1``, ``SIGUSR2``, ``SIGQUIT``: only SIGINT and SIGTERM stay;
* ``socket.socket.recvmsg``/``sendmsg``, ``CMSG_LEN``/``CMSG_SPACE``, ``SO_REUSEPORT``;
* the ``readline``, ``fcntl``, ``termios``, ``tty`` and ``pty`` modules (import raises
  ImportError).

It cannot make Linux behave like Windows underneath (sockets, consoles, Ctrl-C delivery): it
proves that no required path calls a missing API, not that Windows works. tests/test_portable.py
uses it; ``OSCSYNC_PORTABLE_CHECK=1`` makes it print what it removed, so a test can see it ran.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys

_removed: list[str] = []


def _drop(module: object, *names: str) -> None:
    for name in names:
        if hasattr(module, name):
            delattr(module, name)
            _removed.append(f"{getattr(module, '__name__', module)}.{name}")


class _Missing:
    """A class attribute that is not there: hasattr() is False, access raises AttributeError."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> object:
        raise AttributeError(f"{self.name} does not exist on this platform (portable mode)")


_drop(select, "poll", "epoll", "devpoll", "kqueue")
import selectors  # noqa: E402  (may already be imported by a .pth file: choose for it)

selectors.DefaultSelector = selectors.SelectSelector  # type: ignore[misc]
_drop(
    signal,
    "SIGALRM",
    "setitimer",
    "getitimer",
    "ITIMER_REAL",
    "pthread_sigmask",
    "pthread_kill",
    "SIGHUP",
    "SIGUSR1",
    "SIGUSR2",
    "SIGQUIT",
)
for _method in ("recvmsg", "sendmsg", "recvmsg_into"):
    setattr(socket.socket, _method, _Missing(f"socket.{_method}"))
    _removed.append(f"socket.socket.{_method}")
_drop(socket, "CMSG_LEN", "CMSG_SPACE", "SO_REUSEPORT")
for _module in ("readline", "fcntl", "termios", "tty", "pty"):
    sys.modules[_module] = None  # type: ignore[assignment]
    _removed.append(_module)

if os.environ.get("OSCSYNC_PORTABLE_CHECK"):
    print("portable mode: removed " + ", ".join(_removed), file=sys.stderr)
