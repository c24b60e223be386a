"""``oscsync timetag monitor``: headroom per bundle, rolling statistics, and its three outputs."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import socket
import statistics
import subprocess
from collections.abc import Callable

import pytest

from conftest import LineReader, oscsync_command
from oscsync.apps.monitor import LIVE_REFRESH, Monitor, MonitorView, summary
from oscsync.clock import FakeClock
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received

Spawn = Callable[..., subprocess.Popen[str]]
SOURCE = ("127.0.0.1", 5000)


def bundle(clock: FakeClock, ahead: float | None, address: str = "/tick") -> list[Received]:
    """What the endpoint hands over for one datagram holding two messages."""
    tag = None if ahead is None else tt.from_unix(clock.now() + ahead)
    arrival = clock.now()
    return [Received(codec.Message(address, (k,), "i", tag), SOURCE, arrival) for k in range(2)]


def feed(target: Monitor | MonitorView, items: list[Received]) -> None:
    for item in items:
        if isinstance(target, Monitor):
            target.observe(item)
        else:
            target.on_message(item)


def test_one_sample_per_bundle_with_headroom_in_ms(fake_clock: FakeClock) -> None:
    monitor = Monitor()
    samples = [monitor.observe(r) for r in bundle(fake_clock, 0.25)]
    assert samples[1] is None  # the second message of the same bundle
    first = samples[0]
    assert first is not None
    assert first.headroom_ms == 250.0 and not first.arrived_late
    fake_clock.advance(0.125)
    late, _ = (monitor.observe(r) for r in bundle(fake_clock, -0.0625))
    assert late is not None and late.headroom_ms == -62.5 and late.arrived_late
    assert (monitor.bundles, monitor.arrived_late_total) == (2, 1)


def test_plain_and_immediate_are_counted_not_measured(fake_clock: FakeClock) -> None:
    monitor = Monitor()
    feed(monitor, bundle(fake_clock, None))
    fake_clock.advance(0.125)
    immediate = Received(codec.Message("/now", (), "", tt.IMMEDIATELY), SOURCE, fake_clock.now())
    assert monitor.observe(immediate) is None
    stats = monitor.stats()
    assert (stats.bundles, stats.unmeasured, stats.n) == (0, 2, 0)
    assert summary(monitor) == (
        "monitor: 0 bundles, 0 arrived late; 2 plain or immediate (no headroom)"
    )


def test_nested_bundle_with_its_own_timetag_is_its_own_sample(fake_clock: FakeClock) -> None:
    outer, inner = tt.from_unix(fake_clock.now() + 0.25), tt.from_unix(fake_clock.now() + 0.5)
    datagram = codec.encode_bundle(
        outer,
        [
            codec.encode_message("/a"),
            codec.encode_bundle(inner, [codec.encode_message("/b")]),
        ],
    )
    monitor = Monitor()
    samples = [
        monitor.observe(Received(m, SOURCE, fake_clock.now())) for m in codec.decode(datagram)
    ]
    assert sorted(s.headroom_ms for s in samples if s is not None) == [250.0, 500.0]


def test_rolling_stats_cover_the_last_window_bundles(fake_clock: FakeClock) -> None:
    monitor = Monitor(window=4)
    aheads = [0.5, -0.25, 0.125, 0.25, 0.375, -0.125]
    for ahead in aheads:
        feed(monitor, bundle(fake_clock, ahead))
        fake_clock.advance(0.5)
    recent = [a * 1000 for a in aheads[-4:]]
    stats = monitor.stats()
    assert stats.n == 4
    assert stats.mean == statistics.fmean(recent)
    assert stats.std == statistics.pstdev(recent)
    assert (stats.min, stats.max) == (min(recent), max(recent))
    assert stats.arrived_late == 1  # -0.25 has left the window
    assert (stats.bundles, stats.arrived_late_total) == (6, 2)
    with pytest.raises(ValueError):
        Monitor(window=0)


def test_lines_output_one_line_per_bundle_escaped(fake_clock: FakeClock) -> None:
    out = io.StringIO()
    view = MonitorView(out, fake_clock, mode="lines", count=2)
    feed(view, bundle(fake_clock, 0.25, address="/t\x1b[2Jx"))
    fake_clock.advance(0.5)
    feed(view, bundle(fake_clock, -0.125))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "/t\\x1b[2Jx  headroom +250.000 ms  |  mean +250.000 std 0.000" in lines[0]
    assert "\x1b" not in out.getvalue()
    assert "headroom -125.000 ms  ARRIVED LATE  |  mean +62.500 std 187.500" in lines[1]
    assert lines[1].endswith("arrived late 1/2 (total 1/2)")
    assert view.done.is_set()


def test_jsonl_output(fake_clock: FakeClock) -> None:
    out = io.StringIO()
    view = MonitorView(out, fake_clock, mode="jsonl")
    feed(view, bundle(fake_clock, 0.25, address="/caf\u00e9\u009b"))
    fake_clock.advance(0.5)
    feed(view, bundle(fake_clock, 0.5))
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["address"] == "/caf\u00e9\u009b"
    assert "\u009b" not in out.getvalue()  # C1 controls are \\u escapes in the JSON text
    assert first["headroom_ms"] == 250.0 and first["arrived_late"] is False
    assert first["timetag"] == tt.format_hex(tt.from_unix(fake_clock.now() - 0.25))
    assert second["window"] == {
        "n": 2,
        "mean_ms": 375.0,
        "std_ms": 125.0,
        "min_ms": 250.0,
        "max_ms": 500.0,
        "arrived_late": 0,
    }
    assert (second["bundles"], second["arrived_late_total"]) == (2, 0)


def test_live_output_redraws_one_line_at_most_every_refresh(fake_clock: FakeClock) -> None:
    out = io.StringIO()
    view = MonitorView(out, fake_clock, mode="live")
    feed(view, bundle(fake_clock, 0.25))
    assert out.getvalue().startswith("\r\x1b[2Kheadroom +250.000 ms")
    feed(view, bundle(fake_clock, 0.125))  # within the refresh interval: held back
    assert out.getvalue().count("\r") == 1
    view.refresh()
    assert out.getvalue().count("\r") == 1
    fake_clock.advance(LIVE_REFRESH)
    view.refresh()
    assert out.getvalue().count("\r") == 2
    assert "headroom +125.000 ms" in out.getvalue().rsplit("\r", 1)[1]
    assert "\n" not in out.getvalue()
    view.finish()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


# -- the command, end to end ---------------------------------------------------------------


def start_monitor(spawn: Spawn, *args: str) -> tuple[subprocess.Popen[str], str, LineReader]:
    proc = spawn("timetag", "monitor", "--listen", "127.0.0.1:0", *args)
    assert proc.stderr is not None
    errors = LineReader(proc.stderr)
    line = errors.wait_for(lambda text: text.startswith("monitoring timetags on"))
    return proc, line.split()[-1], errors


def test_monitor_piped_prints_a_line_per_bundle(spawn: Spawn) -> None:
    proc, where, errors = start_monitor(spawn, "--count", "2")
    send = oscsync_command("send", where)
    subprocess.run([*send, "/plain", "1"], check=True)
    subprocess.run([*send, "/tick", "1", "--in", "0.2"], check=True)
    subprocess.run(
        [*send, "/old", "2", "--at", tt.format_hex(tt.from_unix(1_700_000_000))], check=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(10)
    lines = out.splitlines()
    assert len(lines) == 2 and "\r" not in out
    ahead = float(lines[0].split("headroom ")[1].split()[0])
    # Sent 200 ms ahead, arrived a little later (0.1 ms slack: two processes map wall time apart).
    assert 0 < ahead < 200.1
    assert "/old" in lines[1] and "ARRIVED LATE" in lines[1] and "arrived late 1/2" in lines[1]
    assert proc.returncode == 0
    assert errors.rest()[-1].startswith("monitor: 2 bundles, 1 arrived late")


def test_monitor_jsonl(spawn: Spawn) -> None:
    proc, where, _ = start_monitor(spawn, "--jsonl", "--count", "1", "--window", "5")
    subprocess.run([*oscsync_command("send", where), "/tick", "1", "--in", "0.2"], check=True)
    assert proc.stdout is not None
    record = json.loads(proc.stdout.read())
    proc.wait(10)
    assert record["address"] == "/tick" and record["arrived_late"] is False
    assert 0 < record["headroom_ms"] < 200.1  # as above
    assert record["window"]["n"] == 1 and record["bundles"] == 1


def test_monitor_bad_options_exit_2() -> None:
    for args in (["--window", "0"], ["--listen", "nohost.invalid:x"]):
        result = subprocess.run(
            oscsync_command("timetag", "monitor", *args), capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr


def test_monitor_on_a_terminal_redraws_one_line_in_place() -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            oscsync_command("timetag", "monitor", "--listen", "127.0.0.1:0", "--count", "2"),
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(follower)
        follower = -1
        assert proc.stderr is not None
        errors = LineReader(proc.stderr)
        where = errors.wait_for(lambda text: text.startswith("monitoring")).split()[-1]
        for ahead in ("0.2", "0.3"):
            subprocess.run([*oscsync_command("send", where, "/t", "1", "--in", ahead)], check=True)
        proc.wait(10)
        screen = b""
        while select.select([leader], [], [], 5.0)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    text = screen.decode()
    assert proc.returncode == 0
    assert text.startswith("\r\x1b[2Kheadroom +")
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended at exit
    assert "last 2: mean" in text.rsplit("\r\x1b[2K", 1)[1]


def test_ntp_era_1_monitor_measures_headroom_across_the_rollover() -> None:
    clock = FakeClock(start=float(tt.UNIX_MAX) - 0.25)  # 0.25 s before 2036-02-07 06:28:16
    monitor = Monitor()
    sample = monitor.observe(bundle(clock, 0.5)[0])  # due 0.25 s into era 1
    assert sample is not None and sample.headroom_ms == 500.0 and not sample.arrived_late
    clock.advance(0.5)
    late = monitor.observe(bundle(clock, -0.75)[0])  # due in era 0, arrived in era 1
    assert late is not None and late.headroom_ms == -750.0 and late.arrived_late


# -- issue 20, item 10: closed pipe = quiet exit, SIGTERM always wins ---------------------------


def _bundle_bytes(k: int, text: str = "x") -> bytes:
    # A fixed past timetag: headroom does not matter here, only that each datagram is a bundle.
    stamp = tt.from_unix(1_700_000_000 + k)
    return codec.encode_bundle(stamp, [codec.encode_message("/fill", [text])])


def _start_monitor_to(stdout: int) -> tuple[subprocess.Popen[str], tuple[str, int], LineReader]:
    proc = subprocess.Popen(
        oscsync_command("timetag", "monitor", "--jsonl", "--listen", "127.0.0.1:0"),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    errors = LineReader(proc.stderr)
    where = errors.wait_for(lambda text: text.startswith("monitoring timetags on")).split()[-1]
    host, port = where.rsplit(":", 1)
    return proc, (host, int(port)), errors


def test_monitor_into_a_closed_pipe_exits_quietly() -> None:
    """`timetag monitor | head -1`: the reader leaves, monitor stops without a traceback."""
    proc, where, errors = _start_monitor_to(subprocess.PIPE)
    assert proc.stdout is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(_bundle_bytes(0), where)
        assert proc.stdout.readline().startswith('{"arrival"')
        proc.stdout.close()  # the reader goes away
        for k in range(1, 100):  # the next write meets the closed pipe
            tx.sendto(_bundle_bytes(k), where)
            try:
                proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                continue
    code = proc.wait(10)
    lines = errors.rest()
    assert code == 0
    assert not any("Traceback" in line or "BrokenPipe" in line for line in lines), lines
    assert not any("handler failed" in line for line in lines), lines
    assert lines[-1].startswith("monitor: ")


def test_monitor_with_a_blocked_reader_still_stops_on_sigterm() -> None:
    """A reader that stopped reading fills the pipe; SIGTERM must still end the monitor."""
    read_end, write_end = os.pipe()  # nobody reads read_end
    proc, where, errors = _start_monitor_to(write_end)
    os.close(write_end)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for k in range(2000):  # ~1 MB of JSON: far more than a pipe holds
                tx.sendto(_bundle_bytes(k, "x" * 200), where)
        proc.terminate()
        assert proc.wait(15) == 0
        assert errors.rest()[-1].startswith("monitor: ")
    finally:
        os.close(read_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
