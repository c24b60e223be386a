"""Every command over tcp:// (issue #16): send/dump, clock pings, metronome, record/replay, and
one-line errors for the URLs people get wrong."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LineReader, oscsync_command
from oscsync.cli.main import cli
from oscsync.files.pcap import read_capture
from oscsync.osc import codec

Spawn = Callable[..., subprocess.Popen[str]]


def start_listener(spawn: Spawn, *args: str) -> tuple[subprocess.Popen[str], str, LineReader]:
    """A listening command on a free TCP port: (process, its tcp:// address, its stderr)."""
    proc = spawn(*args)
    assert proc.stderr is not None
    errors = LineReader(proc.stderr)
    line = errors.wait_for(lambda text: " on tcp://127.0.0.1:" in text)
    where = next(word for word in line.split() if word.startswith("tcp://")).rstrip(",")
    return proc, where, errors


@pytest.mark.parametrize("framing", ["slip", "size"])
def test_a_70kb_string_crosses_over_tcp_where_udp_cannot(spawn: Spawn, framing: str) -> None:
    text = "abcdefghij" * 7000  # 70 KB: more than one UDP datagram can carry
    dump, where, errors = start_listener(
        spawn, "dump", "--listen", "tcp://127.0.0.1:0", "--jsonl", "--count", "2"
    )
    send = [*oscsync_command("send", where, "--framing", framing)]
    subprocess.run([*send, "/big", text], check=True)
    subprocess.run([*send, "/typed", "--types", "ihdsbN", "7", "-9000000000", "0.1", "x", "ca"],
                   check=True)  # fmt: skip
    assert dump.stdout is not None
    records = [json.loads(line) for line in dump.stdout.read().splitlines()]
    dump.wait(10)
    assert records[0]["address"] == "/big" and records[0]["args"] == [text]
    assert records[1]["args"] == [7, -9000000000, 0.1, "x", "ca", None]
    assert errors.rest()[-1] == (
        "dump: 2 messages printed; received 2 messages in 2 packets over 2 TCP connections "
        "(0 bundles); dropped 0; realtime off"
    )


def test_send_to_a_tcp_port_nobody_listens_on_exits_1_with_one_line() -> None:
    done = subprocess.run(
        oscsync_command("send", "tcp://127.0.0.1:1", "/x", "1"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "cannot connect to tcp://127.0.0.1:1: Connection refused" in done.stderr
    assert (
        done.stderr.splitlines()[-1]
        == "Error: could not send to every peer (see the warning above)"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["send", "http://127.0.0.1:9000", "/x"], "unknown transport 'http://'"),
        (["send", "tcp://127.0.0.1:9000/chat", "/x"], "an OSC URL has no path"),
        (["dump", "--listen", "tcp://239.1.2.3:9000"], "TCP cannot send to a multicast group"),
        (["chat", "--peer", "osc.tcp://:9000"], "a host is needed here"),
        (["send", "tcp://127.0.0.1:9000", "/x", "--framing", "cobs"], "'cobs' is not one of"),
    ],
)
def test_bad_tcp_urls_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_clock_pings_over_tcp_are_answered(spawn: Spawn) -> None:
    _dump, where, _ = start_listener(spawn, "dump", "--listen", "tcp://127.0.0.1:0")
    done = subprocess.run(
        oscsync_command("clock", "--peer", where, "--count", "20", "--interval", "0.01"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"peer {where}: 20 of 20 pings answered" in done.stdout


def test_metronome_over_tcp_with_sync_follows_the_senders_clock(spawn: Spawn) -> None:
    listen, where, errors = start_listener(
        spawn, "metronome", "listen", "--listen", "tcp://127.0.0.1:0", "--audio", "none",
        "--sync", "--count", "8",
    )  # fmt: skip
    sender = spawn(
        "metronome", "send", "--peer", where, "--bpm", "480", "--count", "8", "--offset", "0.2"
    )
    assert sender.wait(60) == 0
    assert listen.wait(60) == 0
    rest = errors.rest()
    assert any("clock sync with 127.0.0.1:" in line and "sync locked" in line for line in rest)
    assert any(line.startswith("metronome: ticks 8") for line in rest)


def test_record_and_replay_over_tcp(spawn: Spawn, tmp_path: Path) -> None:
    recording = tmp_path / "take.osc"
    record, where, _record_errors = start_listener(
        spawn, "record", "--listen", "tcp://127.0.0.1:0", str(recording), "--count", "3"
    )
    for n in range(3):
        subprocess.run(oscsync_command("send", where, "/take", str(n)), check=True)
    assert record.wait(30) == 0
    dump, dump_at, _ = start_listener(
        spawn, "dump", "--listen", "tcp://127.0.0.1:0", "--jsonl", "--count", "3"
    )
    subprocess.run(oscsync_command("replay", str(recording), "--peer", dump_at), check=True)
    assert dump.stdout is not None
    records = [json.loads(line) for line in dump.stdout.read().splitlines()]
    assert [r["args"] for r in records] == [[0], [1], [2]]


def test_a_1mb_packet_recorded_over_tcp_is_replayed(spawn: Spawn, tmp_path: Path) -> None:
    """Issue 27, item 11: a TCP recording of a 1 MB packet made a 3.3 MB line that replay refused
    (1 MiB line limit), --skip-bad too; and with --pcap every packet failed ('tcp://127.0.0.1'
    is not an address) while record said "0 datagrams". Whatever record writes, replay reads;
    the pcap (UDP) leaves out what UDP cannot carry, and says so."""
    recording, pcap = tmp_path / "take.jsonl", tmp_path / "take.pcap"
    record, where, record_errors = start_listener(
        spawn, "record", "--listen", "tcp://127.0.0.1:0", str(recording), "--pcap", str(pcap),
        "--count", "2",
    )  # fmt: skip
    big = codec.encode_message("/big", [bytes(range(256)) * 4096])  # 1 MiB blob
    small = codec.encode_message("/small", [1])
    host, port = where.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as client:
        client.sendall(b"".join(struct.pack(">i", len(p)) + p for p in (big, small)))
        assert record.wait(30) == 0
    summary = record_errors.wait_for(lambda line: line.startswith("record:"))
    assert "record: 2 datagrams" in summary and "dropped 0" in summary
    assert "1 larger than a UDP datagram were left out of the pcap" in summary
    with pcap.open("rb") as f:
        assert [d.data for d in read_capture(f)] == [small]
    dump, dump_at, _ = start_listener(
        spawn, "dump", "--listen", "tcp://127.0.0.1:0", "--jsonl", "--count", "2"
    )
    subprocess.run(oscsync_command("replay", str(recording), "--peer", dump_at), check=True)
    assert dump.stdout is not None
    records = [json.loads(line) for line in dump.stdout.read().splitlines()]
    assert [r["address"] for r in records] == ["/big", "/small"]
    assert bytes.fromhex(records[0]["args"][0]) == bytes(range(256)) * 4096


@pytest.mark.parametrize("option", ["--listen", "--forward"])
def test_netem_refuses_tcp_in_one_line(option: str) -> None:
    other = "--forward" if option == "--listen" else "--listen"
    result = CliRunner().invoke(
        cli, ["netem", option, "tcp://127.0.0.1:9000", other, "127.0.0.1:9001"]
    )
    assert result.exit_code == 2
    assert "netem relays UDP datagrams only; write it without tcp://" in result.output


def test_dump_over_tcp_prints_each_line_as_it_arrives(spawn: Spawn) -> None:
    # dump batches its output and writes when the receive side is idle (issue #18): over TCP the
    # listener's thread says so, so a line does not wait for the next one or for the end.
    dump, where, _ = start_listener(spawn, "dump", "--listen", "tcp://127.0.0.1:0")
    assert dump.stdout is not None
    lines = LineReader(dump.stdout)
    subprocess.run(oscsync_command("send", where, "/now", "1"), check=True)
    assert "/now ,i 1" in lines.wait_for(lambda line: "/now" in line)


FRAMED_SENDERS = {
    "metronome send": ["metronome", "send", "--count", "1"],
    "sequence send": ["sequence", "send", "{pattern}", "--bars", "1"],
    "chat": ["chat", "--listen", "127.0.0.1:0", "--linger", "0"],
}


def first_packet_bytes(server: socket.socket) -> bytes:
    """The first bytes one client sends to ``server`` (a raw TCP socket: no framing assumed)."""
    server.settimeout(30)
    connection, _ = server.accept()
    with connection:
        connection.settimeout(30)
        received = b""
        while len(received) < 8:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("framing", ["slip", "size"])
@pytest.mark.parametrize("command", sorted(FRAMED_SENDERS))
def test_session_commands_frame_tcp_packets_as_framing_says(
    tmp_path: Path, command: str, framing: str
) -> None:
    """Issue #16: ``--framing slip|size`` on every command that sends, not only ``send``."""
    pattern = tmp_path / "beat.txt"
    pattern.write_text("kick: x...\n")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        args = [arg.format(pattern=pattern) for arg in FRAMED_SENDERS[command]]
        args += ["--peer", f"tcp://127.0.0.1:{port}", "--framing", framing]
        proc = subprocess.Popen(
            oscsync_command(*args), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdin is not None
            proc.stdin.write("hi\n")  # chat sends it; the others never read stdin
            proc.stdin.close()
            received = first_packet_bytes(server)
        finally:
            proc.wait(30)
    if framing == "size":
        size = struct.unpack(">i", received[:4])[0]
        assert 8 <= size <= 1024 and received[4:5] in (b"/", b"#")
    else:  # SLIP: END, or a bundle itself first (see tcp.py on liblo's detection); no size
        assert received[:1] in (b"\xc0", b"/", b"#")


@pytest.mark.parametrize(
    ("scheme", "framing", "expected"),
    [
        ("tcp+size", "slip", "size"),
        ("osc.tcp", "slip", "size"),  # as liblo's own clients frame it
        ("tcp+slip", "size", "slip"),
        ("tcp", "size", "size"),
    ],
)
def test_a_peer_url_that_names_its_framing_wins_over_the_option(
    scheme: str, framing: str, expected: str
) -> None:
    """Issue 28: scsynth reads only size-prefixed streams; ``tcp+size://`` (or liblo's
    ``osc.tcp://``) says so per peer, whatever ``--framing`` (SLIP by default) says."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        target = f"{scheme}://127.0.0.1:{port}"
        proc = subprocess.Popen(
            oscsync_command("send", target, "/s_new", "--framing", framing, "--", "x", "-1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            received = first_packet_bytes(server)
        finally:
            proc.wait(30)
    if expected == "size":
        assert received[:8] == struct.pack(">i", 20) + b"/s_n"
    else:
        assert received[:1] in (b"\xc0", b"/")


def test_slip_to_scsynths_port_is_warned_at_once() -> None:
    """scsynth waits silently on a SLIP stream that starts with a bundle (its first bytes read
    as a 593 MB size): no reset to report, so tcp:// to its port says so before sending."""
    warned = CliRunner().invoke(cli, ["send", "tcp://127.0.0.1:57110", "/s_new", "--in", "0.1"])
    assert (
        "warning: tcp://127.0.0.1:57110: port 57110 is scsynth's, which reads only size-prefixed "
        "TCP; if this is scsynth, write tcp+size://127.0.0.1:57110"
    ) in warned.output
    for url in ("tcp+size://127.0.0.1:57110", "tcp+slip://127.0.0.1:57110"):
        quiet = CliRunner().invoke(cli, ["send", url, "/s_new"])
        assert "scsynth" not in quiet.output


def test_one_peer_given_with_two_framings_is_one_line_and_exit_1() -> None:
    result = CliRunner().invoke(
        cli,
        ["metronome", "send", "-p", "tcp://127.0.0.1:1", "-p", "tcp+size://127.0.0.1:1", "-c", "1"],
    )
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: tcp://127.0.0.1:1 and tcp+size://127.0.0.1:1 are one peer given twice with two "
        "framings: give it once, with the framing it reads"
    )
    assert "Traceback" not in result.output
