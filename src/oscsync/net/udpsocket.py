"""UDP sockets as the kernel offers them: options Python does not name, buffers, drop counts.

What :class:`oscsync.net.udp.Endpoint` (and ``netem``'s relay) ask of a UDP socket beyond
``socket``: the Linux option numbers Python does not export (kernel arrival stamps, drop counts
on each datagram, a forced receive buffer), the size of the largest datagram, the socket's own
drop counter, and ``--iface`` as multicast wants it. Each is chosen by capability: where an
option does not exist its constant is None and the caller does without (issue #21).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys

MAX_DATAGRAM = 65535

_LINUX = sys.platform.startswith("linux")  # only to name constants Python does not export
# Linux: SO_RXQ_OVFL makes recvmsg report how many datagrams the kernel dropped on this socket.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if _LINUX else None)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if _LINUX else None)
# Linux: SO_TIMESTAMPNS (the _OLD layout: struct timespec of two longs) stamps each datagram
# when the kernel received it (#20 item 14); SO_MEMINFO's ninth field is the socket's drop
# counter (#20 item 12).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if _LINUX else None)
TIMESPEC = struct.Struct("@ll")
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55 if _LINUX else None)
_SK_MEMINFO_DROPS = 8
HAS_RECVMSG = hasattr(socket.socket, "recvmsg")


def socket_drop_count(sock: socket.socket) -> int | None:
    """How many datagrams the kernel dropped on ``sock`` (buffer full), or None if it won't say.

    Linux: ``SO_MEMINFO``'s drops field (kernel 4.14 and later), else the socket's line in
    ``/proc/net/udp`` or ``udp6`` (found by inode). Windows and macOS have no per-socket counter.
    """
    if SO_MEMINFO is not None:
        size = 4 * (_SK_MEMINFO_DROPS + 1)
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * 16)
        except OSError:
            raw = b""
        if len(raw) >= size:
            return int.from_bytes(raw[size - 4 : size], sys.byteorder)
        return _proc_net_udp_drops(sock)
    return None


def _proc_net_udp_drops(sock: socket.socket) -> int | None:
    try:
        inode = os.fstat(sock.fileno()).st_ino
        table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
        with open(table, encoding="ascii") as lines:
            next(lines)  # header
            for line in lines:
                fields = line.split()
                if len(fields) >= 13 and fields[9] == str(inode):
                    return int(fields[12])
    except (OSError, ValueError, StopIteration):
        return None
    return None


def is_address_not_available(exc: OSError) -> bool:
    return exc.errno == errno.EADDRNOTAVAIL or getattr(exc, "winerror", None) == 10049


def ipv4_iface(address: str) -> bytes:
    """``--iface`` as the 4 bytes IP_MULTICAST_IF wants; OSError (one line) if it is not IPv4."""
    try:
        return socket.inet_aton(address)
    except OSError:
        raise OSError(errno.EINVAL, f"--iface {address!r} is not an IPv4 address") from None


def set_recv_buffer(sock: socket.socket, size: int) -> None:
    if _SO_RCVBUFFORCE is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            return
        except OSError:
            pass  # not root: fall back to the capped option
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
