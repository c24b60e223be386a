"""Words for people: counts (``1 tick``, not ``1 ticks``) and warnings about dropped data (#13)."""

from __future__ import annotations

import os
import textwrap
from typing import TextIO

from oscsync.terminal.display import escape


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 tick"``, ``"0 ticks"``, ``"3 ticks"``; ``plural_form`` for irregular words."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


_PREVIEW = 32


def fit(text: str, width: int | None, indent: str = "  ") -> str:
    """``text`` wrapped at word boundaries to ``width`` columns, continuation lines indented by
    ``indent``; unchanged for None (not a terminal). Issue 30: on a 60-column terminal the
    notices broke mid-word."""
    if width is None:
        return text
    return "\n".join(
        textwrap.fill(
            line,
            width,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
            drop_whitespace=True,
        )
        if len(line) > width
        else line
        for line in text.split("\n")
    )


def terminal_width(stream: TextIO) -> int | None:
    """The columns of the terminal ``stream`` writes to, or None when it is not one."""
    try:
        if not stream.isatty():
            return None
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return columns or None


def milliseconds(seconds: float) -> str:
    """``0.1`` -> ``100 ms``, ``0.0052136`` -> ``5.214 ms``: to the microsecond, no trailing zeros
    (issue 30: ``--offset auto`` printed ``52.8859 ms``)."""
    return f"{round(seconds * 1000, 3):g} ms"


def drop_warning(reason: str, source: tuple[str, int], data: bytes, detail: str) -> str:
    """The once-per-reason warning for a dropped datagram (issue #13: drops were only counted).

    Everything from the datagram is escaped: it comes from the network.
    """
    where = f"{source[0]}:{source[1]}"
    if reason == "not-allowed":
        return (
            f"dropped a datagram from {where}: not in --allow (further ones are counted, "
            "see the summary)"
        )
    text = f"dropped a datagram from {where} that is not OSC ({escape(detail)})"
    preview = data[:_PREVIEW]
    if preview and all(32 <= byte < 127 or byte in (9, 10, 13) for byte in preview):
        # Plain text: most likely Pure Data's FUDI ([netsend] or [udpsend] without [packOSC]).
        shown = escape(preview.decode("ascii")) + ("..." if len(data) > _PREVIEW else "")
        text += f': it reads "{shown}" (text, e.g. from [netsend]: OSC needs [packOSC])'
    return text + "; further ones are counted, see the summary"
