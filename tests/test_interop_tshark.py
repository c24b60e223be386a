"""Wireshark's OSC dissector (heuristic, off by default) reads the timetag we set."""

from __future__ import annotations

import datetime as dt
import re
import socket
import subprocess

from conftest import LineReader, oscsync_command, require_peer
from oscsync.osc import timetag as tt


def test_tshark_decodes_our_bundle_with_our_timetag() -> None:
    tshark = require_peer("tshark")
    # A listener on the port: a send that nothing receives exits 1 (issue 30).
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    proc = subprocess.Popen(
        [tshark, "-i", "lo", "-f", f"udp port {port}", "--enable-heuristic", "osc_udp",
         "-O", "osc", "-V", "-l", "-c", "1", "-a", "duration:20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        LineReader(proc.stderr).wait_for(lambda line: "Capturing on" in line, timeout=20)
        stamp = tt.parse("dd9d15a7.922f48c2")
        subprocess.run(
            oscsync_command(
                "send", f"127.0.0.1:{port}", "/tick", "3", "--at", tt.format_hex(stamp)
            ),
            check=True,
        )
        out = proc.stdout.read()
        proc.wait(20)
    finally:
        receiver.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Open Sound Control" in out
    assert "Path: /tick" in out
    match = re.search(r"Timetag: (\w+ +\d+, \d{4} \d\d:\d\d:\d\d)\.(\d{9}) UTC", out)
    assert match, out
    shown = dt.datetime.strptime(match.group(1), "%b %d, %Y %H:%M:%S").replace(
        tzinfo=dt.timezone.utc
    )
    shown_ns = int(shown.timestamp()) * 10**9 + int(match.group(2))
    # tshark truncates to nanoseconds; ours rounds: they agree to within one nanosecond.
    assert abs(shown_ns - tt.to_unix_ns(stamp)) <= 1
