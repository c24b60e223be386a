"""pd/example1_client.pd against real, headless Pure Data: it opens cleanly and chats with us.

The patch listens on 9000 and sends to 9001 by default; tests move it to free ports through its
named receivers (``oscsync-listen``, ``oscsync-connect``) so they never collide with anything.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

import pytest

from conftest import REPO, LineReader, free_udp_port
from oscsync.osc import codec
from pdharness import PdProcess

EXAMPLE1 = REPO / "pd" / "example1_client.pd"
PROBE = REPO / "tests" / "pd" / "osc_probe.pd"
PD_PRINT_LIMIT = 900
"""PD's [print] cuts a line at MAXPDSTRING (1000 bytes); a 1 KB line is checked by length instead."""

RunPd = Callable[..., PdProcess]
Spawn = Callable[..., subprocess.Popen[str]]


def start_example1(
    run_pd: RunPd, chat_port: int, sends: tuple[str, ...] = ()
) -> tuple[PdProcess, int]:
    """Example 1 listening on a free port and sending to ``chat_port``; (pd, its port)."""
    pd_port = free_udp_port()
    pd = run_pd(
        EXAMPLE1,
        sends=[f"oscsync-listen {pd_port}", f"oscsync-connect 127.0.0.1 {chat_port}", *sends],
    )
    return pd, pd_port


def test_every_object_creates(run_pd: RunPd) -> None:
    pd = run_pd(EXAMPLE1, sends=[f"oscsync-listen {free_udp_port()}"])
    assert pd.creation_failures() == []


def test_loadbang_sends_to_oscsync_chats_default_port(run_pd: RunPd) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as chat:
        try:  # oscsync chat's default; free in the tests' own network namespace (make test)
            chat.bind(("127.0.0.1", 9001))
        except OSError as exc:
            pytest.skip(f"127.0.0.1:9001 is taken here: {exc.strerror}")
        chat.settimeout(10)
        run_pd(EXAMPLE1, sends=[f"oscsync-listen {free_udp_port()}", "oscsync-chat hi"])
        (message,) = codec.decode(chat.recv(2048))
    assert (message.address, message.args) == ("/chat", ("hi",))


def test_patch_opens_without_search_paths() -> None:
    """The [declare] alone is enough (what a participant gets double-clicking the file)."""
    from conftest import require_peer

    pd = require_peer("pd")
    argv = [pd, "-nogui", "-nosound", "-nomidi", "-stderr", "-noprefs", "-open", str(EXAMPLE1)]
    argv += ["-send", f"oscsync-listen {free_udp_port()}", "-send", "pd quit"]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0
    assert "couldn't create" not in done.stderr


LINES = ["hello from python", "héllo wörld € ✓", "tab\there and \x1b[31mescape\x1b[0m;,$1"]


def test_chat_to_pd_prints_each_line(run_pd: RunPd, spawn: Spawn) -> None:
    chat_port = free_udp_port()
    pd, pd_port = start_example1(run_pd, chat_port)
    long_line = "0123456789abcdef" * 64  # 1 KB
    proc = spawn(
        "chat",
        "--peer",
        f"127.0.0.1:{pd_port}",
        "--listen",
        str(chat_port),
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write("\n".join([*LINES, long_line]) + "\n")
    proc.stdin.close()
    printed = pd.wait_for_all(r"^chat: ", len(LINES) + 1)
    # PD prints control characters as they are: the patch is for people, not terminals.
    assert printed[: len(LINES)] == [f"chat: {line}" for line in LINES]
    shown = printed[-1].removeprefix("chat: ")
    assert len(shown) >= PD_PRINT_LIMIT and long_line.startswith(shown)
    assert proc.wait(10) == 0
    assert pd.creation_failures() == []


def test_a_1kb_line_reaches_pd_whole(run_pd: RunPd, spawn: Spawn) -> None:
    """The same receive chain as example 1 ([udpreceive] [unpackOSC] [routeOSC /chat]) counts."""
    pd_port = free_udp_port()
    pd = run_pd(PROBE, sends=[f"probe-listen {pd_port}"])
    proc = spawn("chat", "--peer", f"127.0.0.1:{pd_port}", "--listen", "0", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write("0123456789abcdef" * 64 + "\n")
    proc.stdin.close()
    assert pd.wait_for(r"^probe-length: ") == "probe-length: 1024"
    assert proc.wait(10) == 0


def test_pd_to_chat_prints_each_line(run_pd: RunPd, spawn: Spawn) -> None:
    chat_port = free_udp_port()
    proc = spawn("chat", "--peer", "127.0.0.1:9", "--listen", str(chat_port), stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = LineReader(proc.stdout), LineReader(proc.stderr)
    err.wait_for(lambda line: line.startswith("chat: listening"))
    # The issue's own example: -send "oscsync-chat hello" sends /chat hello.
    pd, _ = start_example1(run_pd, chat_port, sends=("oscsync-chat hello",))
    assert out.wait_for(lambda line: True).endswith("] hello")
    pd.send("oscsync-chat", "héllo", "wörld", "€")
    assert out.wait_for(lambda line: True).endswith("] héllo wörld €")
    pd.send("oscsync-chat", 3, "pigs")  # PD numbers are floats: shown as 3, not 3.0
    assert out.wait_for(lambda line: True).endswith("] 3 pigs")
    pd.send("oscsync-chat", "bell\x07and\x1b[2Jclear")
    line = out.wait_for(lambda line: True)
    assert line.endswith("] bell\\x07and\\x1b[2Jclear")  # escaped, never executed
    words = [f"word{i:03}" for i in range(130)]  # 1 KB of text, as 130 OSC strings
    pd.send("oscsync-chat", *words)
    line = out.wait_for(lambda line: True)
    assert line.endswith("] " + " ".join(words))
    assert len(" ".join(words)) >= 1024
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert "received 5" in err.rest()[-1]


# Issue 30 item 3: the headless recipe of docs/example1-chat.md, in both start orders. The
# piped chat holds its first line until PD listens; PD answers the first line it receives.
PYTHON_LINES = ["hello from python", "ça va? 🎵"]
ANSWER = "hello from Pure Data"


def _piped_chat(spawn: Spawn, chat_port: int, pd_port: int) -> subprocess.Popen[str]:
    proc = spawn(
        "chat", "--peer", f"127.0.0.1:{pd_port}", "--listen", str(chat_port), "--linger", "2",
        stdin=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write("\n".join(PYTHON_LINES) + "\n")
    proc.stdin.close()
    return proc


def _both_directions_arrived(pd: PdProcess, proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.wait(20) == 0, err
    assert pd.wait_for_all(r"^chat: ", 2) == [f"chat: {line}" for line in PYTHON_LINES]
    assert out.rstrip("\n").endswith(f"] {ANSWER}"), out
    assert "chat: sent 2 lines, received 1" in err


def test_headless_recipe_with_pd_started_first(run_pd: RunPd, spawn: Spawn) -> None:
    chat_port = free_udp_port()
    pd, pd_port = start_example1(run_pd, chat_port, sends=(f"oscsync-answer {ANSWER}",))
    _both_directions_arrived(pd, _piped_chat(spawn, chat_port, pd_port))


def test_headless_recipe_with_oscsync_started_first(run_pd: RunPd, spawn: Spawn) -> None:
    chat_port, pd_port = free_udp_port(), free_udp_port()
    proc = _piped_chat(spawn, chat_port, pd_port)
    assert proc.stderr is not None
    errors = LineReader(proc.stderr)
    errors.wait_for(lambda line: "nothing is listening" in line)  # its first line was refused
    pd = run_pd(
        EXAMPLE1,
        sends=[
            f"oscsync-listen {pd_port}",
            f"oscsync-connect 127.0.0.1 {chat_port}",
            f"oscsync-answer {ANSWER}",
        ],
    )
    assert proc.wait(20) == 0
    assert proc.stdout is not None
    assert proc.stdout.read().rstrip("\n").endswith(f"] {ANSWER}")
    assert pd.wait_for_all(r"^chat: ", 2) == [f"chat: {line}" for line in PYTHON_LINES]
    rest = errors.rest()
    assert any(f"127.0.0.1:{pd_port} is listening (after" in line for line in rest), rest
    assert any("chat: sent 2 lines, received 1" in line for line in rest), rest


def test_pd_answers_only_once(run_pd: RunPd, spawn: Spawn) -> None:
    """Two patches answering each other must not ping-pong forever."""
    chat_port = free_udp_port()
    pd, pd_port = start_example1(run_pd, chat_port, sends=(f"oscsync-answer {ANSWER}",))
    proc = _piped_chat(spawn, chat_port, pd_port)
    assert proc.stdout is not None
    assert proc.wait(20) == 0
    assert len(pd.wait_for_all(r"^chat: ", 2)) == 2  # two lines arrived ...
    assert proc.stdout.read().count(ANSWER) == 1  # ... and only the first was answered
