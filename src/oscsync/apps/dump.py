"""``oscsync dump``: one line per received message, as text for people or JSON lines for tools.

By default a line is printed when the message arrives. With ``--schedule`` each message goes
through a :class:`~oscsync.scheduler.Scheduler` first and is printed when its timetag comes due:
the line then starts with the time it was printed, and the timetag's offset is measured from
that moment (about zero, or minus how late it ran); JSON lines gain ``dispatched``,
``lateness_ms`` and ``late``: null when printed within 1 ms of its timetag, else
``"arrived"`` (it arrived after its timetag) or ``"played"`` (it arrived before it: this
machine printed it late) (:mod:`oscsync.lateness`).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from functools import partial
from typing import NamedTuple, TextIO

from oscsync.lateness import classify
from oscsync.net.core import TransportStats
from oscsync.osc import codec, timetag
from oscsync.osc.routing import Received
from oscsync.scheduler import Dispatch, Scheduler
from oscsync.terminal import display
from oscsync.terminal.wording import plural

Render = Callable[[float | None], str]
"""A line prepared at arrival: called with the time it is printed (None: on arrival)."""

_LOOKUP_CACHE_LIMIT = 1024
"""Entries kept by each small lookup cache below (sources, type strings); emptied when full, so
a peer cycling through addresses costs time, never memory. Each cache also bounds the size of
what one entry holds, so it is bounded in bytes too."""

_second_text: tuple[int, str] = (0, "00:00:00")  # the last whole second formatted, and its text


def clock_text(unix: float) -> str:
    """``HH:MM:SS.ffffff`` in UTC, exactly as ``datetime.fromtimestamp(unix, utc)`` shows it
    (microseconds rounded half to even), without building a datetime for every line: the
    ``HH:MM:SS`` part is formatted once per second (2.4 µs a line before, 0.5 µs now)."""
    global _second_text
    fraction, whole = math.modf(unix)
    micros = round(fraction * 1e6)
    second = int(whole)
    if micros >= 1_000_000:
        micros -= 1_000_000
        second += 1
    elif micros < 0:
        micros += 1_000_000
        second -= 1
    cached = _second_text
    if cached[0] != second:
        of_day = second % 86400
        text = f"{of_day // 3600:02d}:{of_day // 60 % 60:02d}:{of_day % 60:02d}"
        cached = _second_text = (second, text)
    return f"{cached[1]}.{micros:06d}"


_sources: dict[tuple[str, int], tuple[str, str]] = {}


def _source_texts(source: tuple[str, int]) -> tuple[str, str]:
    """``(text, json)`` forms of a source address: ``[::1]:9000`` and ``::1:9000``."""
    known = _sources.get(source)
    if known is None:
        host, port = source
        text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        known = (text, f"{host}:{port}")
        if len(_sources) >= _LOOKUP_CACHE_LIMIT:
            _sources.clear()
        _sources[source] = known
    return known


class _Tag(NamedTuple):
    """A timetag read once at arrival: its hex form and its Unix time (None: immediately)."""

    hex: str
    unix: float | None


def _read_tag(tag: int | None, now: float) -> _Tag | None:
    if tag is None:
        return None
    if tag == timetag.IMMEDIATELY:
        return _Tag(timetag.format_hex(tag), None)
    return _Tag(timetag.format_hex(tag), timetag.to_unix(tag, now))  # era nearest now


def _offset_text(tag: _Tag, reference: float) -> str:
    """`` (+1.500 ms)``: how far the timetag is from ``reference`` (+ = ahead), or ""."""
    if tag.unix is None:
        return ""
    return f" ({(tag.unix - reference) * 1000.0:+.3f} ms)"


def _message_text(message: codec.Message) -> str:
    types = message.types
    body = f"{display.escape(message.address)} ,{types}"
    if _NUMBER_TAGS.issuperset(types):
        # The common case: numbers print as Python shows them (what format_arg gives for
        # decoded i h f d values), 1 µs cheaper than format_args.
        return f"{body} {' '.join(map(repr, message.args))}" if types else body
    args = display.format_args(message)
    return f"{body} {args}" if args else body


def text_line(received: Received, now: float, dispatched: float | None = None) -> str:
    """``HH:MM:SS.ffffff  SOURCE  [@TIMETAG (+ms)]  /address ,types args`` (times in UTC).

    The time is the arrival, or ``dispatched`` (wall seconds) when the message was scheduled;
    the timetag's offset is from ``now``, or from ``dispatched`` when given.
    """
    return _text_finish(*_text_parts(received, now), dispatched)


def text_renderer(received: Received, now: float) -> Render:
    """Everything of :func:`text_line` that is known at arrival, done now; the returned function
    adds the time (and the timetag's offset from it) when the line is printed (issue 18:
    ``dump --schedule`` renders at arrival, so little more than the write is left at the due time).
    """
    return partial(_text_finish, *_text_parts(received, now))


def _text_parts(received: Received, now: float) -> tuple[float, float, str, _Tag | None, str]:
    message = received.message
    source = _source_texts(received.source)[0]
    tag = _read_tag(message.timetag, now)
    if tag is None:
        return received.arrival, now, f"  {source}  ", None, _message_text(message)
    shown = "immediately" if tag.unix is None else tag.hex
    return received.arrival, now, f"  {source}  @{shown}", tag, "  " + _message_text(message)


def _text_finish(
    arrival: float, now: float, head: str, tag: _Tag | None, tail: str, dispatched: float | None
) -> str:
    if dispatched is None:
        if tag is None:
            return clock_text(arrival) + head + tail
        return f"{clock_text(arrival)}{head}{_offset_text(tag, now)}{tail}"
    if tag is None:
        return clock_text(dispatched) + head + tail
    return f"{clock_text(dispatched)}{head}{_offset_text(tag, dispatched)}{tail}"


def json_line(received: Received, now: float, dispatched: float | None = None) -> str:
    """A stable JSON object per message (for jq and for replay).

    ``headroom_ms`` is measured from ``now`` (the arrival); a scheduled message also carries
    ``dispatched`` (wall seconds), ``lateness_ms`` (dispatch minus timetag, None if immediate)
    and ``late`` (``"arrived"``, ``"played"`` or None).
    """
    return _json_finish(*_json_head(received, now), now, dispatched)


def json_renderer(received: Received, now: float) -> Render:
    """:func:`json_line` in two steps, like :func:`text_renderer`: all but ``dispatched`` and
    ``lateness_ms`` (the last two keys) at arrival, those two when the line is printed."""
    return partial(_json_finish, *_json_head(received, now), now)


def _json_head(received: Received, now: float) -> tuple[str, float | None]:
    """The line up to its ``args`` (no closing brace), and the timetag's Unix time if any.

    The line is assembled from pre-encoded pieces instead of encoding a dict: this runs once per
    message and is the largest cost of ``dump --jsonl`` after decoding (see
    ``benchmarks/throughput.py``). Every piece is valid JSON on its own: numbers are finite
    floats or ints, strings go through the JSON string encoder, and type tags are ASCII letters
    (the decoder refuses anything else).
    """
    message = received.message
    tag = _read_tag(message.timetag, now)
    if tag is None:
        stamp = unix = ahead = "null"
        due = None
    else:
        stamp = f'"{tag.hex}"'
        due = tag.unix
        unix = "null" if due is None else repr(due)
        ahead = "null" if due is None else repr((due - now) * 1000.0)
    head = (
        f'{{"arrival":{received.arrival:.6f},"source":"{_source_texts(received.source)[1]}",'
        f'"timetag":{stamp},"timetag_unix":{unix},"headroom_ms":{ahead},'
        f'"address":{_string(message.address)},"types":"{message.types}",'
        f'"args":{_json_args(message)}'
    )
    return head, due


def _json_finish(head: str, due: float | None, arrival: float, dispatched: float | None) -> str:
    if dispatched is None:
        return head + "}"
    if due is None:
        return f'{head},"dispatched":{dispatched:.6f},"lateness_ms":null,"late":null}}'
    kind = classify(due, arrival, dispatched)
    late = '"arrived"' if kind.arrived_late else ('"played"' if kind.played_late else "null")
    lateness = repr((dispatched - due) * 1000.0)
    return f'{head},"dispatched":{dispatched:.6f},"lateness_ms":{lateness},"late":{late}}}'


class _Shape(NamedTuple):
    """What every plain message with one address and type string shares, rendered once."""

    json_middle: str
    """``,"timetag":null,...,"args":`` for that address and those types."""
    args_form: str | None
    """``[%r,%r]``: the args' JSON when they are all numbers (None: the general path)."""
    text_body: str
    """``/address ,types`` escaped, as :func:`_message_text` starts."""
    types: str


_shapes: dict[str, _Shape] = {}
_shapes_size = 0
_SHAPE_LIMIT = 256
"""An address and type string longer than this together are rendered every time, not
remembered (issue 27, item 6: shapes of 65 KB type strings)."""
_SHAPE_CACHE_BYTES = 1 << 20
"""Bytes the remembered shapes may hold, as :func:`_shape_cost` counts them; emptied when full."""


def _shape_cost(address: str, shape: _Shape) -> int:
    """The shape's strings, the address key, and ~400 bytes of tuple, str headers and dict slot."""
    rendered = shape.json_middle + shape.text_body + (shape.args_form or "")
    return len(rendered) + len(address) + len(shape.types) + 400


def _shape(address: str, types: str) -> _Shape:
    """The pieces for ``address`` and ``types``: remembered per address (with the types last
    seen there), rendered once instead of per message (issue 18: dump --jsonl 0.5 µs a line
    less, benchmarks/dump_path.py)."""
    shape = _shapes.get(address)
    if shape is None or shape.types != types:
        numbers = _NUMBER_TAGS.issuperset(types)
        shape = _Shape(
            '","timetag":null,"timetag_unix":null,"headroom_ms":null,'
            f'"address":{_string(address)},"types":"{types}","args":',
            "[" + ",".join(["%r"] * len(types)) + "]" if numbers else None,
            f"{display.escape(address)} ,{types}",
            types,
        )
        if len(address) + len(types) <= _SHAPE_LIMIT:
            _remember_shape(address, shape)
    return shape


def _remember_shape(address: str, shape: _Shape) -> None:
    global _shapes_size
    old = _shapes.get(address)
    if old is not None:
        _shapes_size -= _shape_cost(address, old)
    cost = _shape_cost(address, shape)
    if len(_shapes) >= _LOOKUP_CACHE_LIMIT or _shapes_size + cost > _SHAPE_CACHE_BYTES:
        _shapes.clear()
        _shapes_size = 0
    _shapes[address] = shape
    _shapes_size += cost


def _json_now(received: Received) -> str:
    message, source, arrival, _, _ = received
    address, args, types, tag = message
    if tag is not None:
        return _json_head(received, arrival)[0] + "}"
    # A plain message (the common case under a flood): :func:`_json_head` with the pieces that
    # depend only on the address and types rendered once (:func:`_shape`).
    shape = _shapes.get(address)
    if shape is None or shape.types != types:
        shape = _shape(address, types)
    middle, form, _, _ = shape
    if form is not None:
        # repr is what json writes for ints and finite floats; "inf" and "nan" (the only
        # reprs here with an "n") are not JSON, so those lines take the general path.
        text = form % args
        if "n" in text:
            text = _JSON.encode(display.json_args(message))
    else:
        text = _JSON.encode(display.json_args(message))
    known = _sources.get(source) or _source_texts(source)
    return f'{{"arrival":{arrival:.6f},"source":"{known[1]}{middle}{text}}}'


def _text_now(received: Received) -> str:
    message, source, arrival, _, _ = received
    address, args, types, tag = message
    if tag is not None:
        return _text_finish(*_text_parts(received, arrival), None)
    # A plain message (the common case under a flood): :func:`_text_parts` in one f-string,
    # with ``/address ,types`` rendered once per pair (:func:`_shape`).
    shape = _shapes.get(address)
    if shape is None or shape.types != types:
        shape = _shape(address, types)
    known = _sources.get(source) or _source_texts(source)
    if not types:
        return f"{clock_text(arrival)}  {known[0]}  {shape.text_body}"
    if shape.args_form is not None:
        # Numbers print as Python shows them (what format_arg gives for decoded i h f d).
        return f"{clock_text(arrival)}  {known[0]}  {shape.text_body} {' '.join(map(repr, args))}"
    rendered = display.format_args(message)
    return f"{clock_text(arrival)}  {known[0]}  {shape.text_body}" + (
        f" {rendered}" if rendered else ""
    )


_NUMBER_TAGS = frozenset("ihfd")
_number_formats: dict[str, str] = {}
_NUMBER_FORMAT_LIMIT = 64
"""Longer type strings get their format made each time: the cache holds at most
1,024 x ~500 bytes."""


def _json_args(message: codec.Message) -> str:
    types = message.types
    if _NUMBER_TAGS.issuperset(types):
        # Only numbers (the common case): one %-format per type string, 2 µs cheaper than the
        # JSON encoder. repr is what json writes for ints and finite floats; "inf" and "nan"
        # (the only reprs here with an "n") are not JSON, so those lines take the general path.
        form = _number_formats.get(types)
        if form is None:
            form = "[" + ",".join(["%r"] * len(types)) + "]"
            if len(types) <= _NUMBER_FORMAT_LIMIT:
                if len(_number_formats) >= _LOOKUP_CACHE_LIMIT:
                    _number_formats.clear()
                _number_formats[types] = form
        text = form % message.args
        if "n" not in text:
            return text
    return _JSON.encode(display.json_args(message))


# ASCII-only: a C1 control (U+009B is a one-byte CSI) in a string must not reach a terminal.
_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_string = json.encoder.encode_basestring_ascii  # the C string encoder json itself uses

_FLUSH_BYTES = 64 * 1024
"""Text a :class:`Dumper` keeps before writing it out even though more is arriving: a few
hundred lines per write system call under a flood, and a bound on what waits in memory."""


class Dumper:
    """Writes each message as it arrives; sets :attr:`done` after ``count`` messages.

    Lines are collected and written out by :meth:`flush` (one write for many lines under load,
    issue 18): the receive loop calls it when its socket has nothing more to read, so a line
    still appears as soon as its datagram is handled when traffic is light. With
    ``flush_each`` (a scheduled dump: each line is written at its due time) or without a
    receive loop to call :meth:`flush`, every line is written at once.
    Lines not printed are counted: :attr:`skipped` after ``count`` was reached or the reader
    went away (``| head``).
    """

    def __init__(
        self,
        out: TextIO,
        *,
        jsonl: bool = False,
        count: int | None = None,
        flush_each: bool = True,
    ) -> None:
        self.out = out
        self.renderer = json_renderer if jsonl else text_renderer
        self._line_now = _json_now if jsonl else _text_now
        self.count = count
        self.flush_each = flush_each
        self.written = 0
        self.skipped = 0
        self.output_closed = False
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        # Scheduled lines skip Python's text and buffer layers where that is safe: a pipe or a
        # file (a console may expect another encoding than the stream's bytes, e.g. Windows').
        self._fd = _plain_fd(out) if flush_each else None
        self._encoding = getattr(out, "encoding", None) or "utf-8"
        self._errors = getattr(out, "errors", None) or "strict"
        if self._fd is not None:
            out.flush()  # anything written through the stream before comes first
        self._accepted = 0  # lines taken for printing (written or pending), with --count
        self._pending: list[str] = []  # lines without their newline
        self._pending_size = 0
        self._batched = count is None and not flush_each  # print_now's common case

    def write(self, received: Received, now: float, dispatched: float | None = None) -> None:
        """Print one message; ``dispatched`` (wall seconds) when it was held by a scheduler."""
        self.emit(self.renderer(received, now), dispatched)

    def print_now(self, received: Received) -> None:
        """Print a message on arrival (a receive handler): its headroom from the arrival stamp.

        This runs for every message of an unscheduled dump: one call, rendering inlined."""
        line = self._line_now(received)  # pure: rendered outside the lock
        with self._lock:
            if self._stopped:
                self.skipped += 1
                return
            if self._batched:
                # :meth:`_collect` inlined for the common case, without --count (issue 18:
                # 0.3 µs a line).
                self._pending.append(line)
                self._pending_size += len(line) + 1
                if self._pending_size >= _FLUSH_BYTES:
                    self._write_pending()
                return
            self._collect(line)

    def emit(self, render: Render, dispatched: float | None = None) -> None:
        """Print a line prepared by :func:`text_renderer` or :func:`json_renderer`."""
        if self.flush_each:
            self._emit_at_once(render, dispatched)
            return
        with self._lock:
            if self._stopped:
                self.skipped += 1
                return
            self._collect(render(dispatched))

    def _collect(self, line: str) -> None:
        # Under the lock: keep the line (its newline is added when written) for the next
        # flush, write at once when it is the last one (--count) or the batch reached its bound.
        self._pending.append(line)
        self._pending_size += len(line) + 1
        self._accepted += 1
        if self.count is not None and self._accepted >= self.count:
            self._stop()
            self._write_pending()
        elif self.flush_each or self._pending_size >= _FLUSH_BYTES:
            self._write_pending()

    def _emit_at_once(self, render: Render, dispatched: float | None) -> None:
        # A scheduled line at its due time: the shortest way from the render to the write
        # system call. Into a pipe or a file that is os.write: write + flush through the
        # TextIOWrapper and BufferedWriter above it cost 4.5 µs a line here, os.write 1.1 µs.
        with self._lock:
            if self._stopped:
                self.skipped += 1
                return
            line = render(dispatched) + "\n"
            try:
                if self._fd is None:
                    self.out.write(line)
                    self.out.flush()
                else:
                    _write_all(self._fd, line.encode(self._encoding, self._errors))
            except BrokenPipeError:
                # `dump | head`: the reader is gone, which means "enough", not an error.
                self.skipped += 1
                self.output_closed = True
                self._stop()
                return
            self.written += 1
            self._accepted += 1
            if self.count is not None and self._accepted >= self.count:
                self._stop()

    def rehearse(self, render: Render, dispatched: float) -> None:
        """:meth:`emit`'s work without the write (a :data:`~oscsync.scheduler.Rehearsal`): the
        timer thread runs it just before the due time so the real line is formatted on warm
        caches (issue 18: 13 µs at the median after a spin, 2.3 µs rehearsed)."""
        line = render(dispatched) + "\n"
        if self._fd is not None:
            line.encode(self._encoding, self._errors)

    def _stop(self) -> None:
        self._stopped = True  # read for every message: a plain attribute, not Event.is_set()
        self.done.set()

    def flush(self) -> None:
        """Write out the lines collected so far (the receive loop's "nothing more to read")."""
        if self._pending:
            with self._lock:
                self._write_pending()

    def _write_pending(self) -> None:
        pending = self._pending
        if not pending:
            return
        if self.output_closed:
            self.skipped += len(pending)
            pending.clear()
            return
        text = pending[0] + "\n" if len(pending) == 1 else "\n".join(pending) + "\n"
        lines = len(pending)
        pending.clear()
        self._pending_size = 0
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            # `dump | head`: the reader is gone, which means "enough", not an error.
            self.skipped += lines
            self.output_closed = True
            self._stop()
        else:
            self.written += lines


def _plain_fd(out: TextIO) -> int | None:
    """``out``'s file descriptor if it is a pipe or a file (not a terminal), else None."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    return None if os.isatty(fd) else fd


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)  # a signal may cut a write short (PEP 475)
        data = data[written:]


def handler(dumper: Dumper, scheduler: Scheduler | None) -> Callable[[Received], None]:
    """What ``dump`` hands its endpoint: print on arrival, or (``--schedule``) hold each message
    in ``scheduler`` and print it when due."""
    if scheduler is not None:
        return scheduled(dumper, scheduler)
    # Printed on arrival: "how far ahead" is measured from the arrival stamp (one clock read
    # per message, not two).
    return dumper.print_now


def scheduled(dumper: Dumper, scheduler: Scheduler) -> Callable[[Received], None]:
    """A receive callback that holds each message in ``scheduler`` and prints it when due.

    The line is rendered on arrival, all but its print time (issue 18): at the due time the
    timer thread adds that and writes.
    """
    clock = scheduler.clock
    to_wall = clock.monotonic_to_wall
    renderer = dumper.renderer
    emit = dumper.emit
    rehearse = dumper.rehearse

    def on_message(received: Received) -> None:
        render = renderer(received, received.arrival)

        def show(dispatch: Dispatch) -> None:
            emit(render, to_wall(dispatch.dispatched))

        def rehearsal(dispatch: Dispatch) -> None:
            rehearse(render, to_wall(dispatch.dispatched))

        # The held message is declared in bytes: the scheduler caps those as well as items.
        scheduler.submit(
            received.timetag, show, size=codec.footprint(received.message), rehearsal=rehearsal
        )

    return on_message


def summary(stats: TransportStats, written: int, not_printed: int = 0) -> str:
    """One line for stderr when dump stops.

    Every datagram sent to dump is in it (issue 18): messages printed, received but
    ``not_printed`` (after ``--count``, or once the reader closed the pipe), and datagrams dropped
    by reason, including those the kernel dropped and those still queued at close.
    """
    # Over TCP the unit is a framed packet, and how many connections brought them counts too.
    unit = "packet" if stats.connections else "datagram"
    over = f" over {plural(stats.connections, 'TCP connection')}" if stats.connections else ""
    text = (
        f"dump: {plural(written, 'message')} printed; received "
        f"{plural(stats.messages, 'message')} in {plural(stats.datagrams, unit)}{over} "
        f"({plural(stats.bundles, 'bundle')})"
    )
    if not_printed:
        text += f", {not_printed} not printed (after --count or the output closed)"
    if answered := sum(stats.answered.values()):
        # Another oscsync measuring this one's clock (`oscsync clock`): not printed, answered.
        text += f", {plural(answered, 'clock ping')} answered"
    if stats.drops:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.drops.items()))
        text += f"; dropped {stats.dropped} ({reasons})"
    else:
        text += "; dropped 0"
    if note := stats.platform_note():
        text += f" ({note})"
    if note := stats.connection_note():
        text += f"; {note}"
    return text
