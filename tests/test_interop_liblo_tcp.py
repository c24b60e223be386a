"""Against liblo's own tools over TCP (issue #16): oscsend osc.tcp:// -> oscsync dump --listen
tcp://, and oscsync send tcp:// (SLIP and size prefix) -> oscdump osc.tcp://:PORT."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from collections.abc import Callable

import pytest

from conftest import LineReader, oscsync_command, require_peer

Spawn = Callable[..., subprocess.Popen[str]]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dump_tcp(spawn: Spawn, *args: str) -> tuple[subprocess.Popen[str], str]:
    dump = spawn("dump", "--listen", "tcp://127.0.0.1:0", *args)
    assert dump.stderr is not None
    where = LineReader(dump.stderr).wait_for(lambda t: t.startswith("listening on")).split()[-1]
    assert where.startswith("tcp://127.0.0.1:")
    return dump, where


def test_oscsend_over_tcp_every_type_decodes_exactly(spawn: Spawn) -> None:
    oscsend = require_peer("oscsend")
    dump, where = start_dump_tcp(spawn, "--jsonl", "--count", "1")
    assert dump.stdout is not None
    port = where.rsplit(":", 1)[1]
    subprocess.run(
        [oscsend, f"osc.tcp://127.0.0.1:{port}", "/lib", "ihfdsScmTFN",
         "-42", "-9000000000", "3.14159", "2.718281828459045", "naïve text", "sym", "x",
         "90407f00"],
        check=True,
    )  # fmt: skip
    record = json.loads(dump.stdout.readline())
    dump.wait(10)
    assert record["address"] == "/lib"
    assert record["types"] == "ihfdsScmTFN"
    float32 = struct.unpack(">f", struct.pack(">f", 3.14159))[0]
    assert record["args"] == [
        -42, -9000000000, float32, 2.718281828459045, "naïve text", "sym", "x",
        [0x90, 0x40, 0x7F, 0x00], True, False, None,
    ]  # fmt: skip
    assert record["timetag"] is None


def start_oscdump_tcp(port: int) -> tuple[subprocess.Popen[str], LineReader]:
    oscdump = require_peer("oscdump")
    proc = subprocess.Popen(
        [oscdump, "-L", f"osc.tcp://:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = LineReader(proc.stdout)
    # oscdump prints nothing when it is ready: probe until one arrives (a refused connection
    # makes send exit 1 at once).
    for attempt in range(40):
        subprocess.run(oscsync_command("send", f"tcp://127.0.0.1:{port}", "/probe", str(attempt)))
        try:
            lines.wait_for(lambda line: "/probe" in line, timeout=0.25)
            return proc, lines
        except AssertionError:
            continue
    proc.terminate()
    raise AssertionError("oscdump never started listening on TCP")


@pytest.mark.parametrize("framing", ["slip", "size"])
def test_every_type_we_send_over_tcp_is_what_oscdump_prints(framing: str) -> None:
    port = free_tcp_port()
    proc, lines = start_oscdump_tcp(port)
    try:
        subprocess.run(
            oscsync_command(
                "send", f"tcp://127.0.0.1:{port}", "/all", "--framing", framing,
                "--types", "ihfdsbTFNm",
                "-7", "-9000000000", "0.5", "-1234.125", "hi there", "cafe", "01020304",
                "--at", "dd9d15a7.922f48c2",
            ),
            check=True,
        )  # fmt: skip
        line = lines.wait_for(lambda text: "/all" in text)
    finally:
        proc.terminate()
        proc.wait(5)
    assert line == (
        'dd9d15a7.922f48c2 /all ihfdsbTFNm -7 -9000000000 0.500000 -1234.125000 "hi there" '
        "[2b 0xca 0xfe] #T #F Nil MIDI [0x01 0x02 0x03 0x04]"
    )


def test_oscsend_osc_tcp_url_with_trailing_slash_is_accepted_by_send(spawn: Spawn) -> None:
    # liblo prints its URLs as osc.tcp://host:port/ ; pasting one into oscsync works.
    dump, where = start_dump_tcp(spawn, "--jsonl", "--count", "1")
    assert dump.stdout is not None
    port = where.rsplit(":", 1)[1]
    subprocess.run(
        oscsync_command("send", f"osc.tcp://localhost:{port}/", "/pasted", "1"), check=True
    )
    assert json.loads(dump.stdout.readline())["address"] == "/pasted"
    dump.wait(10)
