"""Turning received OSC into text that is safe to print and easy to read or parse.

Strings from the network are printed with control characters escaped: a peer must not be able to
move your cursor, change your terminal's title or clear your screen with an OSC string
(the ``ESC [`` family of sequences, and also C1 controls such as U+009B), nor hide or reorder
what a line says with invisible characters (zero-width, bidi, tag characters, odd spaces).
Warnings and errors pass :func:`printable` as a whole. JSON output is strict: no lone
surrogates (:func:`json_text`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from oscsync.osc import timetag
from oscsync.osc.codec import MAX_ARRAY_DEPTH, Message

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"  # C0 and C1 controls, DEL, NBSP and SHY
    # str.isprintable is False exactly for the categories a peer can hide text with (issue 20,
    # item 5): Cc and Cf (zero-width characters, bidi marks and overrides, tag characters),
    # Zs other than U+0020 (non-ASCII spaces), Zl and Zp (line separators), Co (private use),
    # Cn (unassigned) and Cs (lone surrogates, which cannot even be written to a UTF-8 stream).
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with control and invisible characters shown as escapes (``\\x1b``,
    ``\\u200b``), backslashes doubled; printable Unicode kept as is."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_char(ch) for ch in text)


def printable(text: str) -> str:
    """``text`` with control and invisible characters escaped but backslashes kept: for whole
    warning and error lines, which may hold text already passed through :func:`escape` (this
    leaves such text unchanged) and must still never carry a raw escape sequence."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def format_arg(value: Any, tag: str) -> str:
    """One argument as text, in a form that says its type where it is not obvious."""
    if tag in ("s", "S"):
        return _quote(value)
    if tag == "b":
        return "0x" + bytes(value).hex() if value else "0x"
    if tag == "f" or tag == "d":
        return repr(float(value))
    if tag == "t":
        return timetag.describe(int(value))
    if tag == "c":
        return repr(escape(value))
    if tag == "m":
        return "midi:" + "".join(f"{b:02x}" for b in value)
    if tag == "r":
        return f"rgba:{int(value):08x}"
    if tag == "T":
        return "true"
    if tag == "F":
        return "false"
    if tag == "N":
        return "nil"
    if tag == "I":
        return "inf"
    return escape(str(value))


def _quote(text: str) -> str:
    # Quote only when needed, so `hello` prints as hello but `hello world` stays one argument.
    safe = escape(text)
    if safe and " " not in safe and '"' not in safe:
        return safe
    return '"' + safe.replace('"', '\\"') + '"'


TOO_DEEP = "<arrays nested too deep>"
"""Shown instead of arguments nested deeper than the decoder allows (only a hand-made message
can be): the formatters must never recurse without bound (issue 20, item 3)."""


def _too_deep(types: str) -> bool:
    depth = 0
    for tag in types:
        depth += (tag == "[") - (tag == "]")
        if depth > MAX_ARRAY_DEPTH:
            return True
    return False


def format_args(message: Message) -> str:
    if "[" in message.types:
        if _too_deep(message.types):
            return TOO_DEEP
        # JSON escapes C0 controls, quotes and backslashes itself; printable() escapes what it
        # leaves raw (DEL, C1, invisible characters) without doubling its backslashes.
        return printable(json.dumps(_array_args(message), ensure_ascii=False))
    return " ".join(format_arg(value, tag) for value, tag in zip(message.args, message.types))


def headroom_ms(tag: int | None, now: float) -> float | None:
    """Milliseconds from ``now`` until the timetag (+ = in the future); None when immediate."""
    if tag is None or tag == timetag.IMMEDIATELY:
        return None
    return (timetag.to_unix(tag, now) - now) * 1000.0  # the era nearest now (RFC 5905 §6)


_SURROGATES = re.compile("[\ud800-\udfff]")


def json_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so its JSON is strict (RFC 8259 §8.2).

    A ``c`` (char) argument of 0xD800 decodes to a lone surrogate, which ``json`` writes as
    ``"\\ud800"``: jq refuses that line and ``dump --jsonl | jq`` died with it (issue 20, item 9).
    Strings decoded from UTF-8 never hold one; only chars and hand-made values can.
    """
    return _SURROGATES.sub("\ufffd", text)


def json_value(value: Any, tag: str) -> Any:
    """A JSON-friendly form of one argument (blobs as hex, timetags as hex, inf as a string)."""
    if isinstance(value, str):
        return json_text(value)
    if tag == "b":
        return bytes(value).hex()
    if tag == "t":
        return timetag.format_hex(int(value))
    if tag == "m":
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


_JSON_NATIVE_TAGS = frozenset("ihfdsTFN")


def json_args(message: Message) -> list[Any]:
    types = message.types
    if _JSON_NATIVE_TAGS.issuperset(types):
        # The common case, kept cheap: these values are JSON as they are, unless a float is
        # NaN or infinite (which JSON cannot say).
        args = message.args
        if ("f" not in types and "d" not in types) or all(
            math.isfinite(value) for value in args if isinstance(value, float)
        ):
            return list(args)
    if "[" in types:
        if _too_deep(types):
            return [TOO_DEEP]
        return _array_args(message)
    return [json_value(value, tag) for value, tag in zip(message.args, message.types)]


def _array_args(message: Message) -> list[Any]:
    """The arguments of a message with arrays, JSON-friendly, each value by its own type tag
    (a timetag in an array is hex as it is outside one, issue 28). An explicit stack of
    iterators, not recursion; the leaves are paired with the tags in order."""
    leaf_tags = iter([tag for tag in message.types if tag not in "[]"])
    root: list[Any] = []
    pending: list[tuple[Any, list[Any]]] = [(iter(message.args), root)]
    while pending:
        source, target = pending[-1]
        item = next(source, _DONE)
        if item is _DONE:
            pending.pop()
        elif isinstance(item, list):
            child: list[Any] = []
            target.append(child)
            pending.append((iter(item), child))
        else:
            target.append(json_value(item, next(leaf_tags, "")))
    return root


_DONE: Any = object()
