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


def format_source(source: tuple[str, int]) -> str:
    host, port = source
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def clock_kind(clock: Clock) -> str:
    """``system``, ``skewed`` or ``fake``: which clock stamped a recording's times."""
    return type(clock).__name__.removesuffix("Clock").lower() or "custom"


class Recorder:
    """Writes each datagram it is given; sets :attr:`done` after ``count`` or on a write failure.

    ``destination`` is the listening ``HOST:PORT``, written as each pcap packet's destination.
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
        self._pcap_out = pcap
        self.destination = destination
        self.count = count
        self.recorded = 0
        self.bytes = 0
        self.done = threading.Event()
        self.failure: OSError | None = None
        self._lock = threading.Lock()
        self._last_pcap_flush = self.started_monotonic

    def write_header(self, listen: str) -> None:
        if self.writer is not None:
            self.writer.write_header(
                host=socket.gethostname(),
                clock=clock_kind(self.clock),
                started_unix=self.started_wall,
                listen=listen,
                software=f"oscsync {__version__}",
            )

    def on_datagram(self, data: bytes, source: tuple[str, int], arrival: float) -> None:
        """The endpoint's datagram hook: runs on the receive thread."""
        if self.done.is_set():
            return  # past --count, or the file failed: what still arrives is not recorded
        monotonic = self.clock.wall_to_monotonic(arrival)
        where = format_source(source)
        try:
            if self.writer is not None:
                self.writer.add(data, where, arrival, monotonic)
            if self.pcap is not None:
                with self._lock:
                    self.pcap.add(round(arrival * 1e9), data, where, self.destination)
                    if monotonic - self._last_pcap_flush >= FLUSH_INTERVAL:
                        self._last_pcap_flush = monotonic
                        self._flush_pcap()
        except OSError as exc:
            self.failure = exc
            self.done.set()
            return
        self.recorded += 1
        self.bytes += len(data)
        if self.count is not None and self.recorded >= self.count:
            self.done.set()

    def _flush_pcap(self) -> None:
        if self._pcap_out is not None:
            self._pcap_out.flush()

    def flush(self) -> None:
        """Push what is buffered to the files (called a few times a second while idle)."""
        try:
            if self.writer is not None:
                self.writer.flush()
            with self._lock:
                self._flush_pcap()
        except OSError as exc:
            self.failure = self.failure or exc
            self.done.set()

    def close(self, dropped: Mapping[str, int]) -> None:
        """Write the closing line with the loss counts; call after the endpoint is closed."""
        try:
            if self.writer is not None:
                self.writer.close(self.clock.monotonic(), dropped)
            with self._lock:
                self._flush_pcap()
        except OSError as exc:
            self.failure = self.failure or exc

    def summary(self, dropped: Mapping[str, int], elapsed: float, note: str = "") -> str:
        """One line for stderr when record stops (``note``: the TCP connections the listener
        closed, :meth:`~oscsync.net.core.TransportStats.connection_note`)."""
        text = f"record: {self.recorded} datagrams ({self.bytes} bytes) in {elapsed:.1f} s"
        total = sum(dropped.values())
        if total:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
            text += f"; dropped {total} ({reasons})"
        else:
            text += "; dropped 0"
        if self.writer is not None and self.writer.stats.malformed:
            text += f"; {sum(self.writer.stats.malformed.values())} kept were not valid OSC"
        if note:
            text += f"; {note}"
        return text
