"""The address registry: which handler answers which OSC address, with OSC 1.0 pattern matching.

Commands and services register what they answer to (``registry.add("/chat", handler, "s",
"one chat line")``); a transport's receive core asks :meth:`AddressRegistry.lookup` for each
message's handler. An address nobody registered goes to the transport's fallback handler (the
one given to ``start``), so ``dump`` still sees everything.

Matching follows the OSC 1.0 specification ("OSC Message Dispatching and Pattern Matching"):
an incoming address may be a pattern (``?``, ``*``, ``[a-z]``, ``[!abc]``, ``{foo,bar}``, never
crossing a ``/``) and reaches every registered address it matches; a registered address may be a
pattern too (``/seq/*``) and then answers every address it matches. Exact addresses stay one dict
lookup (``benchmarks/throughput.py``): the answer for each address seen is cached, bounded in
entries and bytes because addresses come from the network.

The matcher walks each ``/``-separated part with a set of reachable positions (at most
tokens x characters steps), not a regular expression: a hostile ``/*a*a*a*a...`` cannot make it
backtrack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from oscsync.osc import codec


class Received(NamedTuple):
    """A message as it arrived: what, from where, when (wall seconds) and in which bundle.

    A named tuple, not a frozen dataclass: one is made per message, and this is the receive
    path's hot spot (``benchmarks/throughput.py``).
    """

    message: codec.Message
    source: tuple[str, int]
    arrival: float
    via_peer: bool = False
    """True when it arrived on a peer's connected socket (a reply) rather than the listener."""
    authenticated: bool = False
    """True when it came in a bundle signed with this process's key, checked and fresh
    (:mod:`oscsync.osc.auth`; ``--key-file``): only then may it move a clock."""

    @property
    def address(self) -> str:
        return self.message.address

    @property
    def args(self) -> tuple[Any, ...]:
        return self.message.args

    @property
    def timetag(self) -> int | None:
        return self.message.timetag


Handler = Callable[[Received], None]

PATTERN_CHARACTERS = frozenset("?*[]{}")
MAX_PATTERN_LENGTH = 1024
"""Longer incoming patterns match nothing (they go to the fallback handler, like any address)."""
_CACHE_ENTRIES = 4096
_CACHE_BYTES = 1 << 20


def is_pattern(address: str) -> bool:
    """True if ``address`` has OSC pattern characters (so it is matched, not looked up)."""
    return not PATTERN_CHARACTERS.isdisjoint(address)


@dataclass(frozen=True)
class Method:
    """One address something answers to, as OSCQuery describes it."""

    path: str
    types: str = ""
    """OSC type tags without the comma (OSCQuery's ``TYPE``)."""
    description: str = ""
    access: int = 2
    """OSCQuery ``ACCESS`` bit mask: 1 = the value can be read, 2 = it can be set (sent to)."""
    listed: bool = True
    """False for an address routed only to be ignored (a room leader's sync messages reaching
    a listener that follows no clock): it answers to nothing, so :meth:`AddressRegistry.methods`
    leaves it out (and OSCQuery and the TXT record do not list it)."""


# -- matching ------------------------------------------------------------------------------

_Token = tuple[str, object]


def _tokens(part: str) -> list[_Token] | None:
    """One address part as tokens; None if it is not a well-formed pattern."""
    tokens: list[_Token] = []
    literal: list[str] = []
    i = 0
    while i < len(part):
        char = part[i]
        if char in "?*[{":
            if literal:
                tokens.append(("lit", "".join(literal)))
                literal = []
            if char == "?":
                tokens.append(("?", None))
            elif char == "*":
                if not tokens or tokens[-1][0] != "*":  # ** is *
                    tokens.append(("*", None))
            elif char == "[":
                end = part.find("]", i + 1)
                if end < 0:
                    return None
                body = part[i + 1 : end]
                negate = body.startswith("!")
                tokens.append(("set", (negate, _ranges(body[1:] if negate else body))))
                i = end
            else:
                end = part.find("}", i + 1)
                if end < 0:
                    return None
                tokens.append(("alt", tuple(part[i + 1 : end].split(","))))
                i = end
        elif char in "]}":
            return None
        else:
            literal.append(char)
        i += 1
    if literal:
        tokens.append(("lit", "".join(literal)))
    return tokens


def _ranges(body: str) -> tuple[tuple[str, str], ...]:
    ranges = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            ranges.append((body[i], body[i + 2]))
            i += 3
        else:
            ranges.append((body[i], body[i]))
            i += 1
    return tuple(ranges)


def _match_part(tokens: list[_Token], text: str) -> bool:
    size = len(text)
    reach = {0}
    for kind, value in tokens:
        if kind == "lit":
            assert isinstance(value, str)
            reach = {j + len(value) for j in reach if text.startswith(value, j)}
        elif kind == "?":
            reach = {j + 1 for j in reach if j < size}
        elif kind == "*":
            reach = set(range(min(reach), size + 1))
        elif kind == "set":
            negate, ranges = cast("tuple[bool, tuple[tuple[str, str], ...]]", value)
            reach = {
                j + 1
                for j in reach
                if j < size and any(lo <= text[j] <= hi for lo, hi in ranges) != negate
            }
        else:
            assert isinstance(value, tuple)
            reach = {j + len(alt) for j in reach for alt in value if text.startswith(alt, j)}
        if not reach:
            return False
    return size in reach


class AddressPattern:
    """An OSC address pattern, parsed once; :meth:`matches` a plain address."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        parts = pattern.split("/")
        parsed = [_tokens(part) for part in parts]
        self._parts: list[list[_Token]] | None = (
            None if any(p is None for p in parsed) else [p for p in parsed if p is not None]
        )

    @property
    def valid(self) -> bool:
        """False for a malformed pattern (an unclosed ``[`` or ``{``), which matches nothing."""
        return self._parts is not None

    def matches(self, address: str) -> bool:
        if self._parts is None:
            return False
        parts = address.split("/")
        if len(parts) != len(self._parts):
            return False
        return all(_match_part(t, text) for t, text in zip(self._parts, parts, strict=True))


def matches(pattern: str, address: str) -> bool:
    """Does the OSC address ``pattern`` match the plain ``address``?"""
    return AddressPattern(pattern).matches(address)


# -- the registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: Method
    handler: Handler
    pattern: AddressPattern | None


def no_route(received: Received) -> None:
    """What :meth:`AddressRegistry.lookup` gives for an address nobody registered."""


def _call_each(handlers: tuple[Handler, ...]) -> Handler:
    def call(received: Received) -> None:
        for handler in handlers:
            handler(received)

    return call


class AddressRegistry:
    """Address (or pattern) -> handler. Thread-safe to change while a transport dispatches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self.resolved: dict[str, Handler] = {}
        """Address -> handler (:func:`no_route`: nobody registered it), read lock-free on the
        receive path: ``resolved.get(address) or registry.lookup(address)``."""
        self._cached_bytes = 0
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed()`` after each change of what is registered (an advertiser keeps its
        DNS-SD TXT ``addresses=`` in step: :class:`oscsync.discovery.advertiser.Advertiser`); it
        runs on the thread that made the change, so it must be quick. Returns the function that
        stops the calls."""
        with self._lock:
            self._watchers.append(changed)

        def unwatch() -> None:
            with self._lock:
                if changed in self._watchers:
                    self._watchers.remove(changed)

        return unwatch

    def _changed(self) -> None:
        with self._lock:
            watchers = tuple(self._watchers)
        for changed in watchers:  # outside the lock: a watcher may read methods()
            changed()

    def add(self, address: str, handler: Handler, types: str = "", description: str = "") -> None:
        """Route ``address`` (a plain address or an OSC pattern) to ``handler``; replaces."""
        self.add_method(Method(address, types, description), handler)

    def add_method(self, method: Method, handler: Handler) -> None:
        """Route ``method.path`` to ``handler``, as declared by a command (OSCQuery lists it)."""
        address = method.path
        pattern = AddressPattern(address) if is_pattern(address) else None
        with self._lock:
            self._routes[address] = Route(method, handler, pattern)
            self._reset_cache()
        self._changed()

    def remove(self, address: str) -> None:
        with self._lock:
            removed = self._routes.pop(address, None) is not None
            self._reset_cache()
        if removed:
            self._changed()

    def __contains__(self, address: object) -> bool:
        return address in self._routes

    def __len__(self) -> int:
        return len(self._routes)

    def methods(self) -> tuple[Method, ...]:
        """What is registered, in registration order: what the endpoint answers to, which its
        OSCQuery server lists (:class:`oscsync.discovery.oscquery.LiveNamespace`); not the
        addresses routed only to be ignored (``Method.listed`` False). Safe to call from
        another thread while the registry changes."""
        with self._lock:
            return tuple(route.method for route in self._routes.values() if route.method.listed)

    def lookup(self, address: str) -> Handler:
        """The handler for an incoming ``address`` (calling each match of a pattern), or
        :func:`no_route` when nothing is registered for it."""
        found = self.resolved.get(address)
        return found if found is not None else self._resolve(address)

    def _resolve(self, address: str) -> Handler:
        with self._lock:
            routes = self._routes
            if is_pattern(address):
                if len(address) > MAX_PATTERN_LENGTH:
                    return no_route
                incoming = AddressPattern(address)
                hits = tuple(
                    r.handler
                    for a, r in routes.items()
                    if r.pattern is None and incoming.matches(a)
                )
            else:
                hits = tuple(
                    r.handler for r in routes.values() if r.pattern and r.pattern.matches(address)
                )
            # One handler registered for several addresses (sequence's /seq/kick, /seq/snare,
            # /seq/hat) is called once for a pattern that matches several of them. By identity:
            # a bound method of a dataclass instance cannot be hashed.
            hits = tuple({id(handler): handler for handler in hits}.values())
            found = no_route if not hits else hits[0] if len(hits) == 1 else _call_each(hits)
            if (
                len(self.resolved) >= _CACHE_ENTRIES
                or self._cached_bytes + len(address) > _CACHE_BYTES
            ):
                self._reset_cache()
            self.resolved[address] = found
            self._cached_bytes += len(address)
            return found

    def _reset_cache(self) -> None:
        # A new dict, swapped in whole: the receive thread reads it without the lock.
        self.resolved = {a: r.handler for a, r in self._routes.items() if r.pattern is None}
        self._cached_bytes = sum(len(a) for a in self.resolved)
