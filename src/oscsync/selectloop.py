"""A selector that another thread can wake: how every socket loop in oscsync waits.

:mod:`selectors` picks what the platform has (epoll, kqueue, poll or select) and a
:func:`socket.socketpair` is the wake-up line, since Windows can select on sockets only (not on a
pipe). The transport's receive thread and ``netem``'s relay thread both wait here, so
``close()`` stops either at once (issue #12, item 5: this loop was written twice).
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

    def register(self, sock: socket.socket, data: Any) -> None:
        """Wait for ``sock`` to be readable; :meth:`wait` gives ``data`` back for it."""
        self._selector.register(sock, selectors.EVENT_READ, data)

    def unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def wait(self, timeout: float | None = None) -> list[tuple[socket.socket, Any]]:
        """The readable sockets and their data (empty after a wake-up or a timeout)."""
        ready = []
        for key, _ in self._selector.select(timeout):
            if key.data is self:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
                continue
            ready.append((key.fileobj, key.data))
        return ready  # type: ignore[return-value]

    def wake(self) -> None:
        """End the current (or next) :meth:`wait` early. Safe from any thread."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
