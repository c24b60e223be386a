"""Per-datagram cost of the receive path: kernel arrival stamps (SO_TIMESTAMPNS) vs a clock read.

Queues N small OSC datagrams in a listener's socket while its receive thread is not running, then
starts the thread and times how long it takes to read, stamp and decode them all (handler: a
counter). Both variants run in the same process, alternately, so machine load hits both alike;
the figure to read is the ratio (the best rounds are the least disturbed by load). Where the platform has no SO_TIMESTAMPNS both rows are the
clock read.

    .venv/bin/python benchmarks/receive_path.py            # 20,000 datagrams x 5 rounds
    .venv/bin/python benchmarks/receive_path.py --count 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time

from oscsync.apps.endpoints import open_endpoint
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc.routing import Received


def one_round(count: int, kernel_stamps: bool) -> tuple[float, str]:
    """Seconds to drain ``count`` queued datagrams, and which arrival stamps were used."""
    endpoint = open_endpoint(
        HostPort("127.0.0.1", 0), recv_buffer=64 * 1024 * 1024, kernel_stamps=kernel_stamps
    )
    where = endpoint.local_address
    assert where is not None
    data = codec.encode_message("/blast/fader", [1, 0.5])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.connect(where.sockaddr)
        for _ in range(count):
            sender.send(data)
    done = threading.Event()
    seen = 0

    def handler(_: Received) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    start = time.perf_counter()
    endpoint.start(handler)
    finished = done.wait(60)
    elapsed = time.perf_counter() - start
    endpoint.close()
    dropped = endpoint.stats.drops.get("kernel-buffer-full", 0)
    if not finished:
        raise SystemExit(f"only {seen} of {count} read ({dropped} dropped by the kernel)")
    return elapsed, endpoint.stats.arrival_stamps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    stamps: dict[bool, str] = {}
    for round_number in range(args.rounds):
        # Alternate which goes first, so a warming cache or a load spike does not favour one.
        for kernel in (False, True) if round_number % 2 else (True, False):
            elapsed, stamps[kernel] = one_round(args.count, kernel)
            times[kernel].append(elapsed)
    print(f"{args.count} datagrams x {args.rounds} rounds, per datagram (best and median round):")
    best = {k: min(v) / args.count * 1e6 for k, v in times.items()}
    medians = {k: statistics.median(v) / args.count * 1e6 for k, v in times.items()}
    for kernel in (False, True):
        print(
            f"  arrival from {stamps[kernel]:6}: best {best[kernel]:6.2f} us "
            f"({1e6 / best[kernel]:,.0f}/s), median {medians[kernel]:6.2f} us"
        )
    print(
        f"  ratio kernel/clock: best {best[True] / best[False]:.3f}, "
        f"median {medians[True] / medians[False]:.3f} (above 1: kernel stamps cost more)"
    )


if __name__ == "__main__":
    main()
