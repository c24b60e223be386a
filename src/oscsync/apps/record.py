"""``oscsync record``: keep every datagram that arrives, byte-exact, with its arrival time.

The endpoint hands each datagram over undecoded (``Endpoint.start(on_datagram=...)``) on its
receive thread; the :class:`Recorder` appends one line per datagram to the recording (format in
:mod:`oscsync.files.recording`) and, if asked, one packet to a pcap (:mod:`oscsync.files.pcap`).
Nothing is queued in memory: a line is formatted and handed to the file's buffer at once, and
the buffer is flushed every :data:`~oscsync.files.recording.FLUSH_INTERVAL`, so memory stays
flat however long the recording runs (``benchmarks/record_replay.py``). Losses are the
endpoint's drop counters, the same ones ``dump`` prints (kernel drops included); they go into
the recording's closing line.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from typing import IO

from oscsync import __version__
from oscsync.clock import Clock
from oscsync.files.pcap import PcapWriter
from oscsync.files.recording import FLUSH_INTERVAL, RecordingWriter
from oscsync.terminal.wording import plural


def format_source(source: tuple[str, int]) -> str:
    host, port = source
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def clock_kind(clock: Clock) -> str:
    """``system``, ``skewed`` or ``fake``: which clock stamped a recording's times."""
    return type(clock).__name__.removesuffix("Clock").lower() or "custom"


class Recorder:
    """Writes each datagram it is given; sets :attr:`done` after ``count`` or on a write failure.

    ``destination`` is the listening ``HOST:PORT``, written as each pcap packet's destination.
    A write that fails (a full disk) stops the recording: the file is cut back to its last
    whole record (:class:`~oscsync.outfile.WholeRecords`), :attr:`failure` and
    :attr:`failed_output` (``recording`` or ``pcap``) say what happened, and
    :attr:`not_recorded` counts the datagrams that arrived but are not in that file: those the
    file's buffer still held, and those that came after.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        recording: IO[str] | None = None,
        pcap: IO[bytes] | None = None,
        destination: str = "0.0.0.0:0",
        count: int | None = None,
    ) -> None:
        self.clock = clock
        self.started_monotonic = clock.monotonic()
        self.started_wall = clock.monotonic_to_wall(self.started_monotonic)
        self.writer = RecordingWriter(recording, self.started_monotonic) if recording else None
        self.pcap = PcapWriter(pcap) if pcap is not None else None
        self.destination = destination
        self.count = count
        self.recorded = 0
        self.bytes = 0
        self.not_in_pcap = 0
        """Packets too large for the pcap's UDP (TCP packets over 64 KiB): in the recording only."""
        self.not_recorded = 0
        self.arrived = 0
        """Datagrams handed to :meth:`on_datagram` before --count was reached."""
        self.done = threading.Event()
        self.failure: OSError | None = None
        self.failed_output = ""
        self._lock = threading.Lock()
        self._last_pcap_flush = self.started_monotonic

    def write_header(self, listen: str) -> None:
        if self.writer is not None:
            try:
                self.writer.write_header(
                    host=socket.gethostname(),
                    clock=clock_kind(self.clock),
                    started_unix=self.started_wall,
                    listen=listen,
                    software=f"oscsync {__version__}",
                )
            except OSError as exc:  # a disk full from the start: the same one line
                self._failed(exc, "recording")

    def on_datagram(self, data: bytes, source: tuple[str, int], arrival: float) -> None:
        """The endpoint's datagram hook: runs on the receive thread."""
        if self.done.is_set():
            if self.failure is not None:
                self.arrived += 1
                self.not_recorded += 1  # what still arrives after a failed write is lost
            return  # past --count: what still arrives is not recorded
        self.arrived += 1
        monotonic = self.clock.wall_to_monotonic(arrival)
        where = format_source(source)
        if self.writer is not None:
            try:
                self.writer.add(data, where, arrival, monotonic)
            except OSError as exc:
                self._failed(exc, "recording")
                return
        in_pcap = True
        if self.pcap is not None:
            try:
                with self._lock:
                    in_pcap = self.pcap.add(round(arrival * 1e9), data, where, self.destination)
                    if monotonic - self._last_pcap_flush >= FLUSH_INTERVAL:
                        self._last_pcap_flush = monotonic
                        self.pcap.flush()
            except OSError as exc:
                self._failed(exc, "pcap")
                if self.writer is None:
                    return
        if not in_pcap:
            self.not_in_pcap += 1
            if self.writer is None:
                return  # kept nowhere: counted, not recorded
        self.recorded += 1
        self.bytes += len(data)
        if self.count is not None and self.recorded >= self.count:
            self.done.set()

    def _failed(self, exc: OSError, output: str) -> None:
        """Stop after a failed write to ``output`` (cut back to its last whole record): count
        what is in that file and what arrived but is not (when the pcap alone failed, the
        recording still holds everything and the summary's count stays the recording's)."""
        if self.failure is None:
            self.failure, self.failed_output = exc, output
        self.done.set()
        if output == "recording" and self.writer is not None:
            in_file, content = self.writer.stats.datagrams, self.writer.stats.bytes
            left_out = 0
        elif self.pcap is not None:
            with self._lock:
                self.pcap.cut()
                records = self.pcap.records
                in_file, content = records.records_on_disk - 1, records.content_on_disk  # header
            left_out = self.not_in_pcap
        else:
            return
        self.not_recorded = self.arrived - in_file - left_out
        if output == "recording" or self.writer is None:  # the file the summary counts
            self.recorded, self.bytes = in_file, content

    def flush(self) -> None:
        """Push what is buffered to the files (called a few times a second while idle)."""
        if self.failure is not None:
            return
        try:
            if self.writer is not None:
                self.writer.flush()
        except OSError as exc:
            self._failed(exc, "recording")
            return
        try:
            if self.pcap is not None:
                with self._lock:
                    self.pcap.flush()
        except OSError as exc:
            self._failed(exc, "pcap")

    def close(self, dropped: Mapping[str, int]) -> None:
        """Write the closing line with the loss counts; call after the endpoint is closed."""
        if self.failure is not None:
            return  # the file that failed was cut back and closed; the other one is complete
        self.flush()
        try:
            if self.writer is not None and self.failure is None:
                self.writer.close(self.clock.monotonic(), dropped)
        except OSError as exc:
            self._failed(exc, "recording")

    def summary(self, dropped: Mapping[str, int], elapsed: float, note: str = "") -> str:
        """One line for stderr when record stops (``note``: the TCP connections the listener
        closed, :meth:`~oscsync.net.core.TransportStats.connection_note`)."""
        recorded = plural(self.recorded, "datagram")
        text = f"record: {recorded} ({self.bytes} bytes) in {elapsed:.1f} s"
        total = sum(dropped.values())
        if total:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
            text += f"; dropped {total} ({reasons})"
        else:
            text += "; dropped 0"
        if self.failure is not None:
            text += f"; not recorded {self.not_recorded} (the {self.failed_output} write failed)"
        if self.writer is not None and self.writer.stats.malformed:
            text += f"; {sum(self.writer.stats.malformed.values())} kept were not valid OSC"
        if self.not_in_pcap:
            text += (
                f"; {self.not_in_pcap} larger than a UDP datagram were left out of the pcap"
                if self.writer is not None
                else f"; {self.not_in_pcap} larger than a UDP datagram were not written"
            )
        if note:
            text += f"; {note}"
        return text

    def failure_text(self, path: str) -> str:
        """The one ``Error:`` line for a failed write to ``path`` (the :attr:`failed_output`)."""
        assert self.failure is not None
        why = self.failure.strerror or str(self.failure) or type(self.failure).__name__
        kept = self.recorded if self.failed_output == "recording" or self.writer is None else None
        holds = f"it holds {kept} datagrams, " if kept is not None else "it holds "
        return (
            f"cannot write {path}: {why}; {holds}up to its last whole "
            f"{'line' if self.failed_output == 'recording' else 'packet'}, and "
            f"{self.not_recorded} more arrived that are not in it"
        )
