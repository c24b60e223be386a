"""The recording format: OSC datagrams kept byte-exact with their arrival times, as JSON lines.

A recording is UTF-8 text, one JSON object per line (``jq`` reads it as it is), written by
``oscsync record`` and read by ``oscsync replay``. It is append-only and streaming: every line is
complete on its own, so a recording cut short by a crash or Ctrl-C keeps every line before the
cut, and a file can be read while it is still being written. Version 1 (issue #15):

* **header** (first line)::

    {"oscsync":"recording","version":1,"host":"studio","clock":"system",
     "started_unix":1795779000.123456,"listen":"127.0.0.1:9001","software":"oscsync 0.1.0"}

  ``clock`` says which clock stamped the times (``system``, or ``skewed`` when ``--clock-skew``
  or ``--clock-drift`` were given).
* **one line per datagram**::

    {"m":0.012345678,"t":1795779000.135802,"from":"127.0.0.1:50123","size":20,
     "raw":"L3RpY2sAAAAsaQAAAAAAAQ==",
     "osc":[{"address":"/tick","types":"i","args":[1],"timetag":null}]}

  ``m`` is the arrival in seconds since the recording started, on the monotonic clock (never
  jumps: replay times come from it); ``t`` the arrival as wall time (Unix seconds, UTC);
  ``raw`` the datagram's bytes in base64, exactly as received; ``osc`` the decoded view for
  people and ``jq`` (``timetag`` in liblo's hex notation, or null for a plain message). A
  datagram that is not valid OSC is kept too (a recording is for reproducing bugs), with
  ``"osc":null`` and ``"error"`` naming the reason. A view longer than :data:`MAX_VIEW` (only
  a TCP packet's can be) is left out: ``"osc":null,"view_omitted":N`` says how long it was.
  A line is at most :data:`MAX_LINE` characters, whatever arrived.
* **closing line** (written when recording stops cleanly)::

    {"end":true,"m":10.0,"datagrams":500000,"bytes":10000000,"dropped":{"kernel-buffer-full":12},
     "dropped_total":12,"malformed":{}}

  ``dropped`` counts datagrams that reached this machine but are not in the file, by reason
  (the same counters as ``oscsync dump``, kernel drops included), so received by the kernel =
  ``datagrams`` + ``dropped_total``. ``malformed`` counts the kept datagrams that are not OSC.

Readers take a newer minor field as it comes (unknown keys are ignored) and refuse a newer
``version``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from oscsync.net.framing import DEFAULT_MAX_FRAME
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.outfile import WholeRecords
from oscsync.terminal import display

FORMAT_NAME = "recording"
VERSION = 1
FLUSH_INTERVAL = 0.1
"""Seconds between flushes while datagrams keep arriving: what a crash can lose at most, and how
stale a reader following the file sees it. Flushing per line cost ~3 µs per datagram (a write
system call each), a sixth of the 50,000 msg/s budget."""

MAX_DATAGRAM = DEFAULT_MAX_FRAME
"""Largest datagram a recording holds: a TCP listener's largest frame (16 MiB); UDP's is 64 KiB."""
MAX_VIEW = 512 * 1024
"""Longest decoded view (``osc``) written: a UDP datagram's view always fits (at most 6
characters per byte, a string of control characters); a larger one (a TCP packet) is left out,
with ``"osc":null,"view_omitted":CHARACTERS``, its ``raw`` bytes being what counts."""
MAX_LINE = 4 * -(-MAX_DATAGRAM // 3) + MAX_VIEW + 4096
"""Longest line a reader accepts: the longest a writer makes (the largest datagram in base64,
the longest view and the other fields), so whatever ``record`` writes ``replay`` reads (issue
27, item 11: a TCP recording of a 1 MB packet made a 3.3 MB line, refused at 1 MiB)."""

_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)
_string = json.encoder.encode_basestring_ascii


class DatagramFileError(ValueError):
    """A file of datagrams that cannot be read (a recording, a capture): where (``position``,
    1-based, in the file's ``unit``; 0: nowhere in particular), why (``reason``, a short key
    for counts and tests) and what to tell the user (``detail``)."""

    unit = "line"

    def __init__(self, position: int, reason: str, detail: str) -> None:
        where = f"{self.unit} {position}: " if position else ""
        super().__init__(f"{where}{detail}")
        self.position = position
        self.reason = reason
        self.detail = detail


class RecordingError(DatagramFileError):
    """A file that is not a readable recording; ``line`` is the 1-based line number (0: none)."""

    @property
    def line(self) -> int:
        return self.position


@dataclass(frozen=True)
class Datagram:
    """One datagram as kept: its bytes, its arrival and where it came from.

    ``offset`` is seconds since the recording (or capture) started on a clock that does not jump;
    ``wall`` the arrival in Unix seconds; ``line`` where it was read (line of a recording, frame
    number of a capture), for messages about it; ``destination`` the ``HOST:PORT`` it was sent
    to, when a capture says so.
    """

    offset: float
    data: bytes
    source: str = ""
    wall: float | None = None
    line: int = 0
    destination: str = ""


# -- writing ----------------------------------------------------------------------------------


def header_line(*, host: str, clock: str, started_unix: float, listen: str, software: str) -> str:
    return _JSON.encode(
        {
            "oscsync": FORMAT_NAME,
            "version": VERSION,
            "host": host,
            "clock": clock,
            "started_unix": round(started_unix, 6),
            "listen": listen,
            "software": software,
        }
    )


def datagram_line(offset: float, wall: float, source: str, data: bytes) -> tuple[str, str | None]:
    """The line for one datagram, and the reason it is not OSC (None when it is)."""
    raw = base64.b64encode(data).decode("ascii")
    head = f'{{"m":{offset:.9f},"t":{wall:.6f},"from":{_string(source)},"size":{len(data)},'
    try:
        messages = codec.decode(data)
    except codec.DecodeError as exc:
        return f'{head}"raw":"{raw}","osc":null,"error":"{exc.reason}"}}', exc.reason
    except Exception:  # python-osc raising something unforeseen must not stop a recording
        return f'{head}"raw":"{raw}","osc":null,"error":"undecodable"}}', "undecodable"
    views = ",".join(_message_view(message) for message in messages)
    if len(views) > MAX_VIEW:
        return f'{head}"raw":"{raw}","osc":null,"view_omitted":{len(views) + 2}}}', None
    return f'{head}"raw":"{raw}","osc":[{views}]}}', None


def _message_view(message: codec.Message) -> str:
    tag = "null" if message.timetag is None else f'"{tt.format_hex(message.timetag)}"'
    try:
        args = _JSON.encode(display.json_args(message))
    except (TypeError, ValueError):
        args = _JSON.encode([repr(value) for value in message.args])
    return (
        f'{{"address":{_string(message.address)},"types":{_string(message.types)},'
        f'"args":{args},"timetag":{tag}}}'
    )


def closing_line(
    *,
    offset: float,
    datagrams: int,
    size: int,
    dropped: Mapping[str, int],
    malformed: Mapping[str, int],
) -> str:
    return _JSON.encode(
        {
            "end": True,
            "m": round(offset, 9),
            "datagrams": datagrams,
            "bytes": size,
            "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            "malformed": dict(sorted(malformed.items())),
        }
    )


@dataclass
class WriterStats:
    datagrams: int = 0
    bytes: int = 0
    malformed: Counter[str] = field(default_factory=Counter)


class RecordingWriter:
    """Appends datagram lines to an open text file; thread-safe; flushes every FLUSH_INTERVAL.

    ``monotonic_start`` is the monotonic reading that is offset 0. :meth:`add` runs on the receive
    thread; :meth:`flush` and :meth:`close` may be called from another. A write that fails (a
    full disk) raises OSError once: the file is then cut back to its last whole line and closed
    (:class:`~oscsync.outfile.WholeRecords`), :attr:`error` keeps the error and :attr:`lost`
    counts the datagrams that had been handed to the file but are not in it; nothing more is
    written, not even the closing line (a recording without one is cut short, and every line
    in it is whole).
    """

    def __init__(self, out: IO[str], monotonic_start: float) -> None:
        self.out = out
        self.monotonic_start = monotonic_start
        self.stats = WriterStats()
        self.error: OSError | None = None
        self.lost = 0
        self.lost_bytes = 0
        self._records = WholeRecords()
        self._lock = threading.Lock()
        self._last_flush = monotonic_start
        self._closed = False

    def write_header(self, **fields: Any) -> None:
        with self._lock:
            text = header_line(**fields) + "\n"
            self.out.write(text)
            self.out.flush()
            self._records.added(len(text))
            self._records.flushed()

    def add(self, data: bytes, source: str, wall: float, monotonic: float) -> None:
        line, error = datagram_line(monotonic - self.monotonic_start, wall, source, data)
        with self._lock:
            if self._closed:
                return
            try:
                self.out.write(line + "\n")
                self._records.added(len(line) + 1, len(data))
                stats = self.stats
                stats.datagrams += 1
                stats.bytes += len(data)
                if error is not None:
                    stats.malformed[error] += 1
                if monotonic - self._last_flush >= FLUSH_INTERVAL or self._records.must_flush:
                    self._last_flush = monotonic
                    self._flush()
            except OSError as exc:
                self._fail(exc)
                raise

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                try:
                    self._flush()
                except OSError as exc:
                    self._fail(exc)
                    raise

    def _flush(self) -> None:
        self.out.flush()
        self._records.flushed()

    def _fail(self, exc: OSError, closing: bool = False) -> None:
        """Cut the file back to its last whole line; ``closing``: the closing line was the last
        thing written (it is no datagram, lost or not)."""
        self.error = exc
        self._closed = True
        handed = self._records.records_handed
        self.lost, self.lost_bytes = self._records.cut(self.out)
        if closing and self._records.records_handed < handed:
            self.lost -= 1
        self.stats.datagrams -= self.lost
        self.stats.bytes -= self.lost_bytes

    def close(self, monotonic_end: float, dropped: Mapping[str, int]) -> None:
        """Write the closing line (with the loss counts) and flush; later adds are ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            text = (
                closing_line(
                    offset=monotonic_end - self.monotonic_start,
                    datagrams=self.stats.datagrams,
                    size=self.stats.bytes,
                    dropped=dropped,
                    malformed=self.stats.malformed,
                )
                + "\n"
            )
            # Counted as handed before the write, which may raise: _fail then takes the closing
            # line off what was lost, and must find it there.
            self._records.added(len(text))
            try:
                self.out.write(text)
                self._flush()
            except OSError as exc:
                self._fail(exc, closing=True)
                raise


# -- reading ----------------------------------------------------------------------------------


@dataclass
class ReadReport:
    """What a reader saw besides datagrams: the header, the closing line, and skipped lines."""

    header: dict[str, Any] = field(default_factory=dict)
    closing: dict[str, Any] | None = None
    skipped: Counter[str] = field(default_factory=Counter)
    first_skipped_line: int = 0


def looks_like_recording(start: bytes) -> bool:
    return start.lstrip()[:1] == b"{"


def read_recording(
    lines: IO[str], *, skip_bad: bool = False, report: ReadReport | None = None
) -> Iterator[Datagram]:
    """The datagrams of a recording, in file order, read lazily (a file of any size).

    A bad header always raises :class:`RecordingError` (the file is not a recording, or a newer
    one). A bad datagram line raises it too, naming the line, unless ``skip_bad``: then the line
    is counted in ``report.skipped`` by reason and reading goes on (a line longer than
    :data:`MAX_LINE` too: read past in pieces, never held whole).
    """
    report = report if report is not None else ReadReport()
    number = 0
    while text := lines.readline(MAX_LINE + 1):
        number += 1
        try:
            if len(text) > MAX_LINE:
                # Not a recording (a binary file with no newline for megabytes), or damage:
                # never read whole into memory. Skipped up to its end with skip_bad.
                if number == 1 or not skip_bad:
                    raise RecordingError(
                        number, "too-long", f"line longer than {MAX_LINE:,} characters"
                    )
                while text and not text.endswith("\n"):
                    text = lines.readline(MAX_LINE + 1)
                raise RecordingError(number, "too-long", f"line longer than {MAX_LINE:,}")
            if number == 1:
                report.header = _parse_header(text)
                continue
            if not text.strip():
                continue
            obj = _parse_line(number, text)
            if obj.get("end") is True:
                report.closing = obj
                continue
            datagram = _datagram(number, obj)
        except RecordingError as exc:
            if not skip_bad or number == 1:
                raise
            report.skipped[exc.reason] += 1
            report.first_skipped_line = report.first_skipped_line or exc.line
            continue
        yield datagram
    if number == 0:
        raise RecordingError(0, "empty", "the file is empty (not a recording)")


def _parse_header(text: str) -> dict[str, Any]:
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested 100,000 deep
        header = None
    if not isinstance(header, dict) or header.get("oscsync") != FORMAT_NAME:
        raise RecordingError(
            1, "not-a-recording", "not an oscsync recording (no recording header on line 1)"
        )
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordingError(1, "bad-version", f"the header's version {version!r} is not valid")
    if version > VERSION:
        raise RecordingError(
            1,
            "newer-version",
            f"recording version {version} is newer than this oscsync reads ({VERSION}); "
            "upgrade oscsync",
        )
    return header


def _parse_line(number: int, text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        if not text.endswith("\n"):
            raise RecordingError(
                number, "truncated", "the last line is cut short (recording interrupted?)"
            ) from None
        raise RecordingError(number, "damaged", "damaged line (not JSON)") from None
    if not isinstance(obj, dict):
        raise RecordingError(number, "damaged", "damaged line (not a JSON object)")
    return obj


def _datagram(number: int, obj: dict[str, Any]) -> Datagram:
    offset, raw, wall = _seconds(obj.get("m")), obj.get("raw"), _seconds(obj.get("t"))
    if offset is None or offset < 0:
        raise RecordingError(number, "damaged", "no valid arrival time 'm'")
    if not isinstance(raw, str):
        raise RecordingError(number, "damaged", "no datagram bytes 'raw'")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise RecordingError(number, "damaged", "'raw' is not valid base64") from None
    if not data:
        raise RecordingError(number, "damaged", "'raw' holds no bytes")
    source = obj.get("from")
    return Datagram(
        offset=offset,
        data=data,
        source=source if isinstance(source, str) else "",
        wall=wall,
        line=number,
    )


def _seconds(value: Any) -> float | None:
    """A finite number of seconds from a JSON value, or None (1e400 parses as inf)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer with 400 digits
        return None
    return seconds if math.isfinite(seconds) else None
