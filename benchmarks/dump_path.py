"""The whole per-datagram path of ``oscsync dump`` in one process, for profiling (issue 18).

A real endpoint (``open_endpoint``, as ``dump`` opens it: kernel stamps, the standard services
registered) gets ``--count`` queued ``/blast/fader ,if`` datagrams on loopback; its receive loop's
drain (``recvmsg`` -> receive core -> routing -> ``Dumper.print_now`` -> batched write into
/dev/null, flushed as ``on_idle`` does) is then run on this thread. CPU µs per datagram
(``time.process_time``), best of ``--rounds``, alternating with the same for python-osc's part of
its ``BlockingOSCUDPServer`` (``recvfrom`` and ``Dispatcher.call_handlers_for_packet`` with a no-op
default handler; without socketserver's per-request machinery, so a harder baseline than
``benchmarks/throughput.py``'s). "after a kernel drop" is ``--jsonl`` on a socket that has
dropped a datagram before, as under a flood: Linux then reports its drop count on every
datagram. ``--profile`` prints cProfile's top entries for ``--jsonl``.

    .venv/bin/python benchmarks/dump_path.py             # 20,000 datagrams x 5 rounds
    .venv/bin/python benchmarks/dump_path.py --profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import time

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder

from oscsync.apps.dump import Dumper
from oscsync.apps.endpoints import open_endpoint
from oscsync.net.hostport import HostPort
from oscsync.net.udp import DEFAULT_RECV_BUFFER
from oscsync.net.udpsocket import set_recv_buffer


def datagrams() -> list[bytes]:
    out = []
    for k in range(1000):
        builder = OscMessageBuilder("/blast/fader")
        builder.add_arg(k)
        builder.add_arg(k * 0.5)
        out.append(builder.build().dgram)
    return out


def queued(count: int) -> tuple[socket.socket, socket.socket]:
    """A bound socket with ``count`` datagrams waiting, and the socket that sent them."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    set_recv_buffer(receiver, DEFAULT_RECV_BUFFER)  # as the endpoint's
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2.0)  # a datagram the kernel dropped ends the round, not the benchmark
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    packets = datagrams()
    for k in range(count):
        sender.send(packets[k % 1000])
    return receiver, sender


def python_osc_round(count: int) -> float:
    dispatcher = Dispatcher()
    handled = 0

    def handler(*_: object) -> None:
        nonlocal handled
        handled += 1

    dispatcher.set_default_handler(handler)
    receiver, sender = queued(count)
    start = time.process_time()
    for _ in range(count):
        data, source = receiver.recvfrom(65535)
        dispatcher.call_handlers_for_packet(data, source)
    elapsed = time.process_time() - start
    receiver.close()
    sender.close()
    assert handled == count, (handled, count)
    return elapsed / count * 1e6


def one_round(
    jsonl: bool, count: int, profiler: cProfile.Profile | None = None, after_drop: bool = False
) -> float:
    endpoint = open_endpoint(HostPort("127.0.0.1", 0), allow=())
    with open("/dev/null", "w") as sink:
        dumper = Dumper(sink, jsonl=jsonl, flush_each=False)
        endpoint._core.handler = dumper.print_now
        sock = endpoint._listen_sock
        assert sock is not None and endpoint.local_address is not None
        sock.setblocking(False)
        drain = endpoint._drain_msg if hasattr(socket.socket, "recvmsg") else endpoint._drain_from
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.connect(("127.0.0.1", endpoint.local_address.port))
        packets = datagrams()
        if after_drop:
            # As under a flood: once the kernel has dropped a datagram, Linux reports the
            # socket's drop count (SO_RXQ_OVFL) on every datagram read after.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            for k in range(200):
                sender.send(packets[k])
            for _ in range(3):
                drain(sock, False)
            dumper.flush()
            set_recv_buffer(sock, DEFAULT_RECV_BUFFER)
        for k in range(count):
            sender.send(packets[k % 1000])
        sender.close()
        before = endpoint.stats.messages
        written = dumper.written
        if profiler is not None:
            profiler.enable()
        start = time.process_time()
        while endpoint.stats.messages - before < count:
            seen = endpoint.stats.messages
            drain(sock, False)
            dumper.flush()
            if endpoint.stats.messages == seen:
                break  # the kernel dropped some: the assert below says so
        elapsed = time.process_time() - start
        if profiler is not None:
            profiler.disable()
        assert dumper.written - written == count, (dumper.written - written, count)
    endpoint.close()
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        one_round(True, args.count, profiler)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return
    variants = {
        "python-osc recvfrom + dispatch": lambda: python_osc_round(args.count),
        "dump --jsonl": lambda: one_round(True, args.count),
        "dump (text)": lambda: one_round(False, args.count),
        "dump --jsonl, after a kernel drop": lambda: one_round(True, args.count, after_drop=True),
    }
    best = {name: float("inf") for name in variants}
    for round_number in range(args.rounds):
        names = list(variants) if round_number % 2 == 0 else list(variants)[::-1]
        for name in names:
            best[name] = min(best[name], variants[name]())
    base = best["python-osc recvfrom + dispatch"]
    for name, figure in best.items():
        print(f"{name:34s} {figure:5.2f} µs CPU per datagram ({base / figure:.2f}x python-osc's)")


if __name__ == "__main__":
    main()
