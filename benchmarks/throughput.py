"""Receive throughput and exact accounting: ``oscsync dump`` vs python-osc's BlockingOSCUDPServer.

One command, every figure beside its baseline from the same run (issue 18). Each receiver runs as
its own process on loopback, with the same receive buffer (``udp.DEFAULT_RECV_BUFFER``),
and gets the same blast from this process: N small varied messages (``/blast/fader ,if``) as
fast as the sender can (or at ``--rate``). The receivers, in turn:

  * python-osc ``BlockingOSCUDPServer``, a no-op handler that counts (the baseline);
  * ``oscsync dump --jsonl > /dev/null`` (goal: 2x the baseline);
  * ``oscsync dump > /dev/null``, text lines (goal: 1.5x).

The throughput figure is **CPU µs per message**: the receiver's own CPU time (user + system,
from the kernel's rusage) minus that of the same receiver started and stopped with nothing sent,
divided by the messages it handled. Its inverse is the rate the receiver sustains on a core of
its own, and the ratio of two of them is the throughput ratio; unlike messages per wall second it
does not depend on how other processes share the cores, nor on the ~20,000 datagrams the
receive buffer holds (which made the old msg/s figure mostly a measure of the buffer). The
"messages handled of the same blast" ratio is printed beside it for the record: it depends on
how fast the sender ran during each receiver's turn.

Accounting: a receiver is stopped only after the blast (dump by SIGINT, as Ctrl-C), so every
datagram sent is either handled or counted as dropped. For dump the summary line is parsed and
``sent - printed - not printed - dropped`` must be 0 ("unaccounted"). Beside it: the kernel's
machine-wide UDP counters over the run (``RcvbufErrors``: dropped because a socket buffer was full;
``NoPorts``: arrived with no socket bound), which must agree with dump's ``kernel-buffer-full`` and
be 0. The baseline counts its kernel drops and unread datagrams the same way (python-osc itself
reports neither). Also: ``oscsync --help`` cold start (goal <= 150 ms) against ``python -c pass``.

    .venv/bin/python benchmarks/throughput.py            # 300,000 messages per receiver
    .venv/bin/python benchmarks/throughput.py --quick    # 50,000
    .venv/bin/python benchmarks/throughput.py --rate 50000   # paced: nothing should be dropped

Linux only for the kernel figures (``/proc/net/snmp``, ``SO_MEMINFO``); elsewhere they are shown
as unavailable.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pythonosc.osc_message_builder import OscMessageBuilder

# The baseline receiver: python-osc's blocking server, a counting handler, our receive buffer.
# It stops when its stdin closes, then counts what was left in its socket and what the kernel
# dropped, so its accounting is as exact as dump's.
PYTHON_OSC_RECEIVER = r"""
import socket, sys, threading
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
from oscsync.net.udp import DEFAULT_RECV_BUFFER
from oscsync.net.udpsocket import set_recv_buffer, socket_drop_count
count = 0
def handler(*args):
    global count
    count += 1
dispatcher = Dispatcher()
dispatcher.set_default_handler(handler)
server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
set_recv_buffer(server.socket, DEFAULT_RECV_BUFFER)
print(server.server_address[1], flush=True)
def stop():
    sys.stdin.read()
    server.shutdown()
threading.Thread(target=stop, daemon=True).start()
if sys.argv[1:] != ["idle"]:
    server.serve_forever(poll_interval=0.05)
server.socket.setblocking(False)
unread = 0
while True:
    try:
        server.socket.recv(65535)
    except OSError:
        break
    unread += 1
dropped = socket_drop_count(server.socket)
print("received", count, "unread", unread, "kernel", -1 if dropped is None else dropped, flush=True)
"""


@dataclass
class Result:
    name: str
    sent: int
    seconds: float
    handled: int
    dropped: int  # counted by the receiver (or for it, for python-osc)
    not_printed: int
    cpu: float
    detail: str

    @property
    def unaccounted(self) -> int:
        return self.sent - self.handled - self.not_printed - self.dropped


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


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def receiver_env() -> dict[str, str]:
    # As a user runs it: PYTHONUNBUFFERED (set in some shells and CI) would change how often a
    # receiver's stdout is written, which is part of what is measured.
    return {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}


def run_python_osc(count: int, rate: float, linger: float) -> Result:
    cpu_before = children_cpu()
    proc = subprocess.Popen(
        [sys.executable, "-c", PYTHON_OSC_RECEIVER, "idle" if count == 0 else "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=receiver_env(),
    )
    assert proc.stdout is not None and proc.stdin is not None
    port = int(proc.stdout.readline())
    time.sleep(0.3)
    sent, elapsed = blast(port, count, rate) if count else (0, 0.0)
    time.sleep(linger)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait()
    cpu = children_cpu() - cpu_before
    fields = out.split()
    handled, unread, kernel = int(fields[1]), int(fields[3]), int(fields[5])
    detail = f"handled {handled}, unread at close {unread}, kernel dropped " + (
        "unavailable" if kernel < 0 else str(kernel)
    )
    dropped = unread + max(kernel, 0)
    return Result(
        "python-osc BlockingOSCUDPServer", sent, elapsed, handled, dropped, 0, cpu, detail
    )


def run_oscsync(count: int, rate: float, linger: float, jsonl: bool) -> Result:
    cpu_before = children_cpu()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscsync", "dump", "--listen", "127.0.0.1:0"]
        + (["--jsonl"] if jsonl else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=receiver_env(),
    )
    assert proc.stderr is not None
    port = int(proc.stderr.readline().rsplit(":", 1)[1])
    time.sleep(0.3)
    sent, elapsed = blast(port, count, rate) if count else (0, 0.0)
    time.sleep(linger)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: dump stops and prints its summary
    summary = proc.stderr.read()
    proc.wait()
    cpu = children_cpu() - cpu_before
    line = summary.strip().splitlines()[-1]
    printed = int(_field(r"(\d+) messages? printed", line))
    not_printed = int(_field(r"(\d+) not printed", line, "0"))
    dropped = int(_field(r"dropped (\d+)", line, "0"))
    name = "oscsync dump --jsonl" if jsonl else "oscsync dump (text)"
    return Result(name, sent, elapsed, printed, dropped, not_printed, cpu, line)


def _field(pattern: str, text: str, default: str | None = None) -> str:
    found = re.search(pattern, text)
    if found is None:
        if default is None:
            raise SystemExit(f"cannot read {pattern!r} in {text!r}")
        return default
    return found.group(1)


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
    parser.add_argument("--rate", type=float, default=0, help="messages/s; 0 = flat out")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 50_000 if args.quick else args.count
    linger = 1.0

    ours, baseline_python = cold_start(5 if args.quick else 15)
    print(
        f"cold start: oscsync --help {ours * 1000:.0f} ms"
        f" (python -c pass {baseline_python * 1000:.0f} ms; goal <= 150 ms)"
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{count} messages per receiver, {'flat out' if not args.rate else f'{args.rate:g}/s'};"
        f" {os.cpu_count()} CPUs, load average {load}"
    )

    runners = {
        "python-osc": lambda n: run_python_osc(n, args.rate, linger),
        "jsonl": lambda n: run_oscsync(n, args.rate, linger, jsonl=True),
        "text": lambda n: run_oscsync(n, args.rate, linger, jsonl=False),
    }
    results: dict[str, Result] = {}
    for key, runner in runners.items():
        idle_cpu = runner(0).cpu  # start-up and shut-down, nothing received
        before = udp_counters()
        result = runner(count)
        after = udp_counters()
        kernel = {name: after[name] - before.get(name, 0) for name in after}
        results[key] = result
        per_message = (result.cpu - idle_cpu) / max(result.handled, 1) * 1e6
        result.cpu = per_message
        print(
            f"{result.name:32s} CPU {per_message:5.2f} µs/msg (~{1e3 / per_message:5.1f}k msg/s"
            f" on a core of its own)  sent {result.sent:>7} in {result.seconds:5.2f} s,"
            f" handled {result.handled:>7}  unaccounted {result.unaccounted}"
        )
        print(f"{'':32s} {result.detail}")
        if kernel:
            print(
                f"{'':32s} kernel (machine-wide UDP counters over the run): socket buffer full"
                f" {kernel.get('RcvbufErrors', 0)}, no socket on the port {kernel.get('NoPorts', 0)}"
            )
        else:
            print(f"{'':32s} kernel counters unavailable on this platform")
    base = results["python-osc"]
    for key, goal in (("jsonl", 2.0), ("text", 1.5)):
        ours_r = results[key]
        cpu_ratio = base.cpu / ours_r.cpu if ours_r.cpu > 0 else float("inf")
        handled_ratio = ours_r.handled / max(base.handled, 1)
        print(
            f"{ours_r.name} / python-osc: {cpu_ratio:.2f}x messages per CPU second (goal >="
            f" {goal:g}x); {handled_ratio:.2f}x messages handled of the same blast"
        )


if __name__ == "__main__":
    main()
