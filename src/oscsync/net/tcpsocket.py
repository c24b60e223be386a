"""What the TCP listener and the TCP sender share: the packet callback, sockets, error words.

A listening socket is opened as every oscsync listener is (:mod:`oscsync.net.listening`).

The listener (:mod:`oscsync.net.tcplistener`) and the sender (:mod:`oscsync.net.tcpsender`) each
run their sockets from one :mod:`selectors` loop with a wake-up socket pair
(:class:`~oscsync.net.selector.WakeableSelector`; Linux, macOS and Windows all have both), read
time only through an injected :class:`~oscsync.clock.Clock`, and expose ``poll``, one round of
that loop, so tests can step them with a fake clock instead of waiting.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from oscsync.net.hostport import HostPort
from oscsync.net.listening import accept_both_families, bind_error_message, take_port_exclusively

PacketHandler = Callable[[bytes, tuple[str, int], float], None]
"""Takes one received packet with its source and arrival (wall seconds on the clock)."""
WarningHandler = Callable[[str], None]

READ_SIZE = 65536
BACKLOG = 64


def ignore_warning(_: str) -> None:
    pass


def open_tcp_listener(where: HostPort, backlog: int = BACKLOG) -> socket.socket:
    """A non-blocking TCP socket listening on ``where``; OSError with a one-line message."""
    sock = socket.socket(where.family, socket.SOCK_STREAM)
    try:
        if not take_port_exclusively(sock):
            # POSIX: rebind at once after a restart, while old connections sit in TIME_WAIT
            # (Windows' SO_REUSEADDR would let another process take the port over).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        accept_both_families(sock, where)
        sock.bind(where.sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, bind_error_message(where, exc)) from None
    return sock


def strerror(code: int) -> str:
    """The words for an errno ``code`` (``error N`` where the platform has none)."""
    try:
        return os.strerror(code)
    except ValueError:
        return f"error {code}"
