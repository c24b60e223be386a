"""Time on a busy machine (issue 29): real-time priority granted and refused, cores kept busy.

In one run, first with **both cores** (every CPU) kept busy by ``yes`` processes, then with
**one**, and in each case once with real-time priority **granted** (this process runs as root:
``--realtime auto`` gets ``SCHED_FIFO``) and once **refused** (the same commands under ``setpriv
--bounding-set -sys_nice``: no ``CAP_SYS_NICE`` and ``RLIMIT_RTPRIO`` 0, which is where a user
outside the ``audio`` group stands; a non-root user's runs lower ``RLIMIT_RTPRIO`` to 0
instead), it prints:

1. **scheduler**: the project's ``Scheduler`` in a process of its own, one item every 10 ms,
   lateness = monotonic reading at the action - due time (the scheduler's own ruler):
   p50 / p99 / max and the count > 1 ms. Goal with real-time: p99 <= 50 µs, max <= 0.5 ms
   with both cores busy.
2. **flood**: the same while a third process sends 20,000 plain datagrams a second to an
   endpoint in that process (its receive thread decodes them: the GIL case).
3. **pipe**: ``oscsync dump --schedule`` through a pipe, beside liblo's ``oscdump -L`` (which
   also holds bundles until their timetag) and python-osc's strict timing (its blocking server
   sleeps in the handler); bundles 55 ms ahead, 10 ms apart; lateness = when this process read
   the line from the pipe - timetag (µs).
4. **replay**: ``oscsync replay`` of an irregular 1,000 msg/s recording against liblo's
   ``oscsendfile`` of the same schedule: |interval error| p99 by the kernel's receive stamps
   (when the datagrams left; and by the receiving process's own reading in brackets), and
   replay's own "sent late" p99. Goal: <= 0.1 ms and at or below oscsendfile's. In granted
   runs ``oscsendfile`` also runs under ``chrt -f 6`` (the priority replay's timer gets).
5. **metronome send**: 100 plain ticks at 1,200 bpm: the sender's own "send time after grid"
   (mean / p99 / max) beside the receiver's interval error p99 (kernel stamps).

Then, once, **starvation**: as root, a real-time scheduler thread is given 20,000 items due at
once (each ~50 µs of work) while an ordinary process pinned to the same CPU counts; the share
of that CPU it got shows whether a flood of due items can lock a core (realtime.Breather: at
least 20 %), beside the same with the Breather disabled (the kernel's own RT throttling only).

The observer (this process's threads that stamp pipe lines) asks for SCHED_FIFO 7 where it
may, so that it is not the late one. The machine is shared while developers work: re-measure on
a quiet one. Everything runs on 127.0.0.1 and stops by itself (~3 min; --quick ~1.5 min):

    sudo .venv/bin/python benchmarks/busy.py
    sudo .venv/bin/python benchmarks/busy.py --quick --only scheduler --only flood
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oscsync.stats import percentile
from record_replay import (
    interval_errors,
    receive_while,
    schedule,
    with_kernel_view,
    write_oscsendfile,
    write_recording,
)
from scheduler import PYTHON_OSC_PRINT, pipe_lateness

PYTHON = sys.executable
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OBSERVER_PRIORITY = 7

# -- the process under test for sections 1 and 2 ---------------------------------------------------

SCHEDULER_CHILD = r"""
import json, sys, threading
from oscsync.realtime import Realtime
from oscsync.clock import SystemClock
from oscsync.scheduler import Scheduler
from oscsync.osc import timetag as tt
count, interval, flood = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "flood"
policy = Realtime("auto")
policy.probe()
policy.install()
clock = SystemClock()
received = [0]
endpoint = None
if flood:
    from oscsync.apps.endpoints import open_endpoint
    from oscsync.net.hostport import HostPort
    endpoint = open_endpoint(HostPort("127.0.0.1", 0), (), clock=clock)
    def count_it(_):
        received[0] += 1
    endpoint.start(count_it)
    print(endpoint.local_address.port, flush=True)
    sys.stdin.readline()  # the flood has started
scheduler = Scheduler(clock)
late = []
done = threading.Event()
def act(dispatch):
    late.append(dispatch.dispatched - dispatch.due)
    if len(late) == count:
        done.set()
scheduler.start()
start = clock.now_timetag()
for k in range(count):
    scheduler.submit(tt.add_seconds(start, 0.1 + k * interval), act)
done.wait(count * interval + 10)
scheduler.close()
if endpoint is not None:
    endpoint.close()
print(json.dumps({"late_s": late, "granted": policy.granted, "timer_rt": scheduler.realtime,
                  "threads": policy.to_json(), "received": received[0]}), flush=True)
"""

FLOOD_SENDER = r"""
import socket, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect(("127.0.0.1", port))
message = b"/flood\x00\x00,i\x00\x00\x00\x00\x00\x01"
start, sent = time.perf_counter(), 0
while True:
    for _ in range(50):
        try:
            sock.send(message)
        except OSError:
            pass
    sent += 50
    ahead = sent / rate - (time.perf_counter() - start)
    if ahead > 0:
        time.sleep(ahead)
"""

STARVATION_CHILD = r"""
import json, os, sys, threading, time
from oscsync import realtime
from oscsync.realtime import Realtime
from oscsync.clock import SystemClock
from oscsync.scheduler import Scheduler
os.sched_setaffinity(0, {int(sys.argv[2])})
count = int(sys.argv[1])
if sys.argv[3] == "no-rest":  # the "before": a real-time thread that never rests
    realtime.Breather.check = lambda self: False
policy = Realtime("auto")
policy.probe()
policy.install()
clock = SystemClock()
done = threading.Event()
ran = [0]
def work(_):
    end = time.perf_counter() + 50e-6
    while time.perf_counter() < end:
        pass
    ran[0] += 1
    if ran[0] == count:
        done.set()
scheduler = Scheduler(clock)
for _ in range(count):
    scheduler.submit(None, work)
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
scheduler.start()
done.wait(60)
elapsed = time.perf_counter() - started
scheduler.close()
print(json.dumps({"elapsed": elapsed, "ran": ran[0], "granted": scheduler.realtime}), flush=True)
"""

COUNTER = r"""
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
counts, end = 0, time.perf_counter() + float(sys.argv[2])
last = time.perf_counter()
while last < end:
    now = time.perf_counter()
    if now - last < 0.0005:
        counts += 1
    last = now
print(counts, flush=True)
"""

# -- helpers -------------------------------------------------------------------------------------


def promote_observer() -> bool:
    """SCHED_FIFO for the calling thread (a reader thread stamping what it reads), where allowed.

    Never the main thread: processes it starts (the ``yes`` hogs!) would inherit it, were it not
    for SCHED_RESET_ON_FORK, which is set too."""
    assert threading.current_thread() is not threading.main_thread()
    try:
        os.sched_setscheduler(  # type: ignore[attr-defined]
            threading.get_native_id(),
            os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0),  # type: ignore[attr-defined]
            os.sched_param(OBSERVER_PRIORITY),  # type: ignore[attr-defined]
        )
        return True
    except (AttributeError, OSError):
        return False


def refused_prefix() -> tuple[list[str], Callable[[], None] | None]:
    """How to start a process that will be refused real-time priority."""
    if IS_ROOT and shutil.which("setpriv"):
        return ["setpriv", "--bounding-set", "-sys_nice"], None

    def no_rtprio() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))

    return [], no_rtprio


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when this process ends, however it ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    hogs = [
        subprocess.Popen(
            ["yes"], stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent
        )
        for _ in range(count)
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def figures_us(values_s: list[float]) -> str:
    if not values_s:
        return "no samples"
    ordered = sorted(v * 1e6 for v in values_s)
    over = sum(1 for v in ordered if v > 1000)
    early = sum(1 for v in ordered if v < -50)
    text = (
        f"p50 {percentile(ordered, 0.5):8.1f}  p99 {percentile(ordered, 0.99):8.1f}  "
        f"max {ordered[-1]:8.1f} µs   > 1 ms: {over}/{len(ordered)}"
    )
    if early:  # liblo's oscdump dispatches bundles before their timetag
        text += f"   early (< -50 µs): {early}, min {ordered[0]:.1f} µs"
    return text


def load_average() -> str:
    try:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""


# -- sections ------------------------------------------------------------------------------------


def scheduler_section(
    prefix: list[str], pre: Callable[[], None] | None, count: int, flood: bool
) -> str:
    proc = subprocess.Popen(
        [*prefix, PYTHON, "-c", SCHEDULER_CHILD, str(count), "0.01", "flood" if flood else "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=pre,
    )
    assert proc.stdin is not None and proc.stdout is not None
    sender = None
    try:
        if flood:
            port = proc.stdout.readline().strip()
            sender = subprocess.Popen(
                [PYTHON, "-c", FLOOD_SENDER, port, "20000"], start_new_session=True
            )
            time.sleep(0.3)
            proc.stdin.write("go\n")
            proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
        proc.wait()
    granted = "granted" if result["granted"] else "refused"
    extra = f"  ({result['received']} datagrams decoded)" if flood else ""
    return f"{figures_us(result['late_s'])}  [{granted}]{extra}"


def lateness_through_pipe(
    argv: list[str], count: int, pre: Callable[[], None] | None, port: int | None
) -> list[float]:
    """scheduler.pipe_lateness with bundles 55 ms ahead, 10 ms apart: ``argv`` started through
    ``pre`` in a session of its own, its lines stamped by a promoted observer thread."""
    return pipe_lateness(
        argv,
        count,
        0.055,
        0.01,
        port=port,
        preexec_fn=pre,
        start_new_session=True,
        on_reader=promote_observer,
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LIBLO_MISSING = "not measured: {} is not installed (Debian: apt-get install liblo-tools)"


def pipe_section(prefix: list[str], pre: Callable[[], None] | None, count: int) -> list[str]:
    rows = []
    dump = [*prefix, PYTHON, "-m", "oscsync", "dump", "--schedule", "--listen", "127.0.0.1:0"]
    late = lateness_through_pipe(dump, count, pre, None)
    rows.append(f"    dump --schedule        {figures_us(late)}")
    if shutil.which("oscdump"):
        port = free_udp_port()
        late = lateness_through_pipe([*prefix, "oscdump", "-L", str(port)], count, pre, port)
        rows.append(f"    liblo oscdump -L       {figures_us(late)}")
    else:
        rows.append(f"    liblo oscdump -L       {LIBLO_MISSING.format('oscdump')}")
    late = lateness_through_pipe([*prefix, PYTHON, "-c", PYTHON_OSC_PRINT], count, pre, None)
    rows.append(f"    python-osc strict      {figures_us(late)}")
    return rows


def replay_section(
    prefix: list[str], pre: Callable[[], None] | None, work: Path, seconds: float
) -> list[str]:
    offsets = schedule(1000.0, seconds)
    recording, text = work / "r.jsonl", work / "r.txt"
    write_recording(recording, offsets)
    write_oscsendfile(text, offsets)
    rows = []
    argv = [*prefix, PYTHON, "-m", "oscsync", "replay", str(recording), "--peer", "127.0.0.1:PORT"]
    stamps, kernel, summary = receive_while(argv, len(offsets), pre, check=False)
    figures = with_kernel_view(interval_errors(offsets, stamps, 1.0), offsets, stamps, kernel, 1.0)
    own = re.search(r"sent late by p99 ([\d.]+) ms, max ([\d.]+) ms", summary)
    rows.append("    oscsync replay         " + replay_figures(figures, own))
    if shutil.which("oscsendfile"):
        argv = [*prefix, "oscsendfile", "127.0.0.1", "PORT", str(text), "1"]
        stamps, kernel, _ = receive_while(argv, len(offsets), pre, check=False)
        figures = with_kernel_view(
            interval_errors(offsets, stamps, 1.0), offsets, stamps, kernel, 1.0
        )
        rows.append("    liblo oscsendfile      " + replay_figures(figures, None))
        if not prefix and IS_ROOT and shutil.which("chrt"):
            # The same real-time priority oscsync's timer got: an equal footing.
            stamps, kernel, _ = receive_while(
                ["chrt", "-f", "6", *argv], len(offsets), pre, check=False
            )
            figures = with_kernel_view(
                interval_errors(offsets, stamps, 1.0), offsets, stamps, kernel, 1.0
            )
            rows.append("    oscsendfile, chrt -f 6 " + replay_figures(figures, None))
    else:  # the goal's baseline: say why it is not beside replay's figure
        rows.append(f"    liblo oscsendfile      {LIBLO_MISSING.format('oscsendfile')}")
    return rows


def replay_figures(figures: dict[str, float], own: re.Match[str] | None) -> str:
    if "p99_ms" not in figures:
        return f"received {figures.get('received')} of {figures.get('expected')}"
    kernel = figures.get("kernel_p99_ms")
    text = (
        f"interval error p99 {kernel if kernel is not None else figures['p99_ms']:.3f} ms"
        f" (receiver's reading {figures['p99_ms']:.3f}), max "
        f"{figures.get('kernel_max_ms', figures['max_ms']):.3f} ms"
    )
    if own is not None:
        text += f"; own sent late p99 {own.group(1)} ms"
    return text


def metronome_section(prefix: list[str], pre: Callable[[], None] | None, ticks: int) -> str:
    argv = [
        *prefix, PYTHON, "-m", "oscsync", "metronome", "send", "--peer", "127.0.0.1:PORT",
        "--bpm", "1200", "--count", str(ticks),
    ]  # fmt: skip
    stamps, kernel, summary = receive_while(argv, ticks, pre, check=False)
    offsets = [k * 0.05 for k in range(ticks)]
    figures = with_kernel_view(interval_errors(offsets, stamps, 1.0), offsets, stamps, kernel, 1.0)
    own = re.search(r"send time after grid: (.*?)(;|$)", summary, re.MULTILINE)
    receiver = figures.get("kernel_p99_ms", figures.get("p99_ms"))
    side = "-" if receiver is None else f"{receiver:.3f} ms"
    return f"own: {own.group(1) if own else '?'}; receiver's interval error p99 {side}"


def starvation_section(items: int) -> list[str]:
    if not IS_ROOT or not hasattr(os, "sched_setaffinity"):
        return ["skipped (needs root and sched_setaffinity)"]
    return [starvation_row(items, "rests"), starvation_row(items, "no-rest")]


def starvation_row(items: int, variant: str) -> str:
    cpu = 0
    baseline = subprocess.run(
        [PYTHON, "-c", COUNTER, str(cpu), "1.0"], capture_output=True, text=True, check=True
    )
    alone = int(baseline.stdout.split()[0])
    child = subprocess.Popen(
        [PYTHON, "-c", STARVATION_CHILD, str(items), str(cpu), variant],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdout.readline()
    seconds = items * 50e-6 * 0.8
    counter = subprocess.Popen(
        [PYTHON, "-c", COUNTER, str(cpu), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.05)
    child.stdin.write("go\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    child.wait()
    shared = int(counter.communicate()[0].split()[0])
    share = shared / (alone * seconds) if alone else 0.0
    kind = "real-time" if result["granted"] else "ordinary"
    rests = "with its rests" if variant == "rests" else "never resting (the Breather disabled)"
    return (
        f"  {result['ran']} items due at once on a {kind} timer thread {rests}: done in "
        f"{result['elapsed']:.2f} s; an ordinary process on the same CPU got {share * 100:.0f} % "
        "of what it gets alone"
    )


# -- main ------------------------------------------------------------------------------------------


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the finally blocks stop the hogs and the receivers


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items (~1.5 min)")
    sections = ["scheduler", "flood", "pipe", "replay", "metronome", "starvation"]
    parser.add_argument("--only", choices=sections, action="append", help="repeatable")
    args = parser.parse_args(argv)
    only = set(args.only or sections)
    items = 150 if args.quick else 300
    bundles = 100 if args.quick else 200
    replay_seconds = 2.0 if args.quick else 4.0
    cpus = os.cpu_count() or 2
    print(
        f"benchmarks/busy.py: {cpus} CPUs, {load_average()} before; root: {IS_ROOT} "
        "(the pipe section's reader thread asks for SCHED_FIFO 7)"
    )
    refused, pre_refused = refused_prefix()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for hogs, title in ((cpus, f"all {cpus} cores busy"), (1, "one core busy")):
            with busy_cores(hogs):
                for rt_name, prefix, pre in (
                    ("granted", [], None),
                    ("refused", refused, pre_refused),
                ):
                    print(
                        f"\n== {title} (yes x{hogs}), real-time {rt_name} ==  {load_average()}",
                        flush=True,
                    )
                    if "scheduler" in only:
                        print(
                            f"  scheduler ({items} items, 10 ms apart): "
                            + scheduler_section(prefix, pre, items, False),
                            flush=True,
                        )
                    if "flood" in only:
                        print(
                            "  flood (20,000 datagrams/s into the process): "
                            + scheduler_section(prefix, pre, items, True),
                            flush=True,
                        )
                    if "pipe" in only:
                        print(
                            f"  through a pipe ({bundles} bundles 55 ms ahead), lateness of the line read here:",
                            flush=True,
                        )
                        for row in pipe_section(prefix, pre, bundles):
                            print(row, flush=True)
                    if "replay" in only:
                        print(f"  replay at 1,000 msg/s ({replay_seconds:g} s):", flush=True)
                        for row in replay_section(prefix, pre, work, replay_seconds):
                            print(row, flush=True)
                    if "metronome" in only:
                        print(
                            "  metronome send (100 plain ticks, 1200 bpm): "
                            + metronome_section(prefix, pre, 100),
                            flush=True,
                        )
        if "starvation" in only:
            print("\nstarvation (one CPU):")
            for row in starvation_section(10_000 if args.quick else 20_000):
                print(row, flush=True)
    print(
        "\ngoals (issue 29): scheduler with real-time p99 <= 50 µs, max <= 0.5 ms with all cores "
        "busy; replay |interval error| p99 <= 0.1 ms and at or below oscsendfile's"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
