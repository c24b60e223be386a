"""#20 item 6 (listener exposure): every socket that receives honours --allow and stays where asked.

The unconnected socket a multicast sender sends from is a listener too: listeners that follow
the sender's clock ping it back by unicast, so it answers whoever reaches it.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path

from click.testing import CliRunner

from conftest import free_udp_port
from oscsync.cli.main import cli
from oscsync.discovery.oscquery import OscQueryServer, host_info, namespace
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc.routing import Received

LOOPBACK_ONLY = [ipaddress.ip_network("127.0.0.1/32")]


def _group() -> HostPort:
    return HostPort(f"239.255.43.{free_udp_port() % 200 + 1}", free_udp_port())


def _probe(payload: bytes, to: tuple[str, int], source: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((source, 0))
        sender.sendto(payload, to)


def _osc(address: str) -> bytes:
    text = address.encode() + b"\0"
    text += b"\0" * (-len(text) % 4)
    return text + b",\0\0\0"


def test_multicast_sender_socket_honours_allow() -> None:
    group = _group()
    heard: list[Received] = []
    got_tick = threading.Event()
    got_friend = threading.Event()
    handled: list[Received] = []

    def on_group(received: Received) -> None:
        heard.append(received)
        got_tick.set()

    def on_sender(received: Received) -> None:
        handled.append(received)
        if received.address == "/friend":
            got_friend.set()

    with (
        Endpoint(group, multicast_interface="127.0.0.1", services={}) as listener,
        Endpoint(
            peers=[group], allow=LOOPBACK_ONLY, multicast_interface="127.0.0.1", services={}
        ) as sender,
    ):
        listener.start(on_group)
        sender.start(on_sender)
        # Where the sender's socket is, as a follower learns it: the source of a group datagram.
        sender.send("/tick", [0])
        assert got_tick.wait(5), "nothing arrived through the loopback multicast group"
        host, port = heard[0].source
        assert host == "127.0.0.1"
        # Bound to the --iface address, not 0.0.0.0: another local address does not reach it.
        _probe(_osc("/other-address"), ("127.0.0.2", port))
        # A stranger reaches it, but --allow drops what it sends (counted).
        _probe(_osc("/stranger"), (host, port), source="127.0.0.2")
        # The datagrams are queued in the order sent: once /friend is handled, so are the others.
        _probe(_osc("/friend"), (host, port))
        assert got_friend.wait(5)
        assert [r.address for r in handled] == ["/friend"]
        assert sender.stats.drops == {"not-allowed": 1}
        assert sender.stats.datagrams == 2


def test_commands_whose_sockets_receive_take_allow(cli_runner: CliRunner, tmp_path: Path) -> None:
    group = _group()
    pattern = tmp_path / "beat.txt"
    pattern.write_text("kick: x...\n")
    result = cli_runner.invoke(
        cli,
        [
            *("sequence", "send", str(pattern), "--peer", str(group), "--iface", "127.0.0.1"),
            *("--allow", "127.0.0.1", "--bars", "1", "--bpm", "600"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = cli_runner.invoke(
        cli,
        [
            *("metronome", "send", "--peer", str(group), "--iface", "127.0.0.1"),
            *("--allow", "127.0.0.1", "--count", "1", "--bpm", "600"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = cli_runner.invoke(
        cli,
        [
            *("clock", "--peer", f"127.0.0.1:{free_udp_port()}", "--allow", "127.0.0.1"),
            *("--count", "1", "--timeout", "0.05"),
        ],
    )
    assert result.exit_code == 1 and "no answer from" in result.output, result.output


def test_an_iface_that_is_not_an_ipv4_address_is_one_line(cli_runner: CliRunner) -> None:
    group = _group()
    for iface, reason in [
        ("bogus", "--iface 'bogus' is not an IPv4 address"),
        ("192.0.2.77", "--iface 192.0.2.77 is not an address of this machine"),
    ]:
        result = cli_runner.invoke(
            cli, ["metronome", "send", "--peer", str(group), "--iface", iface, "--count", "1"]
        )
        assert result.exit_code == 1, result.output
        assert f"Error: cannot send to {group}: {reason}" in result.output
        assert "Traceback" not in result.output


def _http_get(port: int, source: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.bind((source, 0))
        conn.connect(("127.0.0.1", port))
        try:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed by the server before it read the request
    return reply


def test_oscquery_server_honours_allow() -> None:
    # The OSCQuery server of a listener with --advertise is a listening socket too (TCP).
    with OscQueryServer(
        "127.0.0.1", namespace(()), host_info("alice", 9001), allow=LOOPBACK_ONLY
    ) as server:
        assert _http_get(server.port, source="127.0.0.2") == b""
        assert _http_get(server.port, source="127.0.0.1").startswith(b"HTTP/1.1 200 ")
        assert server.rejected == {"not-allowed": 1}
        assert server.served == 1
