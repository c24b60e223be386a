"""``oscsync dump``: one line per received message, as text for people or JSON lines for tools."""

from __future__ import annotations

import datetime as _dt
import json
import threading
from typing import TextIO

from oscsync import display, timetag
from oscsync.transport import EndpointStats, Received


def _clock_text(unix: float) -> str:
    stamp = _dt.datetime.fromtimestamp(unix, tz=_dt.timezone.utc)
    return stamp.strftime("%H:%M:%S.%f")


def text_line(received: Received, now: float) -> str:
    """``HH:MM:SS.ffffff  SOURCE  [@TIMETAG (+ms)]  /address ,types args`` (times in UTC)."""
    message = received.message
    host, port = received.source
    source = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    parts = [_clock_text(received.arrival), source]
    if message.timetag is not None:
        ahead = display.headroom_ms(message.timetag, now)
        when = "" if ahead is None else f" ({ahead:+.3f} ms)"
        parts.append(f"@{timetag.describe(message.timetag)}{when}")
    body = f"{display.escape(message.address)} ,{message.types}"
    args = display.format_args(message)
    parts.append(f"{body} {args}" if args else body)
    return "  ".join(parts)


def json_line(received: Received, now: float) -> str:
    """A stable JSON object per message (for jq and for replay)."""
    message = received.message
    tag = message.timetag
    record = {
        "arrival": round(received.arrival, 6),
        "source": f"{received.source[0]}:{received.source[1]}",
        "timetag": None if tag is None else timetag.format_hex(tag),
        "timetag_unix": None if tag is None or tag == timetag.IMMEDIATELY else timetag.to_unix(tag),
        "headroom_ms": display.headroom_ms(tag, now),
        "address": message.address,
        "types": message.types,
        "args": display.json_args(message),
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class Dumper:
    """Writes each message as it arrives; sets :attr:`done` after ``count`` messages."""

    def __init__(self, out: TextIO, *, jsonl: bool = False, count: int | None = None) -> None:
        self.out = out
        self.format = json_line if jsonl else text_line
        self.count = count
        self.written = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def write(self, received: Received, now: float) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self.out.write(self.format(received, now) + "\n")
            self.written += 1
            if self.count is not None and self.written >= self.count:
                self.done.set()
                self.out.flush()


def summary(stats: EndpointStats, written: int) -> str:
    """One line for stderr when dump stops."""
    text = (
        f"dump: {written} messages printed; received {stats.messages} messages in "
        f"{stats.datagrams} datagrams ({stats.bundles} bundles)"
    )
    if stats.drops:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.drops.items()))
        text += f"; dropped {stats.dropped} ({reasons})"
    else:
        text += "; dropped 0"
    return text
