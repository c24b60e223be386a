"""``oscsync record`` (issue #15): every datagram written byte-exact or counted as dropped."""

from __future__ import annotations

import errno
import io
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import LineReader, free_udp_port, oscsync_command, require_peer
from oscsync.apps.endpoints import open_endpoint
from oscsync.apps.record import Recorder
from oscsync.cli.main import cli
from oscsync.clock import FakeClock
from oscsync.files.pcap import read_capture
from oscsync.files.recording import ReadReport, read_recording
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from waiting import wait_until

Spawn = Callable[..., "Popen[str]"]
NESTED = codec.encode_bundle(
    0xDD9D15A7922F48C2,
    [codec.encode_message("/a", [1.5]), codec.encode_bundle(1, [codec.encode_message("/b", [])])],
)


def test_record_lines_carry_monotonic_offset_wall_time_and_source(fake_clock: FakeClock) -> None:
    out = io.StringIO()
    recorder = Recorder(fake_clock, recording=out, count=2)
    recorder.write_header("127.0.0.1:9001")
    fake_clock.advance(0.25)
    recorder.on_datagram(NESTED, ("127.0.0.1", 5000), fake_clock.now())
    assert not recorder.done.is_set()
    fake_clock.advance(0.5)
    recorder.on_datagram(b"/x\x00\x00", ("::1", 5001), fake_clock.now())
    assert recorder.done.is_set()  # --count 2 reached
    recorder.on_datagram(b"/late\x00\x00\x00", ("127.0.0.1", 5000), fake_clock.now())
    recorder.close({"kernel-buffer-full": 4})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["clock"] == "fake" and lines[0]["listen"] == "127.0.0.1:9001"
    assert [(line["m"], line["from"]) for line in lines[1:3]] == [
        (0.25, "127.0.0.1:5000"),
        (0.75, "[::1]:5001"),
    ]
    assert lines[1]["t"] == pytest.approx(fake_clock.now() - 0.5, abs=1e-6)
    assert lines[3]["end"] is True and lines[3]["dropped"] == {"kernel-buffer-full": 4}
    assert lines[3]["datagrams"] == 2


def test_record_cli_keeps_datagrams_byte_exact_and_writes_a_pcap(
    spawn: Spawn, tmp_path: Path
) -> None:
    port = free_udp_port()
    path, pcap_path = tmp_path / "take.jsonl", tmp_path / "take.pcap"
    sent = [codec.encode_message("/chat", ["hi"]), NESTED, b"not osc at all!!"]
    proc = spawn(
        "record",
        str(path),
        "--listen",
        f"127.0.0.1:{port}",
        "--count",
        "3",
        "--pcap",
        str(pcap_path),
    )
    assert proc.stderr is not None
    stderr = LineReader(proc.stderr)
    stderr.wait_for(lambda line: f"recording on 127.0.0.1:{port}" in line)
    with open_endpoint(peers=[HostPort("127.0.0.1", port)]) as tx:
        for data in sent:
            tx.send_bytes(data)
    assert proc.wait(10) == 0
    assert "record: 3 datagrams" in stderr.wait_for(lambda line: line.startswith("record:"))
    report = ReadReport()
    with path.open() as f:
        assert [d.data for d in read_recording(f, report=report)] == sent
    assert report.closing is not None and report.closing["dropped_total"] == 0
    assert report.closing["malformed"] == {"not-osc": 1}
    with pcap_path.open("rb") as f:
        captured = list(read_capture(f))
    assert [d.data for d in captured] == sent
    assert {d.destination for d in captured} == {f"127.0.0.1:{port}"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_RXQ_OVFL is Linux-only")
def test_record_every_datagram_written_or_counted_dropped(tmp_path: Path) -> None:
    """A stalled writer and a tiny socket buffer: the kernel drops, and the closing line says so,
    including the drops at the very end that no later datagram reports (SO_MEMINFO at close)."""
    out = io.StringIO()
    recorder = Recorder(FakeClock(), recording=out)
    recorder.write_header("127.0.0.1:0")
    stall = threading.Event()
    first = threading.Event()

    def stalled(data: bytes, source: tuple[str, int], arrival: float) -> None:
        first.set()
        stall.wait(10)
        recorder.on_datagram(data, source, arrival)

    endpoint = open_endpoint(HostPort("127.0.0.1", 0), recv_buffer=4096)
    endpoint.start(on_datagram=stalled)
    address = endpoint.local_address
    assert address is not None
    sent = 500
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"/first\x00\x00", address.sockaddr)
        assert first.wait(10)
        for n in range(sent - 1):  # the buffer holds a few: the flood ends with drops
            tx.sendto(codec.encode_message("/n", [n]), address.sockaddr)
    stall.set()
    endpoint.close()  # whatever is still queued is counted unread-at-close
    recorder.close(endpoint.stats.drops)
    report = ReadReport()
    written = list(read_recording(io.StringIO(out.getvalue()), report=report))
    assert report.closing is not None
    assert report.closing["dropped"]["kernel-buffer-full"] > 0
    assert len(written) + report.closing["dropped_total"] == sent


def test_record_refuses_to_overwrite_and_needs_somewhere_to_write(tmp_path: Path) -> None:
    existing = tmp_path / "take.jsonl"
    existing.write_text("precious\n")
    result = CliRunner().invoke(cli, ["record", str(existing), "--duration", "0.1"])
    assert result.exit_code == 2 and "already exists" in result.output
    assert existing.read_text() == "precious\n"
    result = CliRunner().invoke(cli, ["record", "--duration", "0.1"])
    assert result.exit_code == 2 and "give a FILE" in result.output


def test_record_duration_stops_and_writes_the_closing_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    listen = f"127.0.0.1:{free_udp_port()}"
    result = CliRunner().invoke(cli, ["record", str(path), "--listen", listen, "-d", "0.2"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["oscsync"] == "recording" and lines[-1]["end"] is True
    assert lines[-1]["datagrams"] == 0 and len(lines) == 2


def test_record_ctrl_c_keeps_everything_and_writes_the_closing_line(
    spawn: Spawn, tmp_path: Path
) -> None:
    port = free_udp_port()
    path = tmp_path / "take.jsonl"
    proc = spawn("record", str(path), "--listen", f"127.0.0.1:{port}")
    assert proc.stderr is not None
    LineReader(proc.stderr).wait_for(lambda line: "recording on" in line)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(NESTED, ("127.0.0.1", port))
        # Flushed within FLUSH_INTERVAL while recording: readable before the recorder stops.
        wait_until(lambda: len(path.read_text().splitlines()) >= 2, what="2 lines in the take")
        tx.sendto(NESTED, ("127.0.0.1", port))
        wait_until(lambda: len(path.read_text().splitlines()) >= 3, what="3 lines in the take")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    report = ReadReport()
    with path.open() as f:
        assert [d.data for d in read_recording(f, report=report)] == [NESTED, NESTED]
    assert report.closing is not None and report.closing["datagrams"] == 2


def test_record_killed_keeps_what_was_written(spawn: Spawn, tmp_path: Path) -> None:
    port = free_udp_port()
    path = tmp_path / "take.jsonl"
    proc = spawn("record", str(path), "--listen", f"127.0.0.1:{port}")
    assert proc.stderr is not None
    LineReader(proc.stderr).wait_for(lambda line: "recording on" in line)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(NESTED, ("127.0.0.1", port))
        wait_until(lambda: len(path.read_text().splitlines()) >= 2, what="2 lines in the take")
    proc.kill()
    proc.wait(10)
    report = ReadReport()
    with path.open() as f:
        assert [d.data for d in read_recording(f, report=report)] == [NESTED]
    assert report.closing is None  # cut short: no closing line, nothing lost before the cut


def test_record_allow_list_refusals_are_counted_in_the_closing_line(
    fake_clock: FakeClock,
) -> None:
    out = io.StringIO()
    recorder = Recorder(fake_clock, recording=out)
    recorder.write_header("127.0.0.1:0")
    endpoint = open_endpoint(HostPort("127.0.0.1", 0), allow=[ip_network("10.0.0.0/8")])
    endpoint.start(on_datagram=recorder.on_datagram)
    endpoint.handle_datagram(NESTED, ("127.0.0.1", 5000))
    endpoint.handle_datagram(NESTED, ("10.1.2.3", 5000))
    endpoint.close()
    recorder.close(endpoint.stats.drops)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("from") for line in lines[1:-1]] == ["10.1.2.3:5000"]
    assert lines[-1]["dropped"] == {"not-allowed": 1}


def test_record_header_names_a_skewed_clock(tmp_path: Path) -> None:
    path = tmp_path / "skewed.jsonl"
    listen = f"127.0.0.1:{free_udp_port()}"
    argv = ["--clock-skew", "2", "record", str(path), "--listen", listen, "-d", "0.1"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text().splitlines()[0])["clock"] == "skewed"


def test_record_replay_keeps_liblo_oscsend_every_type_byte_exact(
    spawn: Spawn, tmp_path: Path
) -> None:
    """liblo writes its own types (S symbol, c char, I infinitum, m MIDI): kept as sent."""
    oscsend = require_peer("oscsend")
    port = free_udp_port()
    path = tmp_path / "liblo.jsonl"
    proc = spawn("record", str(path), "--listen", f"127.0.0.1:{port}", "--count", "2")
    assert proc.stderr is not None
    LineReader(proc.stderr).wait_for(lambda line: "recording on" in line)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(10)
        probe_port = str(probe.getsockname()[1])
        words = ["/every", "ihfdsScTFNIm", "7", "9000000000", "1.5", "2.5", "str", "sym", "A"]
        words.append("00903c7f")
        for target in (probe_port, str(port)):  # once to see the bytes, once to record them
            subprocess.run([oscsend, "127.0.0.1", target, *words], check=True, timeout=10)
        expected = probe.recv(65535)
        subprocess.run([oscsend, "127.0.0.1", str(port), "/empty"], check=True, timeout=10)
        assert proc.wait(10) == 0
        result = CliRunner().invoke(cli, ["replay", str(path), "--peer", f"127.0.0.1:{probe_port}"])
        assert result.exit_code == 0, result.output
        replayed = [probe.recv(65535), probe.recv(65535)]
    assert replayed[0] == expected
    assert replayed[1].startswith(b"/empty\x00\x00")
    first = json.loads(path.read_text().splitlines()[1])
    assert first["osc"][0]["types"] == "ihfdsScTFNIm"


# -- issue 27, item 12: a full disk --------------------------------------------------------------


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: a write takes what fits, then ENOSPC (what a
    full disk does), wrapped in the same buffered text layers ``open()`` builds."""

    room = 20_000

    def write(self, data: Any) -> int:
        fits = self.room - self.tell()
        if fits <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(bytes(data)[:fits])


@pytest.mark.parametrize("pcap", [False, True])
def test_record_on_a_full_disk_keeps_whole_lines_and_counts_every_loss(
    tmp_path: Path, fake_clock: FakeClock, pcap: bool
) -> None:
    """Record stopped after 144 of 2,000 messages, said "dropped 0", printed a traceback and
    left a cut last line. Now the file is cut back to its last whole record, and every datagram
    is either in it or counted as not recorded."""
    path = tmp_path / ("take.pcap" if pcap else "take.jsonl")
    raw = _FullDisk(path, "w")
    if pcap:
        out: Any = io.BufferedWriter(raw)
        recorder = Recorder(fake_clock, pcap=out)
    else:
        out = io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", newline="\n")
        recorder = Recorder(fake_clock, recording=out)
        recorder.write_header("127.0.0.1:9001")
    for n in range(2000):
        fake_clock.advance(0.001)
        message = codec.encode_message("/n", [n, "x" * 40])
        recorder.on_datagram(message, ("127.0.0.1", 5), fake_clock.now())
        if n % 50 == 0:
            recorder.flush()
    recorder.close({})
    assert recorder.failure is not None and recorder.failure.errno == errno.ENOSPC
    assert raw.closed  # cut back and closed: nothing buffered is written afterwards
    if pcap:
        with path.open("rb") as f:
            kept = [d.data for d in read_capture(f)]  # a cut packet would be "damaged"
    else:
        text = path.read_text()
        assert text.endswith("\n")
        with path.open() as f:
            kept = [d.data for d in read_recording(f)]  # every line whole
    assert kept == [codec.encode_message("/n", [n, "x" * 40]) for n in range(len(kept))]
    assert recorder.recorded == len(kept) > 0
    assert recorder.recorded + recorder.not_recorded == 2000
    summary = recorder.summary({}, 2.0)
    assert f"record: {len(kept)} datagrams" in summary
    assert f"not recorded {2000 - len(kept)} (the {'pcap' if pcap else 'recording'}" in summary
    assert recorder.failure_text(str(path)) == (
        f"cannot write {path}: No space left on device; it holds {len(kept)} datagrams, up to its "
        f"last whole {'packet' if pcap else 'line'}, and {2000 - len(kept)} more arrived that "
        "are not in it"
    )


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="RLIMIT_FSIZE is POSIX")
def test_record_cli_on_a_full_disk_is_one_error_line_with_the_counts(
    tmp_path: Path, spawn: Spawn
) -> None:
    """The real command against a real write failure: a file size limit (RLIMIT_FSIZE: writes
    past 16 KB fail with EFBIG, as a full disk fails with ENOSPC)."""
    import resource

    path = tmp_path / "take.jsonl"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    proc = subprocess.Popen(
        oscsync_command("record", str(path), "--listen", "127.0.0.1:0", "--count", "2000"),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=small_files,
    )
    assert proc.stderr is not None
    errors = LineReader(proc.stderr)
    line = errors.wait_for(lambda text: "recording on" in text)
    port = int(line.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for n in range(2000):
            if proc.poll() is not None:
                break
            tx.sendto(codec.encode_message("/n", [n, "x" * 40]), ("127.0.0.1", port))
            if n % 20 == 19:  # paced: record stops at the failure, not at a full socket buffer
                wait_until(lambda: proc.poll() is not None or path.stat().st_size > 0, 10, "write")
    assert proc.wait(30) == 1
    rest = errors.rest()
    assert not any("Traceback" in text for text in rest)
    [error] = [text for text in rest if text.startswith("Error:")]
    assert error.startswith(f"Error: cannot write {path}: File too large; it holds ")
    assert "up to its last whole line, and" in error
    text = path.read_text()
    assert text.endswith("\n")
    with path.open() as f:
        kept = list(read_recording(f))
    assert f"it holds {len(kept)} datagrams" in error
