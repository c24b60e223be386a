"""pd/example1_client_tcp.pd against real, headless Pure Data: chat over TCP both ways (issue #16).

The patch sends with mrpeach's [packOSCstream] -> [tcpclient] (SLIP) and receives with
[tcpserver] -> [unpackOSCstream]; tests move it to free ports through its named receivers
(``oscsync-listen``, ``oscsync-connect``).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO, LineReader, require_peer
from pdharness import PdProcess

EXAMPLE1_TCP = REPO / "pd" / "example1_client_tcp.pd"
SLIP_OBJECTS = Path("/usr/lib/pd/extra/mrpeach")
"""[packOSCstream] and [unpackOSCstream] use mrpeach's [slipenc] and [slipdec] (pd-mrpeach)."""

RunPd = Callable[..., PdProcess]
Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture(autouse=True)
def _slip_objects() -> None:
    if not any(SLIP_OBJECTS.glob("slipenc.*")):
        require_peer(f"{SLIP_OBJECTS}/slipenc (pd-mrpeach)")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_object_creates(run_pd: RunPd) -> None:
    pd = run_pd(EXAMPLE1_TCP, sends=[f"oscsync-listen {free_tcp_port()}"])
    assert pd.creation_failures() == []


def start_chat(
    spawn: Spawn, listen_port: int, pd_port: int
) -> tuple[subprocess.Popen[str], LineReader, LineReader]:
    proc = spawn(
        "chat",
        "--listen",
        f"tcp://127.0.0.1:{listen_port}",
        "--peer",
        f"tcp://127.0.0.1:{pd_port}",
        stdin=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = LineReader(proc.stdout), LineReader(proc.stderr)
    err.wait_for(lambda line: line.startswith("chat: listening"))
    return proc, out, err


def test_chat_over_tcp_to_pd_prints_each_line(run_pd: RunPd, spawn: Spawn) -> None:
    pd_port = free_tcp_port()
    pd = run_pd(EXAMPLE1_TCP, sends=[f"oscsync-listen {pd_port}"])
    proc, _, _ = start_chat(spawn, 0, pd_port)
    lines = ["hello over tcp", "héllo wörld € ✓", "0123456789abcdef" * 256]  # 4 KB: one frame
    assert proc.stdin is not None
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    printed = pd.wait_for_all(r"^chat: ", 3)
    assert printed[:2] == [f"chat: {line}" for line in lines[:2]]
    assert lines[2].startswith(printed[2].removeprefix("chat: "))  # [print] cuts at 1000 bytes
    proc.stdin.close()
    assert proc.wait(10) == 0


def test_pd_over_tcp_to_chat_prints_each_line(run_pd: RunPd, spawn: Spawn) -> None:
    chat_port = free_tcp_port()
    proc, out, err = start_chat(spawn, chat_port, free_tcp_port())
    pd = run_pd(
        EXAMPLE1_TCP,
        sends=[f"oscsync-listen {free_tcp_port()}", f"oscsync-connect 127.0.0.1 {chat_port}"],
    )
    # [tcpclient] connects on a thread and says nothing when it has (PD 0.53, headless): probe
    # until a line arrives; lines sent before the connection are dropped by [tcpclient].
    for attempt in range(50):
        pd.send("oscsync-chat", "probe", attempt)
        try:
            out.wait_for(lambda line: "] probe " in line, timeout=0.2)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("Pure Data never connected to chat over TCP")
    pd.send("oscsync-chat", "hello")
    assert out.wait_for(lambda line: "] probe " not in line).endswith("] hello")
    pd.send("oscsync-chat", "héllo", "wörld", "€")
    assert out.wait_for(lambda line: True).endswith("] héllo wörld €")
    pd.send("oscsync-chat", 3, "pigs")
    assert out.wait_for(lambda line: True).endswith("] 3 pigs")
    words = [f"word{i:03}" for i in range(130)]  # 1 KB of text in one SLIP frame
    pd.send("oscsync-chat", *words)
    assert out.wait_for(lambda line: True).endswith("] " + " ".join(words))
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(10) == 0
    printed = len(out.rest())
    assert err.rest()[-1].endswith(f"received {printed}")  # every line PD sent, probes included


def test_what_headless_pd_prints_at_start_is_explained_on_the_tcp_page(run_pd: RunPd) -> None:
    """Issue 30 item 10: "error: tcpserver: setsockopt SO_REUSEADDR" and the verbose(3) lines
    alarmed a participant, and no page said what they were."""
    pd = run_pd(EXAMPLE1_TCP, sends=[f"oscsync-listen {free_tcp_port()}"])
    page = (REPO / "docs" / "tcp.md").read_text()
    alarming = [line for line in pd.snapshot() if line.startswith(("error:", "verbose("))]
    assert any("SO_REUSEADDR" in line for line in alarming), alarming
    for line in alarming:
        head = re.match(r"error: \w+: [^:]+|verbose\(\d\): \w+", line)
        assert head is not None and head.group(0) in page, line
