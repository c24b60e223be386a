"""OSC over TCP, messages per second: oscsync's TCP listener vs python-osc's TCP server (issue #16).

Each receiver runs in a subprocess on loopback and counts the messages it decodes: oscsync's
``TcpEndpoint`` (framing detected per connection, the shared receive core, a counting handler)
and python-osc's ``ThreadingOSCTCPServer`` (mode 1.1 = SLIP, 1.0 = size prefix, a counting
default handler). The same sender, in this process, writes N pre-framed messages down one
connection as fast as the receiver takes them; the figure is N divided by the time from the
first byte to the receiver's "done" line. Also: a 1 MB blob through oscsync (both framings).

    .venv/bin/python benchmarks/tcp.py            # 200,000 messages per run, 3 runs each
    .venv/bin/python benchmarks/tcp.py --quick    # 20,000 messages, 1 run

Figures depend on the machine and its load; compare the ratio (oscsync / python-osc) measured in
the same run.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from oscsync.net import framing
from oscsync.osc import codec

REPO = Path(__file__).resolve().parent.parent

OSCSYNC_RECEIVER = r"""
import sys, threading
from oscsync.net.hostport import HostPort
from oscsync.net.tcpendpoint import TcpEndpoint
wanted = int(sys.argv[1])
done = threading.Event()
count = 0
def handler(received):
    global count
    count += 1
    if count == wanted:
        done.set()
endpoint = TcpEndpoint(HostPort("127.0.0.1", 0, "tcp"))
endpoint.start(handler)
print(endpoint.local_address.port, flush=True)
done.wait(120)
print("done", count, flush=True)
endpoint.close()
"""

PYTHON_OSC_RECEIVER = r"""
import sys, threading
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_tcp_server import ThreadingOSCTCPServer
wanted, mode = int(sys.argv[1]), sys.argv[2]
done = threading.Event()
count = 0
def handler(*args):
    global count
    count += 1
    if count == wanted:
        done.set()
dispatcher = Dispatcher()
dispatcher.set_default_handler(handler)
server = ThreadingOSCTCPServer(("127.0.0.1", 0), dispatcher, mode=mode)
threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
print(server.server_address[1], flush=True)
done.wait(120)
print("done", count, flush=True)
server.shutdown()
"""


def messages(count: int) -> list[bytes]:
    """``count`` varied two-argument messages (a fader moving)."""
    return [codec.encode_message("/blast/fader", [k, k * 0.5]) for k in range(count)]


def run(receiver: str, args: list[str], stream: bytes, count: int) -> float:
    """Messages per second through ``receiver``; raises if it did not get all of them."""
    proc = subprocess.Popen(
        [sys.executable, "-c", receiver, str(count), *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            start = time.perf_counter()
            view = memoryview(stream)
            for at in range(0, len(stream), 65536):
                sock.sendall(view[at : at + 65536])
            line = proc.stdout.readline()
            elapsed = time.perf_counter() - start
        received = int(line.split()[1])
        if received != count:
            raise RuntimeError(f"received {received} of {count}")
        return count / elapsed
    finally:
        proc.wait(30)


def blob_seconds(framing_mode: framing.Framing) -> float:
    blob = bytes(range(256)) * 4096
    packet = codec.encode_message("/blob", [blob])
    return 1 / run(OSCSYNC_RECEIVER, [], framing.encode(packet, framing_mode), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 messages, one run each")
    options = parser.parse_args()
    count, runs = (20_000, 1) if options.quick else (200_000, 3)
    packets = messages(count)
    slip_stream = b"".join(framing.slip_encode(p) for p in packets)
    size_stream = b"".join(framing.size_encode(p) for p in packets)
    cases = [
        ("oscsync   SLIP", OSCSYNC_RECEIVER, [], slip_stream),
        ("python-osc SLIP (1.1)", PYTHON_OSC_RECEIVER, ["1.1"], slip_stream),
        ("oscsync   size", OSCSYNC_RECEIVER, [], size_stream),
        ("python-osc size (1.0)", PYTHON_OSC_RECEIVER, ["1.0"], size_stream),
    ]
    print(f"{count} messages of {len(packets[0])} bytes down one TCP connection, {runs} run(s)")
    rates: dict[str, float] = {}
    for name, receiver, args, stream in cases:
        rates[name] = statistics.median(run(receiver, args, stream, count) for _ in range(runs))
        print(f"  {name:24} {rates[name]:>10,.0f} msg/s")
    for kind, ours, theirs in (
        ("SLIP", "oscsync   SLIP", "python-osc SLIP (1.1)"),
        ("size", "oscsync   size", "python-osc size (1.0)"),
    ):
        print(f"  ratio oscsync / python-osc, {kind}: {rates[ours] / rates[theirs]:.2f}")
    for mode in framing.FRAMINGS:
        print(f"  1 MB blob, {mode}: {blob_seconds(mode) * 1000:.1f} ms to receive and decode")


if __name__ == "__main__":
    main()
