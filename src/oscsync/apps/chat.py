"""``oscsync chat``: the workshop's example 1, two-way lines of text as ``/chat`` messages.

Each line typed is sent as ``/chat ,s LINE``. A ``/chat`` received is shown with its sender and
time and its arguments joined with spaces: Pure Data's ``[send /chat hello world(`` arrives as two
strings (and numbers as floats), so joining is what makes it read as the line that was typed.
Anything else that arrives is shown too, marked as not chat, because a metronome's ``/tick`` on
the chat port usually means two examples share a port by mistake.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oscsync.apps.delivery import refusals, refused_within
from oscsync.apps.endpoints import Endpoint
from oscsync.net.hostport import HostPort
from oscsync.osc.codec import Message
from oscsync.osc.routing import Method, Received
from oscsync.terminal import display

CHAT_ADDRESS = "/chat"
CHAT_METHOD = Method(
    CHAT_ADDRESS, "s", "one chat line; any number of strings or numbers, joined by spaces"
)
"""What chat answers to (registered on its endpoint; OSCQuery's description)."""


def chat_text(args: tuple[Any, ...], types: str) -> str:
    """A ``/chat`` message's arguments as one line: joined with spaces, control chars escaped."""
    if "[" in types:
        # An array is one argument but two tags or more: tags and values no longer pair 1:1.
        return display.format_args(Message(CHAT_ADDRESS, args, types))
    words = []
    for value, tag in zip(args, types):
        if tag in ("s", "S"):
            words.append(display.escape(value))
        elif tag in ("f", "d") and math.isfinite(value):
            # PD sends every number as a float32: show 3.0 as "3" and 0.1f as "0.1".
            words.append(str(int(value)) if float(value).is_integer() else f"{value:.7g}")
        else:
            words.append(display.format_arg(value, tag))
    return " ".join(words)


def _local_time(unix: float) -> str:
    return _dt.datetime.fromtimestamp(unix).strftime("%H:%M:%S")


def format_received(received: Received) -> tuple[str, bool]:
    """``([HH:MM:SS SOURCE] text, is_chat)``; non-chat shows address, types and arguments."""
    head = f"[{_local_time(received.arrival)} {HostPort(*received.source)}]"
    message = received.message
    if message.address == CHAT_ADDRESS:
        return f"{head} {chat_text(message.args, message.types)}", True
    args = display.format_args(message)
    body = f"{display.escape(message.address)} ,{message.types}" + (f" {args}" if args else "")
    return f"{head} (not chat) {body}", False


RETRY = 0.25
"""Seconds between two tries of a line a peer refused (:meth:`ChatSession.send_when_heard`)."""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass
class ChatStats:
    sent: int = 0
    received: int = 0
    other: int = 0


class ChatSession:
    """Sends typed lines to the peers and hands each received message, formatted, to ``show``,
    through the public :class:`~oscsync.apps.endpoints.Endpoint` (``examples/example1_client.py``
    chats the same way): ``show`` runs on the endpoint's callback thread, as each message
    arrives (a bundle is shown on arrival, not held)."""

    def __init__(self, endpoint: Endpoint, show: Callable[[str, bool], None]) -> None:
        self.endpoint = endpoint
        self.show = show
        self.stats = ChatStats()
        method = CHAT_METHOD
        endpoint.on(
            method.path,
            self.on_message,
            hold=False,
            types=method.types,
            description=method.description,
        )
        # Other addresses reach on_message too (shown as "(not chat)").
        endpoint.set_default_handler(self.on_message, hold=False)

    def send_line(self, line: str) -> bool:
        """Send one line as ``/chat ,s LINE``; empty lines are not sent. True if it went out."""
        if not line:
            return False
        self.endpoint.send(CHAT_ADDRESS, line, types="s")
        self.stats.sent += 1
        return True

    def send_when_heard(self, line: str, wait: float, retry: float = RETRY) -> float | None:
        """Send ``line``, and again every ``retry`` s while a peer refuses it, up to ``wait`` s.

        A refused datagram was dropped by the peer's kernel (nothing listened), so sending it
        again duplicates nothing. Returns the seconds waited once no peer refused it within
        :data:`~oscsync.apps.delivery.REFUSAL_WINDOW`, or None if one still did after ``wait``
        (issue 30: a piped chat started before Pure Data used to lose its lines). With several
        peers a listening one gets the line again each time another one refuses it.
        """
        clock = self.endpoint.clock
        start = clock.monotonic()
        while True:
            before = refusals(self.endpoint.transport)
            self.endpoint.send(CHAT_ADDRESS, line, types="s")
            if not refused_within(self.endpoint.transport, before):
                self.stats.sent += 1
                return clock.monotonic() - start
            left = start + wait - clock.monotonic()
            if left <= 0:
                return None
            clock.sleep(min(retry, left))

    def on_message(self, received: Received) -> None:
        text, is_chat = format_received(received)
        if is_chat:
            self.stats.received += 1
        else:
            self.stats.other += 1
        self.show(text, is_chat)

    def summary(self) -> str:
        stats = self.stats
        endpoint = self.endpoint.stats
        text = f"chat: sent {_count(stats.sent, 'line')}, received {stats.received}"
        if stats.other:
            text += f" (and {_count(stats.other, 'other message')})"
        if endpoint.dropped:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(endpoint.drops.items()))
            text += f"; dropped {endpoint.dropped} ({reasons})"
        if self.endpoint.dropped:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.endpoint.dropped.items()))
            text += f"; not shown: {reasons}"
        if note := endpoint.platform_note():
            text += f" ({note})"
        if note := endpoint.connection_note():
            text += f"; {note}"
        if endpoint.send_errors:
            errors = ", ".join(f"{r} {n}" for r, n in sorted(endpoint.send_errors.items()))
            text += f"; send errors: {errors}"
        return text
