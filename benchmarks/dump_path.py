"""The whole per-datagram path of ``oscsync dump`` in one process, for profiling (issue 18).

A real endpoint (``open_endpoint``, as ``dump`` opens it: kernel stamps, the standard services
registered) gets ``--count`` queued ``/blast/fader ,if`` datagrams on loopback; its receive loop's
drain (``recvmsg`` -> receive core -> routing -> ``Dumper.print_now`` -> batched write into
/dev/null, flushed as ``on_idle`` does) is then run on this thread. CPU µs per datagram
(``time.process_time``), best of ``--rounds``; ``--profile`` prints cProfile's top entries.

    .venv/bin/python benchmarks/dump_path.py             # --jsonl and text, 20,000 x 5
    .venv/bin/python benchmarks/dump_path.py --profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import time

from pythonosc.osc_message_builder import OscMessageBuilder

from oscsync.apps.dump import Dumper
from oscsync.apps.endpoints import open_endpoint
from oscsync.hostport import HostPort


def datagrams() -> list[bytes]:
    out = []
    for k in range(1000):
        builder = OscMessageBuilder("/blast/fader")
        builder.add_arg(k)
        builder.add_arg(k * 0.5)
        out.append(builder.build().dgram)
    return out


def one_round(jsonl: bool, count: int, profiler: cProfile.Profile | None = None) -> float:
    endpoint = open_endpoint(HostPort("127.0.0.1", 0), allow=())
    with open("/dev/null", "w") as sink:
        dumper = Dumper(sink, jsonl=jsonl, flush_each=False)
        endpoint._core.handler = dumper.print_now
        sock = endpoint._listen_sock
        assert sock is not None and endpoint.local_address is not None
        sock.setblocking(False)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.connect(("127.0.0.1", endpoint.local_address.port))
        packets = datagrams()
        for k in range(count):
            sender.send(packets[k % 1000])
        sender.close()
        before = endpoint.stats.messages
        if profiler is not None:
            profiler.enable()
        start = time.process_time()
        while endpoint.stats.messages - before < count:
            endpoint._drain_msg(sock, False)
            dumper.flush()
        elapsed = time.process_time() - start
        if profiler is not None:
            profiler.disable()
        assert dumper.written == count, (dumper.written, count)
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
    for jsonl in (True, False):
        best = min(one_round(jsonl, args.count) for _ in range(args.rounds))
        print(f"dump {'--jsonl' if jsonl else '(text)'}: {best:.2f} µs CPU per datagram")


if __name__ == "__main__":
    main()
