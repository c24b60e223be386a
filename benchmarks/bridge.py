"""Forward-at-timetag lateness through ``oscsync bridge`` vs python-osc, in one run (issue 28).

A leader in this process sends timetagged bundles (``/tick ,i K``, each ``--offset`` ahead of
its grid time) to a relay; the relay forwards plain messages to a receiver in this process, which
stamps each arrival in the kernel (``SO_TIMESTAMPNS``; elsewhere a clock read). Lateness is that
arrival minus the tick's timetag. The relays, each a subprocess, fed the same schedule in turn:

  A. ``oscsync bridge --mode at-timetag --sync``: follows the leader's clock (pings it), holds
     each message in its scheduler, sends it plain at the (translated) timetag;
  B. python-osc's strict timing: a ``ThreadingOSCUDPServer`` whose ``Dispatcher`` (strict_timing,
     the default) sleeps in a thread per bundle until its timetag, then the handler sends the
     message plain with ``SimpleUDPClient`` (the same machine's clock: nothing to follow);
  C. python-osc on arrival (``strict_timing=False``): what a receiver that plays on arrival gets
     with no bridge at all (early by the headroom, plus the network's jitter).

It prints, per relay: ticks received of sent, lateness p50 / p99 / max and how many were more
than 1 ms late. The leader's ticks during the first ``--warmup`` seconds (the bridge locking on
the leader's clock) are sent but not counted.

    .venv/bin/python benchmarks/bridge.py                 # 600 ticks at 20 a second, ~100 s
    .venv/bin/python benchmarks/bridge.py --ticks 200     # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import SystemClock
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.stats import percentile

REPO = Path(__file__).resolve().parent.parent

PYTHON_OSC_RELAY = r"""
import sys
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient
out, strict = int(sys.argv[1]), sys.argv[2] == "strict"
client = SimpleUDPClient("127.0.0.1", out)
dispatcher = Dispatcher(strict_timing=strict)
dispatcher.map("/tick", lambda address, *args: client.send_message(address, list(args)))
server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
print(f"listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
server.serve_forever()
"""

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_TIMESPEC = struct.Struct("@ll")


class Receiver:
    """The application the relays forward to: records (K, arrival in Unix seconds)."""

    def __init__(self, clock: SystemClock) -> None:
        self.clock = clock
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.kernel = False
        if _SO_TIMESTAMPNS is not None and hasattr(self.sock, "recvmsg"):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self.kernel = True
            except OSError:
                pass
        self.sock.settimeout(0.2)
        self.arrivals: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.kernel:
                    data, ancillary, _, _ = self.sock.recvmsg(65536, 64)
                    arrival = self.clock.now()
                    for level, kind, value in ancillary:
                        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                            seconds, nanoseconds = _TIMESPEC.unpack(value[: _TIMESPEC.size])
                            arrival = seconds + nanoseconds * 1e-9
                else:
                    data = self.sock.recv(65536)
                    arrival = self.clock.now()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                (message,) = codec.decode(data)
            except (codec.DecodeError, ValueError):
                continue
            if message.address == "/tick" and message.args:
                self.arrivals.setdefault(int(message.args[0]), arrival)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def start_relay(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    """A relay subprocess and the port it listens on (from its ``listening on`` line)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("listening on"):
            return proc, int(line.rsplit(":", 1)[1])
    raise SystemExit(f"relay {argv[:4]} did not start: exit {proc.wait()}")


def lead(clock: SystemClock, port: int, ticks: int, interval: float, offset: float) -> list[int]:
    """Send ``ticks`` bundles, tick K due at t0 + K·interval and sent ``offset`` before; return
    their timetags. The endpoint answers the bridge's clock pings meanwhile."""
    endpoint = open_endpoint(None, [HostPort("127.0.0.1", port)], clock=clock)
    endpoint.start(lambda received: None)
    t0 = clock.now() + offset + 0.05
    stamps = []
    try:
        for k in range(ticks):
            due = t0 + k * interval
            clock.sleep(max(0.0, due - offset - clock.now()))
            stamp = tt.from_unix(due)
            stamps.append(stamp)
            endpoint.send_bytes(codec.encode_bundle(stamp, [codec.encode_message("/tick", [k])]))
        clock.sleep(offset + 0.3)  # the last ones held by the relay, then on their way
    finally:
        endpoint.close()
    return stamps


def measure(
    name: str,
    relay: Callable[[int], list[str]],
    clock: SystemClock,
    args: argparse.Namespace,
) -> tuple[str, list[float], int]:
    receiver = Receiver(clock)
    proc, port = start_relay(relay(receiver.port))
    try:
        stamps = lead(clock, port, args.ticks + args.warmup_ticks, args.interval, args.offset)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        receiver.close()
    counted = range(args.warmup_ticks, len(stamps))
    lateness = [
        receiver.arrivals[k] - tt.to_unix(stamps[k]) for k in counted if k in receiver.arrivals
    ]
    summary = [line for line in err.splitlines() if line.startswith(("bridge:", "clock sync"))]
    if summary:
        print(f"  {name}: " + "\n  ".join(summary))
    return name, lateness, len(counted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=600, help="ticks counted per relay")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between ticks")
    parser.add_argument("--offset", type=float, default=0.1, help="timetag ahead of sending")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted at start")
    args = parser.parse_args()
    args.warmup_ticks = round(args.warmup / args.interval)
    clock = SystemClock()
    python = sys.executable
    relays: list[tuple[str, Callable[[int], list[str]]]] = [
        (
            "A oscsync bridge --mode at-timetag --sync",
            lambda out: [
                python, "-m", "oscsync", "bridge", "-l", "127.0.0.1:0", "--to",
                f"127.0.0.1:{out}", "--mode", "at-timetag", "--sync",
            ],
        ),
        (
            "B python-osc strict timing (a thread per bundle)",
            lambda out: [python, "-c", PYTHON_OSC_RELAY, str(out), "strict"],
        ),
        (
            "C python-osc on arrival (no holding)",
            lambda out: [python, "-c", PYTHON_OSC_RELAY, str(out), "arrival"],
        ),
    ]  # fmt: skip
    print(
        f"{platform.python_implementation()} {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{args.ticks} ticks per relay (+{args.warmup_ticks} warm-up), one every "
        f"{args.interval * 1e3:g} ms, timetagged {args.offset * 1e3:g} ms ahead; lateness = "
        "arrival at the application (kernel stamp) − timetag"
    )
    results = [measure(name, relay, clock, args) for name, relay in relays]
    print(
        f"\n{'relay':<50} {'received':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'> 1 ms':>7}"
    )
    for name, lateness, sent in results:
        if not lateness:
            print(f"{name:<50} {0:>5} of {sent:<3} (nothing arrived)")
            continue
        ordered = sorted(lateness)
        late = sum(value > 0.001 for value in ordered)
        print(
            f"{name:<50} {len(ordered):>4} of {sent:<4}"
            f"{percentile(ordered, 0.5) * 1e3:9.3f} {percentile(ordered, 0.99) * 1e3:9.3f} "
            f"{ordered[-1] * 1e3:9.3f} {late:>7}"
        )


if __name__ == "__main__":
    main()
