"""OSCQuery: the JSON that describes what a listener answers to, served over a small HTTP server.

Vidvox's OSCQuery proposal (github.com/Vidvox/OSCQueryProposal, "Core Functionality"): an HTTP
server advertised as ``_oscjson._tcp`` answers ``GET /PATH`` with a JSON node (``FULL_PATH``,
``CONTENTS``, ``TYPE``, ``ACCESS``, ``DESCRIPTION``), ``GET /PATH?ATTRIBUTE`` with just that
attribute, and ``GET /?HOST_INFO`` with ``NAME``, ``EXTENSIONS``, ``OSC_PORT``, ``OSC_TRANSPORT``.
Errors are HTTP statuses: 404 for an unknown path, 400 for an unknown attribute.

The server is deliberately small and bounded, because anyone on the network can connect to it:
GET/HEAD only, the request head must arrive whole within :data:`REQUEST_TIMEOUT` seconds (total,
not per read, so a slow sender cannot hold a thread), it may not exceed :data:`MAX_REQUEST_BYTES`
or :data:`MAX_HEADERS` lines, at most :data:`MAX_CONNECTIONS` are served at once (others get 503),
and no request body is read. Rejections are counted by reason, and no request ever prints a
traceback: one the server cannot answer gets 500 and is counted too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import string
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote

from oscsync import threads
from oscsync.clock import Clock, SystemClock
from oscsync.osc.routing import AddressRegistry, Method, is_pattern

ACCESS_NONE = 0
ACCESS_WRITE = 2
"""OSCQuery ``ACCESS`` bit mask: 1 = the value can be read, 2 = it can be set (sent to)."""

OscMethod = Method
"""One address a listening command answers to, as OSCQuery describes it: the address
registry's declaration (:class:`oscsync.osc.routing.Method`)."""

ROLE_ROOT_DESCRIPTION = {
    # What the live registry cannot say: dump and record take every address (dump's registry
    # holds only the clock ping), and sequence plays any /seq/VOICE, not only the three voices
    # with their own sounds that it registers.
    "dump": "oscsync dump: prints every OSC message it receives, whatever the address",
    "record": "oscsync record: keeps every datagram it receives, whatever the address",
    "sequence": "oscsync sequence listen: plays /seq/VOICE ,fi VELOCITY STEP (or ,fii VELOCITY "
    "STEP NOTE) for any VOICE",
    "pd": "a Pure Data patch (advertised for it by oscsync peers advertise)",
}

EXTENSIONS = {
    "ACCESS": True,
    "DESCRIPTION": True,
    "VALUE": False,
    "RANGE": False,
    "LISTEN": False,
    "PATH_CHANGED": False,
}
"""The optional attributes this server supports (OSCQuery ``HOST_INFO`` → ``EXTENSIONS``)."""

_ATTRIBUTES = frozenset({"FULL_PATH", "CONTENTS", "TYPE", "ACCESS", "DESCRIPTION"})


def host_info(name: str, osc_port: int, transport: str = "UDP") -> dict[str, Any]:
    """The ``HOST_INFO`` object. ``OSC_IP`` is left out: the OSC server is at the same address."""
    return {
        "NAME": name,
        "EXTENSIONS": dict(EXTENSIONS),
        "OSC_PORT": osc_port,
        "OSC_TRANSPORT": transport,
    }


def listed(methods: Sequence[OscMethod]) -> tuple[OscMethod, ...]:
    """The methods OSCQuery can list: plain addresses. A registered pattern (``/seq/*``) is no
    node of an address tree (a node named ``*`` would be an address nobody answers to as
    such); the root's DESCRIPTION is where a command says it takes more."""
    return tuple(method for method in methods if not is_pattern(method.path))


def namespace(methods: Sequence[OscMethod], description: str = "root node") -> dict[str, Any]:
    """The whole address space as one OSCQuery node tree (``GET /``)."""
    root: dict[str, Any] = {"FULL_PATH": "/", "ACCESS": ACCESS_NONE, "DESCRIPTION": description}
    for method in listed(methods):
        node = root
        parts = [part for part in method.path.split("/") if part]
        for depth, part in enumerate(parts):
            contents = node.setdefault("CONTENTS", {})
            if part not in contents:
                contents[part] = {
                    "FULL_PATH": "/" + "/".join(parts[: depth + 1]),
                    "ACCESS": ACCESS_NONE,
                }
            node = contents[part]
        node.update(TYPE=method.types, ACCESS=method.access, DESCRIPTION=method.description)
    return root


class LiveNamespace:
    """The namespace of a live :class:`~oscsync.osc.routing.AddressRegistry`: what an endpoint
    answers to at the moment of each request, so an address registered (or removed) while the
    command runs is listed (or gone) with no table to edit. The tree is rebuilt only when the
    registry's methods changed, so a request costs one tuple comparison."""

    def __init__(self, registry: AddressRegistry, description: str = "root node") -> None:
        self.registry = registry
        self.description = description
        self._lock = threading.Lock()
        self._built: tuple[tuple[OscMethod, ...], dict[str, Any]] | None = None

    def __call__(self) -> dict[str, Any]:
        methods = self.registry.methods()
        with self._lock:
            if self._built is None or self._built[0] != methods:
                self._built = (methods, namespace(methods, self.description))
            return self._built[1]


Namespace: TypeAlias = dict[str, Any] | Callable[[], dict[str, Any]]
"""A fixed node tree, or a callable giving the current one (:class:`LiveNamespace`)."""


def find_node(tree: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The node at ``path`` (``/`` is the root), or None."""
    node = tree
    for part in (part for part in path.split("/") if part):
        child = node.get("CONTENTS", {}).get(part)
        if child is None:
            return None
        node = child
    return node


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    500: "Internal Server Error",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def _json(status: int, value: Any) -> Reply:
    return Reply(status, json.dumps(value, indent=1).encode() + b"\n")


def answer(target: str, tree: dict[str, Any], info: dict[str, Any]) -> Reply:
    """The reply to ``GET target`` (path, optional ``?ATTRIBUTE``; the fragment is ignored).

    The target is split by hand, not by ``urlsplit``: a request target is a path, and
    ``urlsplit("//[")`` reads ``//`` as the start of a host and raises (issue 27, item 9: a
    traceback per request)."""
    path, _, query = target.partition("#")[0].partition("?")
    query = unquote(query)
    if query == "HOST_INFO":  # "the path in the URL is functionally irrelevant"
        return _json(200, info)
    node = find_node(tree, unquote(path) or "/")
    if node is None:
        return _json(404, {"error": "no such OSC address"})
    if not query:
        return _json(200, node)
    if query not in _ATTRIBUTES:
        return _json(400, {"error": "unsupported attribute"})
    return _json(200, {query: node[query]} if query in node else {})


MAX_REQUEST_BYTES = 8192
MAX_HEADERS = 32
MAX_CONNECTIONS = 8
REQUEST_TIMEOUT = 2.0


_TARGET_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/?")
"""What a request target may hold (RFC 3986: a path and query); ``[``, ``{``, ``"``, a space or a
control character is percent-encoded by any client."""


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _allowed(host: str, allow: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d
    return any(ip.version == net.version and ip in net for net in allow)


class OscQueryServer:
    """An HTTP server for one address space; ``start()`` binds, ``close()`` stops and joins."""

    def __init__(
        self,
        host: str,
        tree: Namespace,
        info: dict[str, Any],
        *,
        clock: Clock | None = None,
        port: int = 0,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        allow: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    ) -> None:
        self.tree = tree
        # The listener's --allow covers its OSCQuery server too (#20 item 6): a stranger it
        # would not take OSC from is not told what it answers to either.
        self.allow = tuple(allow)
        self.info = info
        self.clock = clock or SystemClock()
        self.request_timeout = request_timeout
        self.rejected: Counter[str] = Counter()
        self.served = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._closed = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.bind((host, port))
            self._sock.listen(16)
        except OSError:
            self._sock.close()
            raise
        # accept() wakes this often to notice close() on platforms where closing a listening
        # socket does not interrupt a blocked accept().
        self._sock.settimeout(0.25)
        self._thread = threads.daemon_thread(self._accept_loop, name="oscquery-accept")

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> OscQueryServer:
        threads.start(self._thread)
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._sock.close()

    def __enter__(self) -> OscQueryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.allow and not _allowed(peer[0], self.allow):
                self._count("not-allowed")
                conn.close()
                continue
            if not self._slots.acquire(blocking=False):
                self._count("too many connections")
                self._refuse(conn)
                continue
            worker = threads.daemon_thread(self._serve, conn, name="oscquery-request")
            try:
                threads.start(worker)
            except RuntimeError:  # cannot start a thread: refuse rather than crash
                self._slots.release()
                conn.close()

    def _refuse(self, conn: socket.socket) -> None:
        # Read what already arrived (without waiting) so closing does not reset the connection
        # before the client reads the 503; a request still on its way may still see a reset.
        with conn:
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.recv(MAX_REQUEST_BYTES)
            self._send(conn, Reply(503, b""), head_only=False)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                try:
                    method, target = self._read_request(conn)
                except _Rejected as exc:
                    self._count(exc.reason)
                    self._send(conn, Reply(exc.status, b""), head_only=False)
                    return
                except OSError:
                    self._count("connection error")
                    return
                try:
                    tree = self.tree() if callable(self.tree) else self.tree
                    reply = answer(target, tree, self.info)
                except Exception:
                    # Counted, answered, and the server goes on: whatever a stranger sends
                    # costs one line in the summary, not a traceback per request (item 9).
                    self._count("server error")
                    self._send(conn, Reply(500, b""), head_only=False)
                    return
                with self._lock:
                    self.served += 1
                self._send(conn, reply, head_only=method == "HEAD")
        finally:
            self._slots.release()

    def _read_request(self, conn: socket.socket) -> tuple[str, str]:
        deadline = self.clock.monotonic() + self.request_timeout
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                raise _Rejected(408, "too slow")
            conn.settimeout(remaining)
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                raise _Rejected(408, "too slow") from None
            if not chunk:
                raise _Rejected(400, "incomplete request")
            head += chunk
            if len(head) > MAX_REQUEST_BYTES:
                raise _Rejected(431, "request too large")
        lines = head.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].split(b"\n")
        if len(lines) - 1 > MAX_HEADERS:
            raise _Rejected(431, "too many headers")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _Rejected(400, "malformed request line") from None
        if not version.startswith("HTTP/1.") or not target.startswith("/"):
            raise _Rejected(400, "malformed request line")
        if not _TARGET_CHARACTERS.issuperset(target):
            raise _Rejected(400, "malformed request target")
        if method not in ("GET", "HEAD"):
            raise _Rejected(405, "method not allowed")
        return method, target

    def _send(self, conn: socket.socket, reply: Reply, *, head_only: bool) -> None:
        head = (
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        try:
            conn.settimeout(self.request_timeout)
            conn.sendall(head if head_only else head + reply.body)
        except OSError:
            self._count("connection error")
