"""Record and replay (issue #15): replay timing against liblo's ``oscsendfile``, speed, and
recording a 50,000 msg/s flood with flat memory.

1. **Replay timing.** One irregular schedule (intervals drawn from 0.5-1.5 × 1/rate, fixed seed)
   is written as an oscsync recording and as an ``oscsendfile`` text file (liblo's format:
   ``SEC.FRAC /address types args``, one message per line; it sends each line in a bundle after a
   ``usleep``). Each is replayed to an independent receiver process that stamps every arrival on
   the monotonic clock; the figure is |replayed interval − recorded interval| (p50, p99, max).
   Goal for ``oscsync replay``: p99 ≤ 0.1 ms, max ≤ 1 ms at up to 1,000 msg/s. The receiver
   runs in a session of its own (as a program started elsewhere would). On Linux it also keeps
   the kernel's stamp of each datagram (``SO_TIMESTAMPNS``, taken on loopback inside the
   sender's ``sendto``), and the line below each figure gives the same errors by those stamps
   (when the datagrams left) and how long after it the receiving process read each one (its
   wake-up). The two tell a late send from a late receiver: on 13:19's quiet run the sends were
   on time (kernel p99 0.03 ms) while the receiving process saw them up to 0.5 ms late: the
   replay's own thread held the CPU the receiver needed (see ``give_way`` and ``SPIN`` in
   ``oscsync.apps.replay``).
2. **--speed 2** halves the span: received span / (recorded span / 2), goal within 0.1 %.
3. **Recording a flood.** A sender process sends 50,000 msg/s for 10 s to ``oscsync record``;
   every datagram must be in the file or counted as dropped in its closing line
   (written + dropped = sent), and the recorder's resident memory (Linux ``VmRSS``) is sampled
   every 0.5 s: it must stay flat.

    .venv/bin/python benchmarks/record_replay.py            # the figures above
    .venv/bin/python benchmarks/record_replay.py --quick    # 3 s schedules, a 3 s flood

On a shared machine other processes make both replayers late now and then: the lead re-measures
on a quiet machine. The machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from oscsync.files.recording import RecordingWriter
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from waiting import announced_port

RECEIVER = r"""
import json, socket, struct, sys, time
count, timeout = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
# Linux: the kernel stamps each datagram as it reaches the socket (SO_TIMESTAMPNS, 35 before
# Python 3.14 names it). On loopback that is inside the sender's sendto: when it left.
kernel = sys.platform.startswith("linux") and hasattr(sock, "recvmsg")
if kernel:
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_TIMESTAMPNS", 35), 1)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
sock.settimeout(timeout)
stamps, kernel_stamps = [], []
try:
    while len(stamps) < count:
        if kernel:
            _, ancillary, _, _ = sock.recvmsg(65535, 64)
        else:
            sock.recv(65535)
        stamps.append(time.monotonic_ns())
        for level, kind, data in ancillary if kernel else ():
            if level == socket.SOL_SOCKET and len(data) >= 16:
                seconds, nanoseconds = struct.unpack("qq", data[:16])
                kernel_stamps.append(seconds * 10**9 + nanoseconds)
        sock.settimeout(2.0)
except socket.timeout:
    pass
print(json.dumps([stamps, kernel_stamps if len(kernel_stamps) == len(stamps) else []]), flush=True)
"""
# The machine's own floor for a timed sender, in a process of its own for as long as a replay
# runs: "spin" reads the clock in a loop and reports its longest gap (the thread was not running:
# preempted, or the virtual CPU stalled), "timer" does what replay's timer thread does at
# 1,000 sends/s minus the send (wait with 1 µs timer slack until SPIN before each time, then
# spin to it) and reports how late each spin ended. A replay cannot do better than these.
MACHINE_FLOOR = r"""
import sys, threading, time
sys.path[:0] = sys.argv[3:]
from oscsync.apps.replay import SPIN
from oscsync.clock import SystemClock
mode, seconds = sys.argv[1], float(sys.argv[2])
mono = time.monotonic_ns
gaps = []
if mode == "spin":
    end = mono() + int(seconds * 1e9)
    last = mono()
    while last < end:
        now = mono()
        if now - last > 50_000:
            gaps.append(now - last)
        last = now
else:
    SystemClock().sharpen_waits()
    never = threading.Event()
    due = mono() + 10**6
    for _ in range(int(seconds * 1000)):
        ahead = (due - mono()) / 1e9 - SPIN
        if ahead > 0:
            never.wait(ahead)
        while (now := mono()) < due:
            pass
        gaps.append(now - due)
        due += 10**6
gaps.sort()
p99 = gaps[max(0, int(len(gaps) * 0.99 + 0.5) - 1)] if mode == "timer" else 0
print(p99 / 1e6, (gaps[-1] if gaps else 0) / 1e6, sum(g > 10**6 for g in gaps))
"""

FLOOD_SENDER = r"""
import socket, sys, time
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
payloads = [b"/flood/fader\x00\x00\x00\x00,if\x00" + k.to_bytes(4, "big") + b"\x3f\x00\x00\x00"
            for k in range(1000)]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect(("127.0.0.1", port))
total = int(rate * seconds)
sent = 0
start = time.perf_counter()
while sent < total:
    for k in range(min(250, total - sent)):
        sock.send(payloads[(sent + k) % 1000])
    sent += min(250, total - sent)
    ahead = sent / rate - (time.perf_counter() - start)
    if ahead > 0:
        time.sleep(ahead)
print(sent, time.perf_counter() - start, flush=True)
"""


def schedule(rate: float, seconds: float, seed: int = 15) -> list[float]:
    """Offsets (s) of an irregular stream averaging ``rate`` messages per second."""
    rng = random.Random(seed)
    offsets, t = [], 0.0
    while t < seconds:
        offsets.append(round(t, 6))  # microseconds: what oscsendfile's text can also carry
        t += rng.uniform(0.5, 1.5) / rate
    return offsets


def write_recording(path: Path, offsets: list[float]) -> None:
    with path.open("w") as out:
        writer = RecordingWriter(out, monotonic_start=0.0)
        writer.write_header(
            host="bench", clock="system", started_unix=1.8e9, listen="x:1", software="bench"
        )
        for n, offset in enumerate(offsets):
            writer.add(codec.encode_message("/bench", [n]), "127.0.0.1:1", 1.8e9 + offset, offset)
        writer.close(offsets[-1], {})


def write_oscsendfile(path: Path, offsets: list[float]) -> None:
    base = tt.from_unix(1.8e9)
    with path.open("w") as out:
        for n, offset in enumerate(offsets):
            seconds, fraction = tt.split(tt.add_seconds(base, offset))
            out.write(f"{seconds:08x}.{fraction:08x} /bench i {n}\n")


def receive_while(
    argv: list[str],
    count: int,
    pre: Callable[[], None] | None = None,
    *,
    check: bool = True,
) -> tuple[list[int], list[int], str]:
    """Arrival stamps (ns) of what ``argv`` sends, taken by the receiving process (monotonic)
    and by the kernel (real time; empty where unavailable), and what it printed on stderr.
    ``pre`` runs in the sender before exec (benchmarks/busy.py: a sender refused real-time
    priority); ``check``: a sender that fails is an error."""
    # A session of its own, like a receiving program started from another terminal: Linux's
    # autogroup scheduling would otherwise charge the receiver for the sender's CPU time (same
    # session, same group). Measured at load ~2: receiver wake-up p99 0.65-0.86 ms in its own
    # session, 1.6-3.4 ms in the sender's.
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(count), "15"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert receiver.stdout is not None
    port = receiver.stdout.readline().strip()
    sender = subprocess.run(
        [a.replace("PORT", port) for a in argv],
        check=check,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=pre,
    )
    stamps, kernel_stamps = json.loads(receiver.stdout.readline())
    receiver.wait()
    return stamps, kernel_stamps, sender.stderr.strip()


def _rank(values: list[float], fraction: float) -> float:
    return values[max(0, int(len(values) * fraction + 0.5) - 1)]


def interval_errors(offsets: list[float], stamps: list[int], speed: float) -> dict[str, float]:
    if len(stamps) != len(offsets):
        return {"received": len(stamps), "expected": len(offsets)}
    errors = sorted(
        abs((stamps[i + 1] - stamps[i]) / 1e9 - (offsets[i + 1] - offsets[i]) / speed) * 1e3
        for i in range(len(offsets) - 1)
    )
    return {
        "p50_ms": statistics.median(errors),
        "p99_ms": _rank(errors, 0.99),
        "max_ms": errors[-1],
        "span_ratio": (stamps[-1] - stamps[0]) / 1e9 / ((offsets[-1] - offsets[0]) / speed),
    }


def with_kernel_view(
    figures: dict[str, float],
    offsets: list[float],
    stamps: list[int],
    kernel: list[int],
    speed: float,
) -> dict[str, float]:
    """Adds the same figures from the kernel's stamps, and how long after the kernel stamp the
    receiving process read each datagram (its wake-up: p99 and max, minus the smallest)."""
    if not kernel or len(kernel) != len(offsets) or "p99_ms" not in figures:
        return figures
    by_kernel = interval_errors(offsets, kernel, speed)
    delays = sorted(user - stamp for user, stamp in zip(stamps, kernel))
    wake = [(d - delays[0]) / 1e6 for d in delays]
    return {
        **figures,
        "kernel_p99_ms": by_kernel["p99_ms"],
        "kernel_max_ms": by_kernel["max_ms"],
        "wake_p99_ms": _rank(wake, 0.99),
        "wake_max_ms": wake[-1],
    }


def replay_timing(work: Path, rate: float, seconds: float, speed: float = 1.0) -> dict[str, dict]:
    offsets = schedule(rate, seconds)
    recording, text = work / f"r{rate}.jsonl", work / f"r{rate}.txt"
    write_recording(recording, offsets)
    write_oscsendfile(text, offsets)
    oscsync = [sys.executable, "-m", "oscsync", "replay", str(recording)]
    stamps, kernel, summary = receive_while(
        [*oscsync, "--peer", "127.0.0.1:PORT", "--speed", str(speed)], len(offsets)
    )
    figures = interval_errors(offsets, stamps, speed)
    results = {"oscsync replay": with_kernel_view(figures, offsets, stamps, kernel, speed)}
    # The sender's own view (dispatch - due on its scheduler): tells a late send from a late
    # wake-up of the receiver.
    late = re.search(r"sent late by p99 ([\d.]+) ms, max ([\d.]+) ms", summary)
    if late:
        results["oscsync replay"]["own_late_p99_ms"] = float(late.group(1))
        results["oscsync replay"]["own_late_max_ms"] = float(late.group(2))
    if shutil.which("oscsendfile"):
        stamps, kernel, _ = receive_while(
            ["oscsendfile", "127.0.0.1", "PORT", str(text), str(speed)], len(offsets)
        )
        figures = interval_errors(offsets, stamps, speed)
        results["liblo oscsendfile"] = with_kernel_view(figures, offsets, stamps, kernel, speed)
    return results


def machine_floor(seconds: float) -> str:
    """The machine's floor over ``seconds`` (see MACHINE_FLOOR), one line."""
    figures = {}
    for mode in ("spin", "timer"):
        result = subprocess.run(
            [sys.executable, "-c", MACHINE_FLOOR, mode, str(seconds), *sys.path],
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,  # like the receiver: not charged for this process's time
        )
        p99, longest, over_1ms = (float(x) for x in result.stdout.split())
        figures[mode] = (p99, longest, int(over_1ms))
    spin, timer = figures["spin"], figures["timer"]
    return (
        f"machine floor over {seconds:g} s: a spinning loop's longest stall {spin[1]:.3f} ms "
        f"({spin[2]} over 1 ms); a wait-then-spin timer at 1000/s late by p99 {timer[0]:.3f} ms, "
        f"max {timer[1]:.3f} ms ({timer[2]} over 1 ms)"
    )


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def flood(work: Path, rate: float, seconds: float) -> dict[str, object]:
    path = work / "flood.jsonl"
    recorder = subprocess.Popen(
        [sys.executable, "-m", "oscsync", "record", str(path), "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert recorder.stderr is not None
    port = announced_port(recorder.stderr)
    time.sleep(0.5)
    sender = subprocess.Popen(
        [sys.executable, "-c", FLOOD_SENDER, str(port), str(rate), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples = []
    while sender.poll() is None:
        samples.append(rss_kib(recorder.pid))
        time.sleep(0.5)
    assert sender.stdout is not None
    sent_text, elapsed = sender.stdout.read().split()
    time.sleep(2.0)  # let the recorder drain its socket buffer
    samples.append(rss_kib(recorder.pid))
    recorder.terminate()
    summary = recorder.stderr.read().strip().splitlines()[-1]
    recorder.wait()
    closing = json.loads(path.read_text().splitlines()[-1])
    sent = int(sent_text)
    rss = [s for s in samples if s is not None]
    return {
        "sent": sent,
        "send_rate": round(sent / float(elapsed)),
        "written": closing["datagrams"],
        "dropped_counted": closing["dropped_total"],
        "dropped_by_reason": closing["dropped"],
        "written + dropped == sent": closing["datagrams"] + closing["dropped_total"] == sent,
        "file_MB": round(path.stat().st_size / 1e6, 1),
        "rss_MiB first/max/last": [round(x / 1024, 1) for x in (rss[0], max(rss), rss[-1])]
        if rss
        else "n/a (no /proc)",
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s schedules and a 3 s flood")
    parser.add_argument(
        "--only", choices=["replay", "speed", "flood"], action="append", help="run only this part"
    )
    args = parser.parse_args()
    parts = set(args.only or ["replay", "speed", "flood"])
    seconds = 3.0 if args.quick else 5.0
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average: {load}  (2 cores shared with other sessions: figures are indicative)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for rate in (100, 1000) if "replay" in parts else ():
            for name, figures in replay_timing(work, rate, seconds).items():
                print(f"replay {rate:>5} msg/s, {name:<18} {_fmt(figures)}")
            print(f"  {machine_floor(seconds)}", flush=True)
        for name, figures in (
            replay_timing(work, 1000, seconds, speed=2.0).items() if "speed" in parts else ()
        ):
            print(f"--speed 2, 1000 msg/s, {name:<18} {_fmt(figures)}")
        if "flood" not in parts:
            return
        result = flood(work, 50_000, 3.0 if args.quick else 10.0)
        print("record 50,000 msg/s:")
        for key, value in result.items():
            print(f"  {key}: {value}")


def _fmt(figures: dict[str, float]) -> str:
    if "p99_ms" not in figures:
        return f"LOST DATAGRAMS: {figures}"
    text = (
        f"interval error p50 {figures['p50_ms']:.4f} ms, p99 {figures['p99_ms']:.4f} ms, "
        f"max {figures['max_ms']:.4f} ms; span ratio {figures['span_ratio']:.5f}"
    )
    if "kernel_p99_ms" in figures:
        text += (
            f"\n      by kernel stamps p99 {figures['kernel_p99_ms']:.4f} ms, "
            f"max {figures['kernel_max_ms']:.4f} ms; receiver woke after the kernel stamp by "
            f"p99 {figures['wake_p99_ms']:.4f} ms, max {figures['wake_max_ms']:.4f} ms"
        )
    if "own_late_p99_ms" in figures:
        text += (
            f"; own send lateness p99 {figures['own_late_p99_ms']:.3f} ms, "
            f"max {figures['own_late_max_ms']:.3f} ms"
        )
    return text


if __name__ == "__main__":
    main()
