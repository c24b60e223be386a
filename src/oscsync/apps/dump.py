"""``oscsync dump``: one line per received message, as text for people or JSON lines for tools.

By default a line is printed when the message arrives. With ``--schedule`` each message goes
through a :class:`~oscsync.scheduler.Scheduler` first and is printed when its timetag comes due:
the line then starts with the time it was printed, and the timetag's offset is measured from
that moment (about zero, or minus how late it ran); JSON lines gain ``dispatched`` and
``lateness_ms``.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Callable
from typing import TextIO

from oscsync import codec, display, timetag
from oscsync.scheduler import Dispatch, Scheduler
from oscsync.transport import EndpointStats, Received
from oscsync.wording import plural


def _clock_text(unix: float) -> str:
    stamp = _dt.datetime.fromtimestamp(unix, tz=_dt.timezone.utc)
    return stamp.strftime("%H:%M:%S.%f")


def text_line(received: Received, now: float, dispatched: float | None = None) -> str:
    """``HH:MM:SS.ffffff  SOURCE  [@TIMETAG (+ms)]  /address ,types args`` (times in UTC).

    The time is the arrival, or ``dispatched`` (wall seconds) when the message was scheduled;
    the timetag's offset is from ``now``, or from ``dispatched`` when given.
    """
    message = received.message
    host, port = received.source
    source = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    parts = [_clock_text(received.arrival if dispatched is None else dispatched), source]
    if message.timetag is not None:
        ahead = display.headroom_ms(message.timetag, now if dispatched is None else dispatched)
        when = "" if ahead is None else f" ({ahead:+.3f} ms)"
        parts.append(f"@{timetag.describe(message.timetag)}{when}")
    body = f"{display.escape(message.address)} ,{message.types}"
    args = display.format_args(message)
    parts.append(f"{body} {args}" if args else body)
    return "  ".join(parts)


def json_line(received: Received, now: float, dispatched: float | None = None) -> str:
    """A stable JSON object per message (for jq and for replay).

    ``headroom_ms`` is measured from ``now`` (the arrival); a scheduled message also carries
    ``dispatched`` (wall seconds) and ``lateness_ms`` (dispatch minus timetag, None if immediate).

    The line is assembled from pre-encoded pieces instead of encoding a dict: this runs once per
    message and is the largest cost of ``dump --jsonl`` after decoding (see
    ``benchmarks/throughput.py``). Every piece is valid JSON on its own: numbers are finite
    floats or ints, strings go through the JSON string encoder, and type tags are ASCII letters
    (the decoder refuses anything else).
    """
    message = received.message
    tag = message.timetag
    host, port = received.source
    if tag is None:
        stamp = unix = "null"
    else:
        stamp = f'"{timetag.format_hex(tag)}"'
        unix = "null" if tag == timetag.IMMEDIATELY else repr(timetag.to_unix(tag, now))
    ahead = display.headroom_ms(tag, now)
    line = (
        f'{{"arrival":{received.arrival:.6f},"source":"{host}:{port}","timetag":{stamp},'
        f'"timetag_unix":{unix},"headroom_ms":{_number(ahead)},'
        f'"address":{_string(message.address)},"types":"{message.types}",'
        f'"args":{_JSON.encode(display.json_args(message))}'
    )
    if dispatched is not None:
        ahead_at_dispatch = display.headroom_ms(tag, dispatched)
        lateness = None if ahead_at_dispatch is None else -ahead_at_dispatch
        line += f',"dispatched":{dispatched:.6f},"lateness_ms":{_number(lateness)}'
    return line + "}"


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)


# ASCII-only: a C1 control (U+009B is a one-byte CSI) in a string must not reach a terminal.
_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_string = json.encoder.encode_basestring_ascii  # the C string encoder json itself uses


class Dumper:
    """Writes each message as it arrives; sets :attr:`done` after ``count`` messages."""

    def __init__(self, out: TextIO, *, jsonl: bool = False, count: int | None = None) -> None:
        self.out = out
        self.format = json_line if jsonl else text_line
        self.count = count
        self.written = 0
        self.output_closed = False
        self.done = threading.Event()
        self._lock = threading.Lock()

    def write(self, received: Received, now: float, dispatched: float | None = None) -> None:
        """Print one message; ``dispatched`` (wall seconds) when it was held by a scheduler."""
        with self._lock:
            if self.done.is_set():
                return
            try:
                self.out.write(self.format(received, now, dispatched) + "\n")
                self.written += 1
                if self.count is not None and self.written >= self.count:
                    self.done.set()
                    self.out.flush()
            except BrokenPipeError:
                # `dump | head`: the reader is gone, which means "enough", not an error.
                self.output_closed = True
                self.done.set()


def handler(dumper: Dumper, scheduler: Scheduler | None) -> Callable[[Received], None]:
    """What ``dump`` hands its endpoint: print on arrival, or (``--schedule``) hold each message
    in ``scheduler`` and print it when due."""
    if scheduler is not None:
        return scheduled(dumper, scheduler)

    def on_message(received: Received) -> None:
        # Printed on arrival: "how far ahead" is measured from the arrival stamp (one clock
        # read per message, not two).
        dumper.write(received, received.arrival)

    return on_message


def scheduled(dumper: Dumper, scheduler: Scheduler) -> Callable[[Received], None]:
    """A receive callback that holds each message in ``scheduler`` and prints it when due."""
    clock = scheduler.clock

    def on_message(received: Received) -> None:
        def show(dispatch: Dispatch) -> None:
            dumper.write(received, received.arrival, clock.monotonic_to_wall(dispatch.dispatched))

        # The held message is declared in bytes: the scheduler caps those as well as items.
        scheduler.submit(received.timetag, show, size=codec.footprint(received.message))

    return on_message


def summary(stats: EndpointStats, written: int) -> str:
    """One line for stderr when dump stops."""
    text = (
        f"dump: {plural(written, 'message')} printed; received "
        f"{plural(stats.messages, 'message')} in {plural(stats.datagrams, 'datagram')} "
        f"({plural(stats.bundles, 'bundle')})"
    )
    if stats.drops:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.drops.items()))
        text += f"; dropped {stats.dropped} ({reasons})"
    else:
        text += "; dropped 0"
    if note := stats.platform_note():
        text += f" ({note})"
    return text
