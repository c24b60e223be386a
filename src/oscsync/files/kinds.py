"""Which of oscsync's JSON-lines files a file is, from its first line: a recording or a log.

Two commands write ``.jsonl`` files that a participant can easily swap (issue 30: the guide once
called both ``ticks.jsonl``): ``oscsync record`` writes a **recording** (a header line, then one
line per datagram; ``oscsync replay`` sends it again), and ``metronome listen --log`` /
``sequence listen --log`` write a **tick log** or an **event log** (one line per tick or event
played; ``oscsync stats`` summarises tick logs). A command given the other kind says which it is
and which command reads it, in one line, instead of failing on its first line.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Literal

Kind = Literal["recording", "tick log", "event log"]

_MAX_FIRST_LINE = 64 * 1024
"""Bytes read at most: every first line of these formats is far shorter."""


def file_kind(path: Path) -> Kind | None:
    """The kind of the file at ``path`` from its first non-blank line, or None (unknown,
    unreadable, or not JSON: the command reading it then says what is wrong as usual).

    Only a regular file is looked into: the first line of a pipe (``oscsync stats <(ssh pi cat
    ticks.jsonl)``), once read here, would be gone for the command, and opening a named pipe
    waits for a writer."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        with path.open("rb") as stream:
            line = b""
            while not line.strip():
                line = stream.readline(_MAX_FIRST_LINE)
                if not line:
                    return None
    except OSError:
        return None
    try:
        first = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(first, dict):
        return None
    if first.get("oscsync") == "recording":
        return "recording"
    if "onset" in first and "beat" in first:
        return "tick log"
    if "onset" in first and "voice" in first and "step" in first:
        return "event log"
    return None
