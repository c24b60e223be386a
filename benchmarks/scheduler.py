"""How close to their timetags do held bundles run? oscsync's Scheduler against python-osc.

In one run, on one machine under the same load, a sender thread sends N bundles (default 500),
each timetagged 50 ms after the moment it is sent, 10 ms apart, over loopback to

  (a) an oscsync Endpoint feeding a Scheduler (one timer thread: sleep, then spin),
  (b) python-osc's BlockingOSCUDPServer with strict timing (sleeps inside the handler),
  (c) python-osc's ThreadingOSCUDPServer with strict timing (a sleeping thread per datagram),

and every handler reads ``time.time()`` first thing. Lateness is that reading minus the bundle's
timetag (both wall clock, the ruler python-osc uses). oscsync waits on the monotonic clock, mapped
to wall time once (see oscsync.clock), so its figure on this ruler also holds any step of the wall
clock against the monotonic one since start-up (a few µs on the workshop VM); its own ruler
(monotonic reading at the end of the spin minus the deadline) is printed beside it. It prints p50/p99/max in µs, the number of
early dispatches (negative lateness) and the ratio of python-osc's p99 to ours.

Then the head-of-line test: a bundle timetagged 0.5 s ahead, immediately followed by a plain
message; how long until the plain message's handler runs (oscsync vs python-osc's blocking server,
where it waits for the bundle's sleep, and the threading server for the record).

    .venv/bin/python benchmarks/scheduler.py            # ~25 s
    .venv/bin/python benchmarks/scheduler.py --quick    # ~8 s

Everything runs on 127.0.0.1 with ports the kernel picks, and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer, ThreadingOSCUDPServer

from oscsync import codec
from oscsync import timetag as tt
from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import SystemClock
from oscsync.hostport import HostPort
from oscsync.scheduler import DEFAULT_SPIN, Dispatch, Scheduler, percentile
from oscsync.transport import Received

LOOPBACK = "127.0.0.1"


@dataclass
class Run:
    name: str
    lateness_us: list[float]
    expected: int
    extra: str = ""

    def row(self) -> str:
        values = sorted(self.lateness_us)
        if not values:
            return f"{self.name:<34} (nothing dispatched)"
        early = sum(1 for v in values if v < 0)
        return (
            f"{self.name:<34} {pct(values, 0.5):>9.1f} {pct(values, 0.99):>9.1f} "
            f"{values[-1]:>10.1f} {values[0]:>9.1f} {early:>6} {len(values):>5}/{self.expected}"
            + (f"  {self.extra}" if self.extra else "")
        )

    @property
    def p99(self) -> float:
        return pct(sorted(self.lateness_us), 0.99)


def pct(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return percentile(sorted_values, fraction)


# -- the sender --------------------------------------------------------------------------------


def send_bundles(port: int, count: int, ahead: float, interval: float, tags: list[int]) -> None:
    """Bundle k carries /bench k and the timetag (send time + ahead); tags[k] keeps it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    try:
        for k in range(count):
            delay = start + k * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            tag = tt.from_unix(time.time() + ahead)
            tags[k] = tag
            sock.sendto(
                codec.encode_bundle(tag, [codec.encode_message("/bench", [k])]), (LOOPBACK, port)
            )
    finally:
        sock.close()


def lateness_from(arrivals: dict[int, float], tags: list[int]) -> list[float]:
    return [(wall - tt.to_unix(tags[k])) * 1e6 for k, wall in arrivals.items()]


# -- the receivers -----------------------------------------------------------------------------


def run_oscsync(count: int, ahead: float, interval: float, spin: float) -> Run:
    clock = SystemClock()
    arrivals: dict[int, float] = {}
    own_early = [0]
    done = threading.Event()

    def make_action(k: int) -> Callable[[Dispatch], None]:
        def action(dispatch: Dispatch) -> None:
            arrivals[k] = time.time()
            own_early[0] += dispatch.dispatched < dispatch.due
            if len(arrivals) == count:
                done.set()

        return action

    scheduler = Scheduler(clock, spin=spin)

    def on_message(received: Received) -> None:
        scheduler.submit(received.timetag, make_action(int(received.args[0])))

    endpoint = open_endpoint(HostPort(LOOPBACK, 0), clock=clock)
    tags = [0] * count
    try:
        scheduler.start()
        endpoint.start(on_message)
        assert endpoint.local_address is not None
        send_bundles(endpoint.local_address.port, count, ahead, interval, tags)
        done.wait(ahead + 5.0)
    finally:
        endpoint.close()
        scheduler.close()
    stats = scheduler.stats()
    inner = (
        f"(own monotonic ruler, at the end of the spin: p50 {stats.lateness_p50 * 1e6:.1f} "
        f"p99 {stats.lateness_p99 * 1e6:.1f} µs, late {stats.late}, early {own_early[0]})"
        if stats.lateness_p99 is not None and stats.lateness_p50 is not None
        else ""
    )
    return Run(
        f"oscsync Scheduler (spin {spin * 1e3:g} ms)", lateness_from(arrivals, tags), count, inner
    )


def run_pythonosc(
    server_class: type[BlockingOSCUDPServer] | type[ThreadingOSCUDPServer],
    count: int,
    ahead: float,
    interval: float,
) -> Run:
    arrivals: dict[int, float] = {}
    done = threading.Event()

    def handler(address: str, *args: Any) -> None:
        now = time.time()
        arrivals[int(args[0])] = now
        if len(arrivals) == count:
            done.set()

    dispatcher = Dispatcher()  # strict_timing=True is python-osc's default
    dispatcher.map("/bench", handler)
    server = server_class((LOOPBACK, 0), dispatcher)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    tags = [0] * count
    try:
        thread.start()
        send_bundles(server.server_address[1], count, ahead, interval, tags)
        done.wait(ahead + 5.0)
    finally:
        server.shutdown()
        server.server_close()
    name = f"python-osc {server_class.__name__.removesuffix('OSCUDPServer')} strict"
    return Run(name, lateness_from(arrivals, tags), count)


# -- head-of-line ------------------------------------------------------------------------------


def head_of_line_once(port: int, plain_seen: threading.Event, far: float) -> float:
    """Send a bundle ``far`` s ahead and, right after, a plain message; seconds until it ran."""
    plain_seen.clear()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        bundle = codec.encode_bundle(
            tt.from_unix(time.time() + far), [codec.encode_message("/far", [0])]
        )
        sock.sendto(bundle, (LOOPBACK, port))
        sent = time.time()
        sock.sendto(codec.encode_message("/plain", [0]), (LOOPBACK, port))
        if not plain_seen.wait(far + 5.0):
            return float("nan")
    return plain_seen_at[0] - sent


plain_seen_at = [0.0]


def hol_oscsync(trials: int, far: float, spin: float) -> list[float]:
    clock = SystemClock()
    seen = threading.Event()
    scheduler = Scheduler(clock, spin=spin)

    def plain(_: Dispatch) -> None:
        plain_seen_at[0] = time.time()
        seen.set()

    def on_message(received: Received) -> None:
        scheduler.submit(received.timetag, plain if received.address == "/plain" else _ignore)

    endpoint = open_endpoint(HostPort(LOOPBACK, 0), clock=clock)
    try:
        scheduler.start()
        endpoint.start(on_message)
        assert endpoint.local_address is not None
        port = endpoint.local_address.port
        delays = []
        for _ in range(trials):
            delays.append(head_of_line_once(port, seen, far))
            time.sleep(0.02)
    finally:
        endpoint.close()
        scheduler.close()
    return delays


def _ignore(_: Dispatch) -> None:
    pass


def hol_pythonosc(
    server_class: type[BlockingOSCUDPServer] | type[ThreadingOSCUDPServer],
    trials: int,
    far: float,
) -> list[float]:
    seen = threading.Event()
    far_done = threading.Event()

    def plain(address: str, *args: Any) -> None:
        plain_seen_at[0] = time.time()
        seen.set()

    dispatcher = Dispatcher()
    dispatcher.map("/plain", plain)
    dispatcher.map("/far", lambda address, *args: far_done.set())
    server = server_class((LOOPBACK, 0), dispatcher)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    delays = []
    try:
        thread.start()
        for _ in range(trials):
            far_done.clear()
            delays.append(head_of_line_once(server.server_address[1], seen, far))
            far_done.wait(far + 5.0)  # one trial's held bundle must not delay the next
    finally:
        server.shutdown()
        server.server_close()
    return delays


def hol_row(name: str, delays: list[float]) -> str:
    ms = [d * 1e3 for d in delays]
    return (
        f"{name:<34} median {statistics.median(ms):>9.3f} ms   max {max(ms):>9.3f} ms"
        f"   ({len(ms)} trials)"
    )


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 bundles, fewer trials (~8 s)")
    parser.add_argument("--bundles", type=int, help="bundles per receiver (default 500)")
    parser.add_argument("--ahead", type=float, default=0.05, help="timetag lead, s (0.05)")
    parser.add_argument("--interval", type=float, default=0.01, help="send interval, s (0.01)")
    parser.add_argument("--spin", type=float, default=DEFAULT_SPIN, help="scheduler spin, s")
    args = parser.parse_args(argv)
    count = args.bundles or (100 if args.quick else 500)
    trials = 3 if args.quick else 10
    slow_trials = 2 if args.quick else 3
    far = 0.5

    print(
        f"scheduler benchmark: {count} bundles {args.ahead * 1e3:g} ms ahead, "
        f"{args.interval * 1e3:g} ms apart, loopback; Python {platform.python_version()}, "
        f"python-osc {version('python-osc')}, {platform.machine()} with "
        f"{_cpus()} CPUs, switch interval {sys.getswitchinterval() * 1e3:g} ms, "
        f"load average {_load()}"
    )
    print("lateness = handler's time.time() - timetag, in µs (negative = early)")
    print(f"{'':<34} {'p50':>9} {'p99':>9} {'max':>10} {'min':>9} {'early':>6} {'got':>5}")
    runs = [
        run_oscsync(count, args.ahead, args.interval, args.spin),
        run_pythonosc(BlockingOSCUDPServer, count, args.ahead, args.interval),
        run_pythonosc(ThreadingOSCUDPServer, count, args.ahead, args.interval),
    ]
    for run in runs:
        print(run.row(), flush=True)
    ours = runs[0]
    for other in runs[1:]:
        ratio = other.p99 / ours.p99 if ours.p99 > 0 else float("inf")
        print(f"p99 ratio {other.name} / oscsync: {ratio:.1f}x")
    early = sum(1 for v in ours.lateness_us if v < 0)
    print(f"oscsync never early: {'yes' if early == 0 else f'NO ({early} early)'}")

    print(f"\nhead-of-line: a plain message sent right after a bundle {far:g} s ahead")
    print(hol_row("oscsync Scheduler", hol_oscsync(trials, far, args.spin)), flush=True)
    print(
        hol_row(
            "python-osc Blocking strict", hol_pythonosc(BlockingOSCUDPServer, slow_trials, far)
        ),
        flush=True,
    )
    print(
        hol_row(
            "python-osc Threading strict", hol_pythonosc(ThreadingOSCUDPServer, slow_trials, far)
        )
    )
    return 0


def _cpus() -> str:
    return str(os.cpu_count())


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
