"""Callback lateness through the public API against python-osc's strict timing (issue 28).

In one run, on one machine, each receiver gets the same load: a sender thread sends N bundles
(default 300), 10 ms apart, each timetagged ``--ahead`` (55 ms) after the moment it is sent, over
loopback. Each bundle holds ``/bench K``. The receivers, one after another:

  (a) ``oscsync.Endpoint.on("/bench", callback)``: the bundle is held until its timetag and the
      callback runs then, on the endpoint's scheduler thread (sleep, then spin);
  (b) ``oscsync.Endpoint.call_at(timetag, callable)``: a callable at a timetag, submitted by a
      callback that runs on arrival (``hold=False``): the API's scheduler without the hold;
  (c) python-osc's ThreadingOSCUDPServer with its dispatcher's strict timing (a thread per
      datagram that sleeps until the timetag);
  (d) python-osc's BlockingOSCUDPServer with strict timing (sleeps inside the handler, so each
      bundle waits for the one before it).

Every callback reads ``time.time()`` first thing; lateness is that reading minus the bundle's
timetag (both wall clock: python-osc's ruler). It prints p50, p99 and max in µs, the earliest
(negative: early), how many ran more than 1 ms late, and how many ran at all. ``--busy`` keeps
one core busy (a ``yes`` process) for the whole run, the same for every receiver.

    .venv/bin/python benchmarks/api.py              # ~15 s
    .venv/bin/python benchmarks/api.py --busy       # the same with one core busy
    .venv/bin/python benchmarks/api.py --count 100  # quicker

Everything runs on 127.0.0.1 with ports the kernel picks, and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

from pythonosc.osc_server import BlockingOSCUDPServer, ThreadingOSCUDPServer

import oscsync
from busy import busy_cores
from oscsync.stats import percentile
from scheduler import lateness_from, pythonosc_lateness, send_bundles


@dataclass
class Run:
    name: str
    lateness_us: list[float]
    expected: int

    def row(self) -> str:
        values = sorted(self.lateness_us)
        if not values:
            return f"{self.name:<44} (nothing ran)"
        late = sum(1 for v in values if v > 1000)
        return (
            f"{self.name:<44} {percentile(values, 0.5):>9.1f} {percentile(values, 0.99):>9.1f} "
            f"{values[-1]:>10.1f} {values[0]:>9.1f} {late:>7} {len(values):>5}/{self.expected}"
        )


def run_endpoint_on(count: int, ahead: float, interval: float) -> Run:
    ran: dict[int, float] = {}
    done = threading.Event()
    tags = [0] * count
    with oscsync.Endpoint(listen=0) as endpoint:

        @endpoint.on("/bench")
        def bench(received: oscsync.Received) -> None:
            now = time.time()
            ran[received.args[0]] = now
            if len(ran) == count:
                done.set()

        assert endpoint.port is not None
        send_bundles(endpoint.port, count, ahead, interval, tags)
        done.wait(ahead + 5.0)
    return Run("oscsync Endpoint.on (held to its timetag)", lateness_from(ran, tags), count)


def run_endpoint_call_at(count: int, ahead: float, interval: float) -> Run:
    ran: dict[int, float] = {}
    done = threading.Event()
    tags = [0] * count

    def at_the_timetag(k: int) -> None:
        now = time.time()
        ran[k] = now
        if len(ran) == count:
            done.set()

    with oscsync.Endpoint(listen=0) as endpoint:

        @endpoint.on("/bench", hold=False)
        def arrived(received: oscsync.Received) -> None:
            endpoint.call_at(received.timetag, at_the_timetag, received.args[0])

        assert endpoint.port is not None
        send_bundles(endpoint.port, count, ahead, interval, tags)
        done.wait(ahead + 5.0)
    return Run("oscsync Endpoint.call_at (a callable at it)", lateness_from(ran, tags), count)


def run_pythonosc(
    server_class: type[BlockingOSCUDPServer] | type[ThreadingOSCUDPServer],
    count: int,
    ahead: float,
    interval: float,
) -> Run:
    name = f"python-osc {server_class.__name__.removesuffix('OSCUDPServer')} strict_timing"
    return Run(name, pythonosc_lateness(server_class, count, ahead, interval), count)


RUNS: list[tuple[str, Callable[[int, float, float], Run]]] = [
    ("endpoint-on", run_endpoint_on),
    ("endpoint-call-at", run_endpoint_call_at),
    ("pythonosc-threading", lambda n, a, i: run_pythonosc(ThreadingOSCUDPServer, n, a, i)),
    ("pythonosc-blocking", lambda n, a, i: run_pythonosc(BlockingOSCUDPServer, n, a, i)),
]
"""Each receiver, in the order run (another issue's bridge adds its own rows to this table)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="bundles per receiver")
    parser.add_argument(
        "--ahead", type=float, default=0.055, help="seconds each is timetagged ahead"
    )
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between bundles")
    parser.add_argument("--busy", action="store_true", help="keep one core busy throughout")
    options = parser.parse_args(argv)
    print(
        f"callback lateness at the timetag: {options.count} bundles per receiver, "
        f"{options.interval * 1e3:g} ms apart, each {options.ahead * 1e3:g} ms ahead; "
        f"{'one core busy' if options.busy else 'no extra load'}"
    )
    print(
        f"python {platform.python_version()}, oscsync {oscsync.__version__}, "
        f"python-osc {version('python-osc')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'receiver (lateness in µs)':<44} {'p50':>9} {'p99':>9} {'max':>10} {'min':>9} "
        f"{'>1 ms':>7} {'ran':>11}"
    )
    with busy_cores(1 if options.busy else 0):
        for _, run in RUNS:
            print(run(options.count, options.ahead, options.interval).row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
