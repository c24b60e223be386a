"""Against liblo's own tools: oscsync send -> oscdump, and oscsend -> oscsync dump --jsonl."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Callable

from conftest import LineReader, free_udp_port, oscsync_command, require_peer
from oscsync.osc import timetag as tt

Spawn = Callable[..., subprocess.Popen[str]]


def start_oscdump(port: int) -> tuple[subprocess.Popen[str], LineReader]:
    oscdump = require_peer("oscdump")
    proc = subprocess.Popen(
        [oscdump, "-L", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    return proc, LineReader(proc.stdout)


def wait_until_listening(port: int, lines: LineReader) -> None:
    # oscdump prints nothing when it is ready: send probes until one is echoed back.
    for attempt in range(40):
        subprocess.run(
            oscsync_command("send", f"127.0.0.1:{port}", "/probe", str(attempt)), check=True
        )
        try:
            lines.wait_for(lambda line: "/probe" in line, timeout=0.25)
            return
        except AssertionError:
            continue
    raise AssertionError("oscdump never started listening")


def test_every_type_we_send_is_what_oscdump_prints() -> None:
    port = free_udp_port()
    proc, lines = start_oscdump(port)
    try:
        wait_until_listening(port, lines)
        # Values chosen to print exactly in oscdump's %f notation.
        subprocess.run(
            oscsync_command(
                "send", f"127.0.0.1:{port}", "/all", "--types", "ihfdsbTFNm",
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


def test_send_in_gives_oscdump_a_timetag_ahead_of_now() -> None:
    port = free_udp_port()
    proc, lines = start_oscdump(port)
    try:
        wait_until_listening(port, lines)
        before = tt.from_unix(float(subprocess.check_output(
            oscsync_command("timetag", "now", "--format", "unix"), text=True)))  # fmt: skip
        subprocess.run(
            oscsync_command("send", f"127.0.0.1:{port}", "/later", "1", "--in", "0.5"), check=True
        )
        line = lines.wait_for(lambda text: "/later" in text)
    finally:
        proc.terminate()
        proc.wait(5)
    printed = tt.parse(line.split()[0])
    ahead = tt.difference(printed, before)
    assert 0.5 <= ahead < 5.0


def test_oscsend_types_decode_exactly(spawn: Spawn) -> None:
    oscsend = require_peer("oscsend")
    dump = spawn("dump", "--listen", "127.0.0.1:0", "--jsonl", "--count", "1")
    assert dump.stderr is not None and dump.stdout is not None
    where = LineReader(dump.stderr).wait_for(lambda t: t.startswith("listening on")).split()[-1]
    host, port = where.rsplit(":", 1)
    subprocess.run(
        [oscsend, host, port, "/lib", "ihfdsScmTFN",
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
