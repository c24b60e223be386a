"""The ``oscsync record`` command: its options and output (the work: :mod:`oscsync.apps.record`)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import IO, Any, cast

import click

from oscsync.apps.receiving import ReceiveSession
from oscsync.apps.record import Recorder
from oscsync.cli.params import (
    DURATION,
    advertise_option,
    allow_option,
    iface_option,
    listen_option,
    open_new_output,
    overwrite_option,
)
from oscsync.cli.peers import Advertising
from oscsync.cli.runtime import AppContext, leave_without_stdout, pass_app, running
from oscsync.files.recording import FLUSH_INTERVAL
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort


def _open_new(path: str, binary: bool, overwrite: bool, param: str) -> IO[Any]:
    if path == "-":
        return sys.stdout.buffer if binary else sys.stdout
    return cast(IO[Any], open_new_output(Path(path), overwrite, param, binary=binary))


def _close_quietly(stream: IO[Any]) -> None:
    # A file whose write failed is closed already (cut back to its last whole record); what a
    # pipe's buffer still holds may fail again: the error was reported once, with the counts.
    with contextlib.suppress(OSError, ValueError):
        stream.close()


@click.command(
    epilog="""\b
Examples:
  oscsync record take1.jsonl                        # record 127.0.0.1:9001 until Ctrl-C
  oscsync record take1.jsonl --listen 0.0.0.0:9000 --duration 60
  oscsync record sensors.jsonl --count 1000 --pcap sensors.pcap
  oscsync record take1.jsonl --advertise recorder   # partners send to @recorder
  oscsync record - --count 5 | jq .osc              # to stdout, for jq
  oscsync replay take1.jsonl --peer 127.0.0.1:9002  # play it back with its timing
"""
)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True), required=False)
@listen_option()
@allow_option()
@iface_option()
@click.option(
    "--count", "-c", type=click.IntRange(min=1), metavar="N", help="Stop after this many datagrams."
)
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@click.option(
    "--pcap",
    "pcap_path",
    type=click.Path(dir_okay=False),
    metavar="PCAPFILE",
    help="Also write the datagrams as a pcap capture (Wireshark, tshark); FILE may be left out.",
)
@overwrite_option("FILE and PCAPFILE")
@advertise_option()
@pass_app
def record(
    app: AppContext,
    file: str | None,
    listen: HostPort,
    allow: tuple[Network, ...],
    iface: str | None,
    count: int | None,
    duration: float | None,
    pcap_path: str | None,
    overwrite: bool,
    advertise: str | None,
    interface: str,
) -> None:
    """Record every OSC datagram that arrives, byte-exact with its arrival time, to FILE.

    FILE gets one JSON line per datagram: the bytes (base64), the arrival time, the sender and the
    decoded messages, between a header line and a closing line that counts what was lost (see
    "Record and replay" in the guide). Lines are flushed several times a second, so a crash keeps
    what came before it, and the file can be read while it grows. Datagrams that are not valid OSC
    are kept too, marked. Ctrl-C stops and prints a summary.
    """
    if file is None and pcap_path is None:
        raise click.UsageError("give a FILE to record to (or --pcap PCAPFILE, or both)")
    if file is not None and file == pcap_path:
        raise click.UsageError("FILE and --pcap must be different files (only one may be -)")
    with contextlib.ExitStack() as files:
        recording = pcap = None
        if file is not None:
            recording = _open_new(file, False, overwrite, "FILE")
            if file != "-":
                files.callback(_close_quietly, recording)
        if pcap_path is not None:
            pcap = _open_new(pcap_path, True, overwrite, "--pcap")
            if pcap_path != "-":
                files.callback(_close_quietly, pcap)
        _record(
            app,
            (recording, pcap),
            {"recording": file or "", "pcap": pcap_path or ""},
            listen,
            allow,
            iface,
            (count, duration),
            (advertise, interface),
        )
        if file == "-" or pcap_path == "-":
            # stdout carries the data: make sure a closed pipe ends quietly.
            with contextlib.suppress(BrokenPipeError):
                sys.stdout.flush()


def _record(
    app: AppContext,
    outputs: tuple[IO[str] | None, IO[bytes] | None],
    paths: dict[str, str],
    listen: HostPort,
    allow: tuple[Network, ...],
    iface: str | None,
    limits: tuple[int | None, float | None],
    advertise: tuple[str | None, str],
) -> None:
    clock = app.clock
    recording, pcap = outputs
    count, duration = limits
    failure: OSError | None = None
    name, interface = advertise
    app.keep_time()
    with running(), Advertising(app, name, interface, role="record", allow=allow) as advertised:
        session = ReceiveSession(listen, (), app.setup(allow, iface, clock=clock))
        endpoint = session.endpoint
        local = endpoint.local_address
        recorder = Recorder(
            clock,
            recording=recording,
            pcap=pcap,
            # The pcap's UDP packets go to the listening address, whatever its transport.
            destination=str(HostPort(local.host, local.port)) if local else "0.0.0.0:0",
            count=count,
        )
        try:
            recorder.write_header(str(endpoint.local_address))
            app.note(f"recording on {endpoint.local_address}")
            session.start(on_datagram=recorder.on_datagram)
            advertised.publish(endpoint.local_address)
            deadline = None if duration is None else clock.monotonic() + duration
            while not recorder.done.is_set():
                slice_ = FLUSH_INTERVAL
                if deadline is not None:
                    slice_ = min(slice_, deadline - clock.monotonic())
                    if slice_ <= 0:
                        break
                clock.wait(recorder.done, slice_)
                recorder.flush()
        finally:
            stopped = session.close()
            recorder.close(endpoint.stats.drops)
            failure = recorder.failure
            elapsed = clock.monotonic() - recorder.started_monotonic
            note = endpoint.stats.connection_note()
            summary = recorder.summary(endpoint.stats.drops, elapsed, note)
            app.note(f"{summary}; {app.realtime_text()}")
            if isinstance(failure, BrokenPipeError) or not stopped:
                leave_without_stdout(stopped_cleanly=stopped)
    if failure is not None and not isinstance(failure, BrokenPipeError):
        # One line: why, what the file holds, and what was lost (issue 27, item 12).
        raise click.ClickException(recorder.failure_text(paths[recorder.failed_output]))
