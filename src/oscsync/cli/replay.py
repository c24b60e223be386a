"""The ``oscsync replay`` command: its options and output (the work: :mod:`oscsync.apps.replay`)."""

from __future__ import annotations

import math
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from oscsync.apps.replay import (
    TIMETAG_MODES,
    Plan,
    Replayer,
    ReplayError,
    ReplaySession,
    Selection,
    TimetagMode,
    address_matcher,
    plan,
)
from oscsync.cli.params import DURATION, framing_option, iface_option, peers_option
from oscsync.cli.peers import following, resolve_peers
from oscsync.cli.runtime import AppContext, pass_app, running
from oscsync.files.kinds import file_kind
from oscsync.files.pcap import CaptureError, CaptureReport, is_capture, read_capture
from oscsync.files.recording import Datagram, ReadReport, RecordingError, read_recording
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.terminal.wording import plural

PROGRESS_INTERVAL = 0.5


def _speed(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not (math.isfinite(value) and 0.001 <= value <= 1000):
        raise click.BadParameter(f"{value} is not between 0.001 and 1000", param=param)
    return value


def _pattern(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            address_matcher(value)
        except ReplayError as exc:
            raise click.BadParameter(str(exc), param=param) from None
    return value


class DatagramFile:
    """A recording or a capture on disk, opened afresh for each pass over it."""

    def __init__(self, path: str, skip_bad: bool) -> None:
        self.path = path
        self.skip_bad = skip_bad
        self.recording_report = ReadReport()
        self.capture_report = CaptureReport()
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                # Read once to measure it, then once per pass: a pipe (`<(cat take.jsonl)`)
                # would be read to its end by the first, and a named pipe waits for a writer.
                raise click.BadParameter(
                    f"{path} is not a regular file (a pipe?): replay reads its file more than "
                    "once (to check it, then once per pass); save it to a file first",
                    param_hint="FILE",
                )
            with open(path, "rb") as f:
                start = f.read(64)
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path}: {exc.strerror}", param_hint="FILE"
            ) from None
        self.is_capture = is_capture(start)

    def __call__(self) -> Iterator[Datagram]:
        # Reports are reset per pass: the summary shows one pass's skips, not loops × skips.
        if self.is_capture:
            self.capture_report = CaptureReport()
            with open(self.path, "rb") as binary:
                yield from read_capture(binary, skip_bad=self.skip_bad, report=self.capture_report)
        else:
            self.recording_report = ReadReport()
            with open(self.path, encoding="utf-8", errors="replace", newline="") as text:
                yield from read_recording(
                    text, skip_bad=self.skip_bad, report=self.recording_report
                )

    def skipped(self) -> dict[str, int]:
        if self.is_capture:
            return dict(self.capture_report.skipped)
        return dict(self.recording_report.skipped)


@click.command(
    epilog="""\b
Examples:
  oscsync replay take1.jsonl --peer 127.0.0.1:9002
  oscsync replay take1.jsonl --peer 127.0.0.1:9002 --speed 0.5      # half speed
  oscsync replay take1.jsonl -p 127.0.0.1:9002 --from 10 --to 20 --loop 4
  oscsync replay take1.jsonl -p 127.0.0.1:9002 --filter '/synth/*' --timetags shift
  oscsync replay capture.pcapng --port 9001 --peer 127.0.0.1:9001   # a Wireshark capture
"""
)
@click.argument("file", type=click.Path(dir_okay=False))
@peers_option("Send to this peer (repeatable).")
@click.option(
    "--speed",
    type=float,
    metavar="X",
    default=1.0,
    show_default=True,
    callback=_speed,
    help="Play this many times faster (0.5: half speed).",
)
@click.option(
    "--loop",
    "loops",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    metavar="N",
    help="Play N times (0: until Ctrl-C).",
)
@click.option(
    "--from", "start", type=DURATION, help="Start at this many seconds into the recording."
)
@click.option("--to", "end", type=DURATION, help="Stop at this many seconds into the recording.")
@click.option(
    "--filter",
    "pattern",
    metavar="PATTERN",
    callback=_pattern,
    help="Only datagrams with a message matching this OSC address pattern (e.g. '/synth/*').",
)
@click.option(
    "--timetags",
    type=click.Choice(TIMETAG_MODES),
    default="keep",
    show_default=True,
    help="keep: bytes as recorded; shift: move bundle timetags with the replay; "
    "strip: send each message plain.",
)
@click.option(
    "--port",
    "destination_port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Captures: only datagrams that were sent to this UDP port.",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Skip damaged lines or frames (counted) instead of stopping with an error.",
)
@iface_option()
@framing_option()
@pass_app
def replay(
    app: AppContext,
    file: str,
    peers: tuple[HostPort, ...],
    speed: float,
    loops: int,
    start: float | None,
    end: float | None,
    pattern: str | None,
    timetags: TimetagMode,
    destination_port: int | None,
    skip_bad: bool,
    iface: str | None,
    framing: Framing,
) -> None:
    """Send a recording or a pcap capture again, with its timing, to one or more peers.

    FILE is a recording made by "oscsync record", or a pcap/pcapng capture from tcpdump, tshark
    or Wireshark (its UDP datagrams; anything else is skipped and counted). Each datagram leaves
    at its recorded time relative to the first one (or to --from), divided by --speed. A damaged
    file stops with the line (or frame) number before anything is sent, unless --skip-bad.
    """
    if start is not None and end is not None and end <= start:
        raise click.UsageError("--to must be later than --from")
    if not os.path.exists(file):
        raise click.BadParameter(f"{file} does not exist", param_hint="FILE")
    kind = file_kind(Path(file))
    if kind in ("tick log", "event log"):
        what, reader = (
            ("a tick log (metronome listen --log)", f"use `oscsync stats {file}`")
            if kind == "tick log"
            else ("an event log (sequence listen --log)", "read it with jq")
        )
        raise click.ClickException(
            f"{file}: this is {what}, not a recording: {reader}; "
            "`oscsync record FILE` makes a recording to replay"
        )
    source = DatagramFile(file, skip_bad)
    if destination_port is not None and not source.is_capture:
        raise click.UsageError("--port only applies to pcap/pcapng captures")
    selection = Selection(start, end, pattern, destination_port)
    try:
        measured = plan(source(), selection, timetags)
    except (RecordingError, CaptureError) as exc:
        hint = "" if skip_bad else " (--skip-bad skips what cannot be read)"
        raise click.ClickException(f"{file}: {exc}{hint}") from None
    if measured.count == 0:
        raise click.ClickException(
            f"{file}: nothing to replay ({_what_was_skipped(source, measured)})"
        )
    given = peers
    peers = resolve_peers(given)  # @NAME: after the file is checked, before anything is sent
    _replay(app, source, measured, selection, peers, speed, loops, timetags, iface, framing, given)


def _what_was_skipped(source: DatagramFile, measured: Plan) -> str:
    skipped = {**source.skipped(), **measured.skipped}
    if not skipped:
        return "no datagrams in the selection"
    return "skipped: " + ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()))


def _replay(
    app: AppContext,
    source: DatagramFile,
    measured: Plan,
    selection: Selection,
    peers: tuple[HostPort, ...],
    speed: float,
    loops: int,
    timetags: TimetagMode,
    iface: str | None,
    framing: Framing,
    given: tuple[object, ...],
) -> None:
    clock = app.clock
    progress = sys.stderr.isatty() and not app.quiet

    def warn(text: str) -> None:
        if progress:
            click.echo("\r\x1b[K", nl=False, err=True)  # not after a half-written progress line
        app.warn(text)

    def note(text: str) -> None:
        if progress:
            click.echo("\r\x1b[K", nl=False, err=True)
        app.note(text)

    # A defined end (every --loop but 0, "until Ctrl-C") cut short exits 130 (issue 30).
    app.keep_time()
    with (
        running(interrupted_exit=loops != 0),
        ReplaySession(
            source,
            measured,
            peers,
            app.setup((), iface, framing, warn=warn, clock=clock),
            selection=selection,
            speed=speed,
            loops=loops,
            mode=timetags,
        ) as session,
        following(app, given, peers, session.endpoint.set_peers, say=note),
    ):
        replayer = session.replayer
        try:
            # Inside running() and this try: a Ctrl-C right after this line is a clean stop
            # with its summary (it was "Aborted!", or no summary while starting).
            app.note(
                f"replay: {measured.count} datagrams, "
                f"{(measured.last - measured.first) / speed:.3f} s per pass, to "
                f"{', '.join(map(str, peers))}"
            )
            session.start()
            next_progress = clock.monotonic()
            while not replayer.finished.is_set():
                if progress and clock.monotonic() >= next_progress:
                    next_progress = clock.monotonic() + PROGRESS_INTERVAL
                    click.echo("\r" + _progress_text(replayer), nl=False, err=True)
                clock.wait(replayer.finished, 0.1)
        finally:
            if progress:
                click.echo("\r\x1b[K", nl=False, err=True)
            session.scheduler.close()
            if not replayer.finished.is_set() and replayer.total is not None:
                app.note(
                    f"replay: stopped after {replayer.stats.datagrams} of "
                    f"{plural(replayer.total, 'datagram')}"
                )
            app.note(f"{_summary(replayer, session.endpoint, source)}; {app.realtime_text()}")
    if replayer.failure is not None:
        failure = replayer.failure
        raise click.ClickException(f"{source.path}: {failure or type(failure).__name__}")


def _progress_text(replayer: Replayer) -> str:
    total = replayer.total
    sent = replayer.stats.datagrams
    elapsed = replayer.clock.monotonic() - replayer.start_monotonic
    of = f"/{total}" if total is not None else ""
    loop = min(sent, (total or sent + 1) - 1) // replayer.plan.count + 1  # the pass being sent
    return f"replay: {sent}{of} datagrams sent, pass {loop}, {max(elapsed, 0):.1f} s"


def _summary(replayer: Replayer, endpoint: Endpoint, source: DatagramFile) -> str:
    stats = replayer.stats
    started = replayer.start_monotonic  # 0.0: stopped before it started
    elapsed = max(0.0, replayer.clock.monotonic() - started) if started else 0.0
    text = (
        f"replay: sent {plural(stats.datagrams, 'datagram')} ({plural(stats.packets, 'packet')}, "
        f"{stats.bytes} bytes) in {elapsed:.3f} s, {plural(stats.loops_started, 'pass', 'passes')}"
    )
    skipped = {**source.skipped(), **replayer.plan.skipped}
    if skipped:
        text += "; skipped " + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items()))
    if endpoint.stats.send_errors:
        errors = ", ".join(f"{r} {n}" for r, n in sorted(endpoint.stats.send_errors.items()))
        text += f"; send errors: {errors}"
    lateness = stats.lateness
    if lateness.samples:
        text += (
            f"; sent late by p99 {lateness.percentile(0.99) * 1e3:.3f} ms, "
            f"max {lateness.maximum * 1e3:.3f} ms"
        )
    if stats.refused:
        text += f"; not sent {stats.refused} (the scheduler refused them)"
    if stats.unshifted:
        text += f"; {stats.unshifted} malformed bundles sent as recorded (timetags not shifted)"
    return text
