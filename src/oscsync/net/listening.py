"""What every listening socket needs, UDP (:mod:`oscsync.net.udp`) or TCP (``tcplistener``).

The port to itself where Windows would let another process share it, both IP families on
``[::]``, and one line that says why a bind failed. Chosen by capability, never by platform name
(issue #21).
"""

from __future__ import annotations

import contextlib
import errno
import socket

from oscsync.net.hostport import HostPort

_WSAEACCES = 10013


def take_port_exclusively(sock: socket.socket) -> bool:
    """Set ``SO_EXCLUSIVEADDRUSE`` where it exists (Windows: without it a second process binding
    with ``SO_REUSEADDR`` takes the port over); False where it does not."""
    if not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
        return False
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    return True


def accept_both_families(sock: socket.socket, where: HostPort) -> None:
    """Make ``[::]`` mean both IPv6 and IPv4 (Linux's default; Windows' is IPv6 only)."""
    if where.family == socket.AF_INET6 and where.host == "::" and hasattr(socket, "IPV6_V6ONLY"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


def bind_error_message(where: HostPort, exc: OSError) -> str:
    """One line saying why ``where`` could not be listened on."""
    if getattr(exc, "winerror", None) == _WSAEACCES:
        # Windows: another program holds the port exclusively, or the port is reserved
        # (Hyper-V, WSL and Docker reserve ranges of ports).
        return (
            f"cannot listen on {where}: Windows refused the port (another program holds it, or "
            "it is reserved: see `netsh interface ipv4 show excludedportrange "
            f"protocol={where.protocol}`)"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use (another oscsync, Pure Data or oscdump listening?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: that address is not on this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need root)"
    return f"cannot listen on {where}: {exc.strerror}"
