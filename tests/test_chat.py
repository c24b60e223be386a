"""``oscsync chat``: formatting, the session, the CLI piped and on a terminal, two chats talking."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pyte
import pytest
from click.testing import CliRunner

from conftest import LineReader, free_udp_port, oscsync_command
from oscsync.apps.chat import ChatSession, chat_text, format_received
from oscsync.apps.endpoints import Endpoint, open_endpoint
from oscsync.cli.main import cli
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc.routing import Received
from waiting import wait_until

LINE_HEAD = r"^\[\d\d:\d\d:\d\d 127\.0\.0\.1:\d+\] "


def received(address: str, args: list[object], types: str) -> Received:
    message = codec.decode(codec.encode_message(address, args, types))[0]
    return Received(message, ("127.0.0.1", 9000), 1_700_000_000.25)


class Collector:
    """A loopback listener that keeps every message it gets."""

    def __init__(self) -> None:
        self.messages: list[codec.Message] = []
        self.arrived = threading.Condition()
        self.endpoint = open_endpoint(HostPort("127.0.0.1", 0))
        self.endpoint.start(self._on)
        address = self.endpoint.local_address
        assert address is not None
        self.port = address.port

    def _on(self, item: Received) -> None:
        with self.arrived:
            self.messages.append(item.message)
            self.arrived.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[codec.Message]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.endpoint.close()


# -- formatting --------------------------------------------------------------------------------


def test_chat_text_joins_pd_style_arguments() -> None:
    # PD's [send /chat hello world( is two strings; its numbers are float32.
    assert chat_text(("hello", "world"), "ss") == "hello world"
    assert chat_text((3.0, "pigs"), "fs") == "3 pigs"
    message = received("/chat", [0.1, -2.5, 7], "ffi").message
    assert chat_text(message.args, message.types) == "0.1 -2.5 7"


def test_chat_text_escapes_control_characters() -> None:
    text = chat_text(("\x1b[2Jgone\x07", "tab\there"), "ss")
    assert "\x1b" not in text and "\x07" not in text and "\t" not in text
    assert text == "\\x1b[2Jgone\\x07 tab\\there"


def test_chat_text_pairs_each_value_with_its_tag_after_an_array() -> None:
    # An array is one value but several tags: pairing them 1:1 gave the float the array's ']'
    # and the string the float's 'f' (a TypeError on the callback thread: the line was lost).
    assert chat_text(([], 1.0, "x\x1b"), "[]fs") == r'[[], 1.0, "x\u001b"]'
    assert chat_text((["hi", 2],), "[si]") == '[["hi", 2]]'


def test_format_received_marks_other_addresses() -> None:
    text, is_chat = format_received(received("/chat", ["héllo", "wörld"], "ss"))
    assert is_chat
    assert re.match(LINE_HEAD + "héllo wörld$", text)
    text, is_chat = format_received(received("/tick", [3], "i"))
    assert not is_chat
    assert re.match(LINE_HEAD + r"\(not chat\) /tick ,i 3$", text)


# -- the session -------------------------------------------------------------------------------


def test_session_sends_each_line_as_one_string(collector: Collector) -> None:
    shown: list[tuple[str, bool]] = []
    with Endpoint(peers=[HostPort("127.0.0.1", collector.port)]) as endpoint:
        session = ChatSession(endpoint, lambda text, is_chat: shown.append((text, is_chat)))
        assert session.send_line("hello world")
        assert not session.send_line("")  # nothing to say: nothing sent
        assert session.send_line("3")  # stays a string, not a number
        messages = collector.wait(2)
    assert [(m.address, m.types, m.args) for m in messages] == [
        ("/chat", "s", ("hello world",)),
        ("/chat", "s", ("3",)),
    ]
    session.on_message(received("/chat", ["hi"], "s"))
    session.on_message(received("/tick", [1], "i"))
    assert [is_chat for _, is_chat in shown] == [True, False]
    assert session.summary() == "chat: sent 2 lines, received 1 (and 1 other message)"


# -- the command, in-process (stdin is not a terminal) ----------------------------------------


def test_piped_lines_are_sent_in_order(cli_runner: CliRunner, collector: Collector) -> None:
    lines = ["hello", "héllo wörld €", "x" * 1024, "tab\tand\x1b[31mescape"]
    result = cli_runner.invoke(
        cli,
        ["chat", "--peer", f"127.0.0.1:{collector.port}", "--listen", "0", "--linger", "0"],
        input="\n".join(lines) + "\n",
    )
    assert result.exit_code == 0, result.output
    assert [m.args[0] for m in collector.wait(len(lines))] == lines
    assert "chat: sent 4 lines, received 0" in result.stderr


def test_missing_or_bad_peer_is_a_usage_error(cli_runner: CliRunner) -> None:
    result = cli_runner.invoke(cli, ["chat"])
    assert result.exit_code == 2
    assert "Missing option '--peer'" in result.output
    result = cli_runner.invoke(cli, ["chat", "--peer", "9000"])
    assert result.exit_code == 2
    assert "Invalid value for '--peer'" in result.output


def test_port_in_use_is_one_line_error(cli_runner: CliRunner) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = cli_runner.invoke(
            cli, ["chat", "--peer", "127.0.0.1:9", "--listen", str(port)], input=""
        )
    assert result.exit_code == 1
    assert "already in use" in result.output
    assert "Traceback" not in result.output


# -- the command as a process ------------------------------------------------------------------


def start_chat(
    spawn: Callable[..., subprocess.Popen[str]], listen: int, peer: int, *extra: str
) -> tuple[subprocess.Popen[str], LineReader, LineReader]:
    proc = spawn(
        "chat",
        "--listen",
        str(listen),
        "--peer",
        f"127.0.0.1:{peer}",
        *extra,
        stdin=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = LineReader(proc.stdout), LineReader(proc.stderr)
    err.wait_for(lambda line: line.startswith("chat: listening on"))
    return proc, out, err


def test_two_chats_talk_with_swapped_ports(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    port_a, port_b = free_udp_port(), free_udp_port()
    a, a_out, a_err = start_chat(spawn, port_a, port_b)
    b, b_out, b_err = start_chat(spawn, port_b, port_a)
    assert a.stdin is not None and b.stdin is not None
    a.stdin.write("hello from A\n")
    a.stdin.flush()
    assert re.match(LINE_HEAD + "hello from A$", b_out.wait_for(lambda s: "from A" in s))
    b.stdin.write("ünïcödé from B\n")
    b.stdin.flush()
    assert re.match(LINE_HEAD + "ünïcödé from B$", a_out.wait_for(lambda s: "from B" in s))
    a.stdin.close()
    b.stdin.close()
    assert a.wait(10) == 0 and b.wait(10) == 0
    assert "chat: sent 1 line, received 1" in a_err.rest()
    assert "chat: sent 1 line, received 1" in b_err.rest()


def test_network_control_characters_are_escaped_and_others_dimmed(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    port = free_udp_port()
    proc, out, _ = start_chat(spawn, port, free_udp_port())
    with open_endpoint(peers=[HostPort("127.0.0.1", port)]) as sender:
        sender.send("/chat", ["\x1b]0;pwned\x07\x1b[2J", "ok"], types="ss")
        line = out.wait_for(lambda s: s.endswith("ok"))
        sender.send("/tick", [3], types="i")
        other = out.wait_for(lambda s: "/tick" in s)
    assert "\x1b" not in line and "\x07" not in line
    assert line.endswith("\\x1b]0;pwned\\x07\\x1b[2J ok")
    assert re.match(LINE_HEAD + r"\(not chat\) /tick ,i 3$", other)  # no colour when piped
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_peer_not_listening_warns_and_keeps_going(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    proc, _, err = start_chat(spawn, free_udp_port(), free_udp_port(), "--wait", "0")
    assert proc.stdin is not None
    proc.stdin.write("anyone?\n")
    proc.stdin.flush()
    assert "nothing is listening" in err.wait_for(lambda s: "warning" in s)
    proc.stdin.write("still here\n")
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert any(line.startswith("chat: sent 2 lines") for line in err.rest())


def test_piped_chat_says_when_its_peer_never_listened(cli_runner: CliRunner) -> None:
    """Issue 30 item 3: a piped chat holds its first line until the peer listens, and says so
    (exit 1) when it never did, instead of "sent 1 line" for a line that was lost."""
    result = cli_runner.invoke(
        cli,
        ["chat", "--peer", f"127.0.0.1:{free_udp_port()}", "--listen", "0", "--wait", "0.3"],
        input="anyone?\n",
    )
    assert result.exit_code == 1
    assert "chat: sent 0 lines" in result.output
    assert "Error: nothing listened at 127.0.0.1:" in result.output
    assert "within 0.3 s (ICMP port unreachable each time): no line was delivered" in result.output


def test_echo_pipe_sends_then_exits_after_linger(collector: Collector) -> None:
    started = time.monotonic()
    done = subprocess.run(
        oscsync_command("chat", "--peer", f"127.0.0.1:{collector.port}", "--listen", "0"),
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 0.5  # the default --linger
    assert collector.wait(1)[0].args == ("hi",)


# -- on a terminal -----------------------------------------------------------------------------


class Terminal:
    """``oscsync chat`` on a pseudo-terminal: type keys, read the screen as a person sees it.

    The bytes the program writes go through a terminal emulator (pyte), so tests assert what is
    on the screen (rows of text), not which escape sequences drew it.
    """

    def __init__(self, *args: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            # A terminal that answers no cursor-position requests, as pyte does not.
            env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
            env.pop("NO_COLOR", None)
            os.execve(sys.executable, oscsync_command(*args), env)
        self.screen = b""
        self._emulator = pyte.Screen(100, 30)
        self._stream = pyte.ByteStream(self._emulator)

    def _read_ready(self) -> bool:
        """Feed the emulator what the program has written so far (without waiting); False once
        the program has closed the terminal."""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                return False
            self.screen += data
            self._stream.feed(data)
        return True

    def rows(self) -> list[str]:
        """The visible screen, one string per row, trailing blanks removed, empty rows dropped."""
        return [row.rstrip() for row in self._emulator.display if row.strip()]

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 10.0) -> list[str]:
        """The rows once ``predicate(rows)`` holds."""

        def shown() -> bool:
            still_open = self._read_ready()
            if predicate(self.rows()):  # what it wrote last counts, even if it then closed
                return True
            if not still_open:
                raise AssertionError(f"terminal closed; screen: {self.rows()!r}")
            return False

        wait_until(shown, timeout, "the expected screen", state=self.rows)
        return self.rows()

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def close(self) -> int:
        """Wait for the exit code; keep draining the screen (a tty's close waits for it)."""
        statuses: list[int] = []

        def exited() -> bool:
            self._read_ready()  # a closed terminal is expected here: the exit status tells
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                statuses.append(status)
            return bool(pid)

        try:
            try:
                wait_until(exited, 10, "chat to exit", state=self.rows)
            except AssertionError:
                os.kill(self.pid, signal.SIGKILL)
                statuses.append(os.waitpid(self.pid, 0)[1])
            return os.waitstatus_to_exitcode(statuses[0])
        finally:
            os.close(self.fd)


def _prompt_is(text: str) -> Callable[[list[str]], bool]:
    return lambda rows: bool(rows) and rows[-1] == text


def test_incoming_line_does_not_garble_the_one_being_typed(collector: Collector) -> None:
    port = free_udp_port()
    term = Terminal("chat", "--listen", str(port), "--peer", f"127.0.0.1:{collector.port}")
    try:
        term.wait_for(_prompt_is(">"))
        term.type(b"hel")
        term.wait_for(_prompt_is("> hel"))
        with open_endpoint(peers=[HostPort("127.0.0.1", port)]) as sender:
            sender.send("/chat", ["incoming", "line"], types="ss")
        # The message gets its own row, then the prompt comes back with the half-typed word.
        rows = term.wait_for(lambda rows: len(rows) >= 2 and rows[-2].endswith("incoming line"))
        assert rows[-1] == "> hel"
        assert re.match(LINE_HEAD + "incoming line$", rows[-2]), rows
        term.type(b"lo\r")
        assert collector.wait(1)[0].args == ("hello",)  # what was typed stayed intact
        term.wait_for(lambda rows: rows[-2:] == ["> hello", ">"])  # reading the next line
        term.type(b"\x04")  # Ctrl-D
        term.wait_for(lambda rows: any("chat: sent 1 line, received 1" in r for r in rows))
    finally:
        code = term.close()
    assert code == 0, term.rows()


def test_chat_prompt_and_typed_text_survive_a_burst_of_incoming_lines(
    collector: Collector,
) -> None:
    # Issue #13: 30-100 lines 1-5 ms apart made the prompt vanish in 3 of 4 tries (GNU readline
    # redraw). Here 100 lines are sent back to back, a harsher burst than that.
    port = free_udp_port()
    term = Terminal("chat", "--listen", str(port), "--peer", f"127.0.0.1:{collector.port}")
    try:
        term.wait_for(_prompt_is(">"))
        term.type(b"half a line")
        term.wait_for(_prompt_is("> half a line"))
        with open_endpoint(peers=[HostPort("127.0.0.1", port)]) as sender:
            for k in range(100):
                sender.send("/chat", [f"burst {k}"], types="s")
        rows = term.wait_for(lambda rows: len(rows) >= 2 and rows[-2].endswith("burst 99"))
        assert rows[-1] == "> half a line", rows
        term.type(b"!\r")
        assert collector.wait(1)[0].args == ("half a line!",)  # the typed text stayed intact
        term.wait_for(lambda rows: rows[-2:] == ["> half a line!", ">"])  # reading the next line
        term.type(b"\x04")  # Ctrl-D
        term.wait_for(lambda rows: any("chat: sent 1 line, received 100" in r for r in rows))
    finally:
        code = term.close()
    assert code == 0, term.rows()


def test_ctrl_c_on_a_terminal_ends_cleanly_on_a_fresh_line() -> None:
    term = Terminal("chat", "--listen", "0", "--peer", f"127.0.0.1:{free_udp_port()}")
    try:
        term.wait_for(_prompt_is(">"))
        term.type(b"half a line")
        term.wait_for(_prompt_is("> half a line"))
        term.type(b"\x03")  # Ctrl-C
        rows = term.wait_for(lambda rows: rows[-1].startswith("chat: sent 0 lines"))
    finally:
        code = term.close()
    assert code == 0, term.rows()
    assert rows[-2:] == ["> half a line", "chat: sent 0 lines, received 0"]


def test_sigterm_while_the_prompt_reads_stops_cleanly() -> None:
    term = Terminal("chat", "--listen", "0", "--peer", f"127.0.0.1:{free_udp_port()}")
    try:
        term.wait_for(_prompt_is(">"))
        term.type(b"typed")
        term.wait_for(_prompt_is("> typed"))
        os.kill(term.pid, signal.SIGTERM)
        term.wait_for(lambda rows: rows[-1].startswith("chat: sent 0 lines"))
    finally:
        code = term.close()
    assert code == 0, term.rows()
    assert not any("Traceback" in row for row in term.rows())
    # The prompt put the terminal back: bracketed paste, turned on while it read, is off again.
    assert term.screen.rfind(b"\x1b[?2004l") > term.screen.rfind(b"\x1b[?2004h")


def test_console_drops_and_counts_lines_when_the_terminal_falls_behind() -> None:
    import io
    import queue

    from oscsync.terminal.console import _BACKLOG_LIMIT, Console

    class StalledProxy(io.StringIO):
        """Stands in for prompt_toolkit's stdout proxy with a terminal that stopped reading."""

        def __init__(self) -> None:
            super().__init__()
            self._flush_queue: queue.Queue[str] = queue.Queue()

    out = StalledProxy()
    console = Console(out)
    for k in range(_BACKLOG_LIMIT):
        out._flush_queue.put(f"line {k}")
    console.print("one too many")
    assert console.dropped == 1 and out.getvalue() == ""
    out._flush_queue.get()
    console.print("room again")
    assert console.dropped == 1 and out.getvalue() == "room again\n"
