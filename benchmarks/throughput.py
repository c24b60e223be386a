"""Receive throughput: ``oscsync dump --jsonl > /dev/null`` vs python-osc's BlockingOSCUDPServer.

Both receivers run as subprocesses on loopback and get the same blast from a sender process:
N messages at a target rate (or as fast as possible). Each receiver reports how many messages it
handled; oscsync also reports what it dropped and why (including datagrams the kernel dropped
because the socket buffer was full, via SO_RXQ_OVFL), so "sent = received + dropped" is checked.

Also measures ``oscsync --help`` cold start (goal <= 150 ms) against ``python -c pass``.

    .venv/bin/python benchmarks/throughput.py            # 300,000 messages at 300k/s
    .venv/bin/python benchmarks/throughput.py --quick    # 50,000 messages
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pythonosc.osc_message_builder import OscMessageBuilder

PYTHON_OSC_RECEIVER = r"""
import sys, threading
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
count = 0
def handler(*args):
    global count
    count += 1
dispatcher = Dispatcher()
dispatcher.set_default_handler(handler)
server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
print(server.server_address[1], flush=True)
threading.Timer(float(sys.argv[1]), server.shutdown).start()
server.serve_forever(poll_interval=0.05)
print("received", count, flush=True)
"""


def blast(port: int, count: int, rate: float) -> tuple[int, float]:
    """Send ``count`` varied messages at ``rate``/s (0 = flat out); return (sent, seconds)."""
    datagrams = []
    for k in range(1000):
        builder = OscMessageBuilder("/blast/fader")
        builder.add_arg(k)
        builder.add_arg(k * 0.5)
        datagrams.append(builder.build().dgram)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sent = 0
    start = time.perf_counter()
    chunk = 500
    while sent < count:
        for k in range(min(chunk, count - sent)):
            try:
                sock.send(datagrams[k % 1000])
            except OSError:
                continue
            sent += 1
        if rate:
            ahead = sent / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.perf_counter() - start
    sock.close()
    return sent, elapsed


def udp_counters() -> dict[str, int]:
    """Linux's UDP counters (/proc/net/snmp): what the kernel dropped and why, machine-wide."""
    try:
        text = Path("/proc/net/snmp").read_text()
        header, values = (line.split()[1:] for line in text.splitlines() if line.startswith("Udp:"))
    except (OSError, ValueError):
        return {}
    return dict(zip(header, map(int, values)))


def run_python_osc(count: int, rate: float, linger: float) -> dict[str, float]:
    duration = count / rate + linger if rate else count / 200_000 + linger
    proc = subprocess.Popen(
        [sys.executable, "-c", PYTHON_OSC_RECEIVER, str(duration)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    time.sleep(0.3)
    sent, elapsed = blast(port, count, rate)
    out = proc.stdout.read()
    proc.wait()
    received = int(out.split()[-1])
    return {"sent": sent, "received": received, "seconds": elapsed, "dropped_counted": 0}


def run_oscsync(count: int, rate: float, linger: float) -> dict[str, float]:
    duration = count / rate + linger if rate else count / 200_000 + linger
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscsync", "dump", "--jsonl", "--listen", "127.0.0.1:0",
         "--duration", str(duration)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    port = int(proc.stderr.readline().rsplit(":", 1)[1])
    time.sleep(0.3)
    sent, elapsed = blast(port, count, rate)
    summary = proc.stderr.read()
    proc.wait()
    received = int(re.search(r"received (\d+) messages", summary).group(1))  # type: ignore[union-attr]
    dropped = re.search(r"dropped (\d+)", summary)
    return {
        "sent": sent,
        "received": received,
        "seconds": elapsed,
        "dropped_counted": int(dropped.group(1)) if dropped else 0,
        "summary": summary.strip().splitlines()[-1],  # type: ignore[dict-item]
    }


def cold_start(runs: int) -> tuple[float, float]:
    def timed(argv: list[str]) -> float:
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    return timed([sys.executable, "-m", "oscsync", "--help"]), timed([sys.executable, "-c", "pass"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300_000)
    parser.add_argument("--rate", type=float, default=300_000, help="messages/s; 0 = flat out")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 50_000 if args.quick else args.count
    linger = 1.0

    ours, baseline_python = cold_start(5 if args.quick else 15)
    print(
        f"cold start: oscsync --help {ours * 1000:.0f} ms"
        f" (python -c pass {baseline_python * 1000:.0f} ms; goal <= 150 ms)"
    )

    results = {}
    kernel: dict[str, dict[str, int]] = {}
    for name, runner in (
        ("python-osc BlockingOSCUDPServer", run_python_osc),
        ("oscsync dump --jsonl", run_oscsync),
    ):
        before = udp_counters()
        r = runner(count, args.rate, linger)
        after = udp_counters()
        kernel[name] = {key: after[key] - before.get(key, 0) for key in after}
        results[name] = r
        offered = r["sent"] / r["seconds"]
        handled_rate = r["received"] / r["seconds"]
        unaccounted = r["sent"] - r["received"] - r["dropped_counted"]
        print(
            f"{name:34s} sent {r['sent']:>8.0f} at {offered / 1000:6.1f}k/s"
            f"  received {r['received']:>8.0f}"
            f" ({r['received'] / r['sent']:6.1%})  ~{handled_rate / 1000:6.1f}k msg/s"
            f"  drops counted {r['dropped_counted']:.0f}  unaccounted {unaccounted:.0f}"
        )
        if "summary" in r:
            print(f"{'':34s} {r['summary']}")
        k = kernel[name]
        if k:
            print(
                f"{'':34s} kernel (machine-wide UDP counters during the run): socket buffer full"
                f" {k.get('RcvbufErrors', 0)}, no socket on the port {k.get('NoPorts', 0)}"
            )
    a = results["oscsync dump --jsonl"]["received"]
    b = results["python-osc BlockingOSCUDPServer"]["received"]
    print(f"ratio received oscsync / python-osc: {a / max(b, 1):.2f}x (goal >= 2x)")


if __name__ == "__main__":
    main()
