"""A selector that another thread can wake: how every socket loop in oscsync waits.

:mod:`selectors` picks what the platform has (epoll, kqueue, poll or select) and a
:func:`socket.socketpair` is the wake-up line, since Windows can select on sockets only (not on a
pipe). The transport's receive thread, ``netem``'s relay thread and the TCP listener's and
senders' threads all wait here, so ``close()`` stops any of them at once (issue #12, item 5: this
loop was written four times).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from typing import Any


class WakeableSelector:
    """Wait for readable sockets; :meth:`wake` (from any thread) ends the current wait early.

    The owner's loop decides what a wake-up means (closed? new sockets to register?) by checking
    its own state after each :meth:`wait`.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self)

    def register(self, sock: socket.socket, data: Any, events: int = selectors.EVENT_READ) -> None:
        """Wait for ``sock`` to be readable (or ``events``); :meth:`wait` gives ``data`` back."""
        self._selector.register(sock, events, data)

    def modify(self, sock: socket.socket, events: int, data: Any) -> None:
        """Wait for other ``events`` on ``sock`` (a stream with bytes to write: writable too)."""
        self._selector.modify(sock, events, data)

    def unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def wait(self, timeout: float | None = None) -> list[tuple[socket.socket, Any]]:
        """The readable sockets and their data (empty after a wake-up or a timeout)."""
        return [(key.fileobj, key.data) for key, _ in self.select(timeout)]  # type: ignore[misc]

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """:meth:`wait` with the keys and their events (sockets watched for writing, too); a
        wake-up is consumed and left out. OSError or ValueError once closed under the caller."""
        ready = []
        for key, events in self._selector.select(timeout):
            if key.data is self:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
                continue
            ready.append((key, events))
        return ready

    def wake(self) -> None:
        """End the current (or next) :meth:`wait` early. Safe from any thread."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
