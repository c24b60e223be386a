"""Hardening figures: a long fuzz run, a 10 s flood against ``oscsync dump``, shutdown under load.

    .venv/bin/python benchmarks/hardening.py                 # 100,000 fuzz cases, 10 s flood
    .venv/bin/python benchmarks/hardening.py --quick         # 5,000 cases, 3 s flood
    .venv/bin/python benchmarks/hardening.py --third-round   # only issue 27's probes (~1 min)

Prints: fuzz cases run and crashes (goal 0); for the flood, datagrams sent, messages received,
drops by reason and what is unaccounted (goal 0), peak RSS and thread counts of the listener
(read from /proc), the latency of a probe message after the flood (recovery), and the time the
listener takes to exit on SIGTERM while the flood is still running. Exhaustion (#20): how many
of 1,000 one-shot senders netem relays and whether probes still pass afterwards, and netem's peak
RSS holding 64 KB datagrams under --delay 10s with and without the byte bound. Blob bomb (#20
item 1): the peak RSS of dump, dump --schedule and metronome listen fed blob-size bombs, against
the same listeners fed honest datagrams of the same size.

Third round (issue 27, items 6, 7, 9, 10, 13; ``--third-round`` runs only these): peak RSS and
CPU of a fresh process under each memory or CPU probe, beside a fresh process of the same command
fed a well-behaved load of the same byte count in the same run: dump, record and metronome
listen fed 256 UDP messages with a new 65,000-tag string each (against one-blob datagrams);
dump over TCP fed 16 MiB frames of ``,TTTT...``, of ``,r`` + 65,534 ints + a blob (python-osc's
reader copied the rest of the frame per argument), and of a 15 MiB message nested 63 deep
(against one-blob frames); an OSCQuery server sent ``GET //[`` (against ``GET /``: CPU a
request, stderr bytes, tracebacks); ``replay --timetags shift`` of a recording with one malformed
bundle (against all valid); ``stats`` of /dev/zero and /dev/urandom (against finite files of
what it reads, and a tick log).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import contextlib

from hypothesis import HealthCheck, given, settings

from osc_strategies import mutated
from oscsync.clock import SystemClock
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from waiting import announced_port


def fuzz(cases: int) -> tuple[int, list[str]]:
    crashes: list[str] = []
    ran = 0

    @settings(
        max_examples=cases,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(mutated())
    def one(packet: bytes) -> None:
        nonlocal ran
        ran += 1
        try:
            codec.decode(packet)
        except codec.DecodeError:
            pass
        except Exception as exc:
            crashes.append(f"{type(exc).__name__}: {exc} on {packet[:40]!r}")

    one()
    return ran, crashes


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def start_dump(*extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscsync", "dump", "--jsonl", "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    port = announced_port(proc.stderr)
    return proc, port


def flood(seconds: float) -> None:
    proc, port = start_dump()
    time.sleep(0.3)
    status = proc_status(proc.pid)
    threads_idle = int(status["Threads"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    packets = [codec.encode_message("/flood", [k, k * 0.5, "text"]) for k in range(1000)]
    sent = 0
    peak_threads = threads_idle
    start = time.perf_counter()
    next_sample = start
    while time.perf_counter() - start < seconds:
        for packet in packets:
            sock.send(packet)
        sent += len(packets)
        if time.perf_counter() >= next_sample:
            peak_threads = max(peak_threads, int(proc_status(proc.pid)["Threads"]))
            next_sample += 0.1
    elapsed = time.perf_counter() - start
    time.sleep(0.5)  # let the listener drain its buffer
    peak_rss_kb = int(proc_status(proc.pid)["VmHWM"].split()[0])
    threads_after = int(proc_status(proc.pid)["Threads"])
    proc.terminate()
    summary = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    received = int(re.search(r"received (\d+) messages", summary).group(1))  # type: ignore[union-attr]
    dropped_match = re.search(r"dropped (\d+)(?: \(([^)]*)\))?", summary)
    dropped = int(dropped_match.group(1)) if dropped_match else 0
    reasons = dropped_match.group(2) if dropped_match and dropped_match.group(2) else "none"
    print(
        f"flood: {seconds:.0f} s at {sent / elapsed / 1000:.0f}k datagrams/s offered, {sent} sent"
    )
    print(
        f"  received {received}, dropped {dropped} ({reasons}), unaccounted {sent - received - dropped}"
    )
    print(
        f"  listener peak RSS {peak_rss_kb / 1024:.1f} MiB; threads idle {threads_idle}, "
        f"peak {peak_threads}, after {threads_after}"
    )
    print(f"  summary line: {summary.strip().splitlines()[-1]}")


def recovery_latency() -> None:
    """One-way latency of probes through ``dump`` before and right after a 2 s flood."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscsync", "dump", "--jsonl", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stdout is not None
    port = announced_port(proc.stderr)
    latencies: queue.Queue[tuple[int, float]] = queue.Queue()

    def reader() -> None:
        # Drain stdout continuously (a full pipe would stall dump) and pick out the probes.
        for line in proc.stdout:  # type: ignore[union-attr]
            if '"/probe"' in line:
                record = json.loads(line)
                latencies.put((record["args"][0], -float(record["headroom_ms"])))

    threading.Thread(target=reader, daemon=True).start()
    clock = SystemClock()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))

    def median_probe_ms(first: int) -> float:
        found = []
        for n in range(first, first + 20):
            for _ in range(20):  # a probe can be lost while the buffer is still full: resend
                packet = codec.encode_bundle(
                    clock.now_timetag(), [codec.encode_message("/probe", [n])]
                )
                sock.send(packet)
                try:
                    seq, ms = latencies.get(timeout=0.5)
                except queue.Empty:
                    continue
                if seq == n:
                    found.append(ms)
                    break
        return statistics.median(found) if found else float("nan")

    before = median_probe_ms(0)
    flood_packet = codec.encode_message("/flood", [1])
    end = time.perf_counter() + 2.0
    while time.perf_counter() < end:
        for _ in range(1000):
            sock.send(flood_packet)
    flood_end = time.perf_counter()
    after = median_probe_ms(1000)
    recovered_in = time.perf_counter() - flood_end
    proc.terminate()
    proc.wait()
    print(
        f"recovery: probe latency median {before:.3f} ms before a 2 s flood, {after:.3f} ms after"
        f" (20 probes answered {recovered_in:.2f} s after the flood stopped)"
    )


def shutdown_under_load() -> None:
    proc, port = start_dump()
    sender = subprocess.Popen(
        [sys.executable, "-c",
         "import socket,sys\n"
         "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.connect(('127.0.0.1',int(sys.argv[1])))\n"
         "p=b'/load\\x00\\x00\\x00,i\\x00\\x00\\x00\\x00\\x00\\x01'\n"
         "while True:\n"
         "    try: s.send(p)\n"
         "    except OSError: pass\n", str(port)],
    )  # fmt: skip
    time.sleep(1.0)
    start = time.perf_counter()
    proc.terminate()
    proc.wait(10)
    took = time.perf_counter() - start
    sender.kill()
    sender.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    clean = "Traceback" not in stderr and proc.returncode == 0
    print(
        f"shutdown under load: exited {took * 1000:.0f} ms after SIGTERM, exit code {proc.returncode}, "
        f"{'clean' if clean else 'NOT clean'}"
    )


def _pongs_received(sock: socket.socket, wait: float) -> tuple[int, float]:
    """Datagrams that arrive on ``sock`` until none for ``wait`` s, and when the last came."""
    sock.settimeout(wait)
    got, last = 0, time.perf_counter()
    try:
        while True:
            sock.recv(65535)
            got += 1
            last = time.perf_counter()
    except TimeoutError:
        return got, last


def ping_amplification() -> None:
    """Issue #20 item 6: pongs per ping datagram and pongs/s to one (forgeable) source, with the
    responder of every listener beside today's unlimited one (``answer_ping``)."""
    from oscsync.net.hostport import HostPort
    from oscsync.net.udp import Endpoint
    from oscsync.osc import timetag as tt
    from oscsync.sync.ping import PING, PONG_BURST, PONGS_PER_SECOND, answer_ping, encode_ping

    clock = SystemClock()
    for label, services in (
        ("today (unlimited)", {PING: answer_ping}),
        ("now", None),
    ):
        with Endpoint(HostPort("127.0.0.1", 0), clock=clock, services=services) as listener:
            listener.start(lambda _: None)
            target = listener.local_address
            assert target is not None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
                attacker.bind(("127.0.0.1", 0))
                attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                ping = encode_ping(1, clock.now_timetag())
                pings = [encode_ping(k, clock.now_timetag()) for k in range(1637)]
                bundle = codec.encode_bundle(tt.IMMEDIATELY, pings)
                attacker.sendto(bundle, target.sockaddr)
                per_bundle, _ = _pongs_received(attacker, 0.5)
                time.sleep(1.0)  # the source's budget refills
                sent = 0
                start = time.perf_counter()
                while time.perf_counter() - start < 1.0:
                    attacker.sendto(ping, target.sockaddr)
                    sent += 1
                flood, last = _pongs_received(attacker, 0.5)
        # The listener works through the kernel's backlog after the flood ends: rate over the
        # time the pongs kept coming.
        rate = flood / max(last - start, 1e-9)
        print(
            f"ping amplification, {label}: one {len(bundle):,}-byte bundle of {len(pings):,} "
            f"pings -> {per_bundle:,} pongs (goal 1); {sent:,} pings in 1 s from one source -> "
            f"{flood:,} pongs over {last - start:.2f} s = {rate:,.0f} pongs/s "
            f"(goal <= {PONGS_PER_SECOND:.0f}/s after a burst of "
            f"{PONG_BURST:.0f})"
        )


def _lying_clock(sock: socket.socket, clock: SystemClock, stop: threading.Event) -> None:
    """Answer every ping that reaches ``sock`` with a pong claiming a clock 30 s ahead."""
    from oscsync.osc import timetag as tt
    from oscsync.sync.ping import PING, encode_pong

    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data, source = sock.recvfrom(65535)
        except (TimeoutError, OSError):
            continue
        try:
            (message,) = codec.decode(data)
        except (codec.DecodeError, ValueError):
            continue
        if message.address == PING and message.types == "it":
            seq, t1 = message.args
            claim = tt.add_seconds(clock.now_timetag(), 30.0)
            with contextlib.suppress(OSError):
                sock.sendto(encode_pong(seq, t1, claim, claim), source)


def clock_hijack() -> None:
    """Issue #20 item 4: a stranger on 127.0.0.2 sends ticks first and then forged pongs claiming
    its clock is 30 s ahead; eight real ticks from the leader follow. The follower before #20
    adopted the first sender (its code is gone; issue #11 made the kept comparison follower
    share ClockFollower's peer rules); the follower follows the tick sender named by
    ``--sync-peer``."""
    from oscsync.apps.endpoints import open_endpoint
    from oscsync.net.hostport import HostPort
    from oscsync.osc import timetag as tt
    from oscsync.osc.routing import Received
    from oscsync.sync.follow import ClockFollower
    from oscsync.sync.ping import encode_pong

    clock = SystemClock()
    labels = (
        "now (ClockFollower, --sync-peer)",
        "now without --sync-peer (the stranger's tick came first)",
    )
    for label in labels:
        got: list[Received] = []
        with open_endpoint(HostPort("127.0.0.1", 0), clock=clock) as follower_end:
            target = follower_end.local_address
            assert target is not None
            with open_endpoint(peers=[target], clock=clock) as leader:
                leader.start(lambda _: None)
                leader_addr = leader._peer_socks[0][1].getsockname()[:2]
                named = "--sync-peer)" in label
                follower = ClockFollower(follower_end, peer=leader_addr if named else None)
                follower_end.start(follower.wrap(got.append))
                follower.start()
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                    stranger.bind(("127.0.0.2", 0))
                    stop = threading.Event()
                    answering = threading.Thread(
                        target=_lying_clock, args=(stranger, clock, stop), daemon=True
                    )
                    answering.start()
                    fake = tt.add_seconds(clock.now_timetag(), 30.5)
                    tick = codec.encode_message("/tick", [0], "i")
                    stranger.sendto(codec.encode_bundle(fake, [tick]), target.sockaddr)
                    time.sleep(0.05)
                    for seq in range(1, 500):  # unsolicited pongs, guessing sequence numbers
                        claim = tt.add_seconds(clock.now_timetag(), 30.0)
                        pong = encode_pong(seq, claim, claim, claim)
                        stranger.sendto(pong, target.sockaddr)
                    time.sleep(0.3)
                    due = []
                    for _ in range(8):
                        stamp = tt.add_seconds(clock.now_timetag(), 0.2)
                        due.append(stamp)
                        leader.send("/tick", [1], timetag=stamp)
                        time.sleep(0.02)
                    time.sleep(0.5)
                    stop.set()
                    answering.join(1.0)
                follower.close()
        real = [r for r in got if r.source == leader_addr]
        errors = [abs(tt.difference(r.timetag, stamp)) for r, stamp in zip(real, due) if r.timetag]
        worst = max(errors, default=float("nan"))
        print(
            f"clock hijack, {label}: {len(real)} of 8 real ticks handed on, worst shift from "
            f"the leader's timetag {worst * 1e3:.3f} ms (goal: 8, < 1 ms); stranger's ticks "
            f"handed on {len(got) - len(real)} (goal 0)"
        )


# -- exhaustion (#20 items 7 and 1: netem) -----------------------------------------------------


def start_netem(*extra: str) -> tuple[subprocess.Popen[str], int]:
    """``oscsync netem`` on a free loopback port; returns the process and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscsync", "netem", "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "netem: 127.0.0.1:PORT -> ..."
    port = int(first.split()[1].rsplit(":", 1)[1])
    return proc, port


def relay_exhaustion(one_shot: int) -> None:
    """Relay recovery: probes through netem before and after ``one_shot`` one-shot senders.

    Before #20 the 257th sender found every upstream socket taken and the relay passed nothing
    more until restarted; now the least recently active sender's socket is reused.
    """
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(1.0)
    proc, port = start_netem("--forward", f"127.0.0.1:{sink.getsockname()[1]}")
    relay = ("127.0.0.1", port)

    def probes(count: int) -> tuple[int, float]:
        """Datagrams from one socket that come out of the relay, and their median latency."""
        latencies = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for n in range(count):
                sent = time.perf_counter()
                probe.sendto(b"probe %d" % n, relay)
                try:
                    while sink.recv(2048) != b"probe %d" % n:
                        pass
                except TimeoutError:
                    continue
                latencies.append((time.perf_counter() - sent) * 1e3)
        return len(latencies), statistics.median(latencies) if latencies else float("nan")

    before, before_ms = probes(20)
    relayed = 0
    start = time.perf_counter()
    for k in range(one_shot):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"one-shot %d" % k, relay)
        try:
            sink.recv(2048)
            relayed += 1
        except TimeoutError:
            pass
    took = time.perf_counter() - start
    after, after_ms = probes(20)
    proc.terminate()
    report = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    sink.close()
    senders = next((line for line in report.splitlines() if "senders:" in line), "?")
    print(
        f"relay exhaustion: {relayed}/{one_shot} one-shot senders relayed in {took:.2f} s "
        f"(before #20: 256); probes relayed {before}/20 before (median {before_ms:.2f} ms), "
        f"{after}/20 after (median {after_ms:.2f} ms)"
    )
    print(f"  {senders.strip()}")


def relay_queue_bytes(datagrams: int) -> None:
    """Peak RSS of netem holding 64 KB datagrams under ``--delay 10s``: unbounded vs bounded.

    The baseline is the same relay with a byte bound too large to matter (the behaviour before
    #20, when only the 10,000-datagram cap applied: 641 MB were measured).
    """
    payload = bytes(65_000)
    results = []
    for label, bound in (("4GiB (no byte bound)", "4GiB"), ("32MiB (default)", "32MiB")):
        proc, port = start_netem(
            "--forward", "127.0.0.1:9", "--delay", "10s", "--queue-bytes", bound, "-d", "6"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(datagrams):
                sender.sendto(payload, ("127.0.0.1", port))
                time.sleep(0.0005)  # paced: the relay's socket buffer would drop most of a burst
        time.sleep(0.5)
        peak_rss_kb = int(proc_status(proc.pid)["VmHWM"].split()[0])
        report = proc.stderr.read() if proc.stderr else ""
        proc.wait()
        forward = next((line for line in report.splitlines() if "forward:" in line), "?")
        queue_line = next((line for line in report.splitlines() if "queue:" in line), "?")
        results.append(peak_rss_kb)
        print(f"relay queue, --queue-bytes {label}: peak RSS {peak_rss_kb / 1024:.0f} MiB")
        print(f"  {forward.strip()}")
        print(f"  {queue_line.strip()}")
    print(
        f"relay queue: peak RSS bounded/unbounded {results[1] / results[0]:.2f} "
        f"({datagrams} datagrams of {len(payload)} bytes offered, --delay 10s)"
    )


def exhaustion(quick: bool) -> None:
    relay_exhaustion(300 if quick else 1000)
    relay_queue_bytes(1000 if quick else 3000)


# -- blob-size bomb (issue 20, item 1) ------------------------------------------------------------


def blob_bomb_datagram(address: str = "/bomb", size: int = 65_000) -> tuple[bytes, int]:
    """One datagram of about ``size`` bytes whose blobs, sizes S and -(S+8) in turn, made
    python-osc re-read the same S bytes for every pair; and what that decoded into (bytes)."""
    head = address.encode() + b"\x00"
    head += b"\x00" * (-len(head) % 4)
    pairs = (size - len(head)) // 3  # about a third for type tags, the rest for the one blob
    pairs = min(pairs, (size - len(head) - 16) // 2 // 2)
    tags = ("," + "b" * (2 * pairs)).encode() + b"\x00"
    tags += b"\x00" * (-len(tags) % 4)
    blob = size - len(head) - len(tags) - 8
    blob -= blob % 4
    body = struct.pack(">i", blob) + b"A" * blob + struct.pack(">i", -(blob + 8))
    return head + tags + body, pairs * blob


def benign_datagram(address: str, size: int) -> bytes:
    """A datagram of the same size with one honest blob: the baseline."""
    head = address.encode() + b"\x00"
    head += b"\x00" * (-len(head) % 4)
    blob = size - len(head) - 8 - 4
    blob -= blob % 4
    return head + b",b\x00\x00" + struct.pack(">i", blob) + b"A" * blob


def _peak_rss_fed(argv: list[str], ready: str, datagrams: list[bytes]) -> tuple[float, str]:
    """Peak RSS (MiB) of a listener after it was sent ``datagrams`` (:func:`_listener_cost`);
    and its summary line."""

    def feed(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("127.0.0.1", port))
            for datagram in datagrams:
                sock.send(datagram)
                time.sleep(0.01)  # one at a time: measure what each costs, not the kernel's buffer

    peak, _, summary = _listener_cost(argv, ready, feed)
    return peak, summary


def blob_bomb(count: int = 20) -> None:
    """Peak RSS of dump, dump --schedule and metronome listen fed ``count`` blob bombs, against
    the same listener fed as many honest datagrams of the same size (measured in this run)."""
    bomb, decoded = blob_bomb_datagram()
    print(
        f"blob bomb: one {len(bomb):,}-byte datagram; python-osc alone decodes it into "
        f"{decoded / 2**20:,.0f} MiB of blobs (negative sizes re-read the same bytes)"
    )
    ahead = tt.add_seconds(SystemClock().now_timetag(), 30)  # held by --schedule
    cases = [
        ("dump --jsonl", ["dump", "--jsonl", "--listen", "127.0.0.1:0"], "listening on", "/bomb"),
        (
            "dump --schedule",
            ["dump", "--schedule", "--listen", "127.0.0.1:0"],
            "listening on",
            "bundle",
        ),
        (
            "metronome listen",
            ["metronome", "listen", "--audio", "none", "--listen", "127.0.0.1:0"],
            "listening on",
            "/tick",
        ),
    ]
    for name, argv, ready, kind in cases:
        if kind == "bundle":
            inner, _ = blob_bomb_datagram("/bomb", 65_000 - 20)
            bad = codec.encode_bundle(ahead, [inner])
            good = codec.encode_bundle(ahead, [benign_datagram("/bomb", 65_000 - 20)])
        else:
            bad, _ = blob_bomb_datagram(kind)
            good = benign_datagram(kind, len(bad))
        baseline, _ = _peak_rss_fed(argv, ready, [good] * count)
        peak, summary = _peak_rss_fed(argv, ready, [bad] * count)
        print(
            f"  {name:<17} peak RSS {peak:6.1f} MiB fed {count} bombs, {baseline:6.1f} MiB fed "
            f"{count} honest datagrams of the same size (ratio {peak / baseline:.2f})"
        )
        print(f"    {summary}")


# -- issue 27, items 6, 7, 9, 10, 13: memory and CPU under each probe, against a baseline --------
#
# Each probe runs a fresh process and feeds it the hostile input, then a fresh process of the same
# command is fed a well-behaved load of the same byte count, in the same run. For a listener the
# figures are its peak RSS (VmHWM) and CPU (utime + stime) read from /proc once it has gone idle;
# for a command that ends by itself, its own VmHWM at exit and its CPU from os.wait4. The CPU
# includes start-up (the baseline's too): the difference is the probe's cost.


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_idle(pid: int, limit: float = 120.0) -> None:
    """Until the process used no CPU for 0.6 s (it has handled what it was sent)."""
    end = time.monotonic() + limit
    last, still = _cpu_seconds(pid), 0
    while time.monotonic() < end and still < 3:
        time.sleep(0.2)
        now = _cpu_seconds(pid)
        still = still + 1 if now - last < 0.005 else 0
        last = now


def _listener_cost(
    argv: list[str], ready: str, feed: Callable[[int], None]
) -> tuple[float, float, str]:
    """(peak RSS MiB, CPU s, summary line) of ``oscsync ARGV`` fed by ``feed(port)``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "oscsync", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while ready not in line:
        line = proc.stderr.readline()
    port = int(line.split(ready, 1)[1].split()[0].rstrip(",").rsplit(":", 1)[1])
    feed(port)
    _wait_idle(proc.pid)
    peak = int(proc_status(proc.pid)["VmHWM"].split()[0]) / 1024
    cpu = _cpu_seconds(proc.pid)
    proc.terminate()
    rest = proc.stderr.read().strip().splitlines()
    proc.wait(30)
    return peak, cpu, rest[-1] if rest else ""


_MEASURED_RUN = """
import atexit, os, runpy, sys
fd = int(sys.argv[1])
def report():
    with open("/proc/self/status") as status:
        os.write(fd, next(line for line in status if line.startswith("VmHWM")).encode())
atexit.register(report)
sys.argv = ["oscsync", *sys.argv[2:]]
runpy.run_module("oscsync", run_name="__main__")
"""
"""``python -m oscsync`` with the process's peak RSS (VmHWM) written to a pipe at exit."""


def _command_cost(argv: list[str]) -> tuple[float, float, int, str]:
    """(peak RSS MiB, CPU s, exit code, last stderr line) of ``oscsync ARGV`` run to its end.

    The peak is the command's own VmHWM, reported at exit: wait4's ru_maxrss would include this
    process's memory, shared with the child until its exec."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEASURED_RUN, str(write), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(write,),
        text=True,
    )
    os.close(write)
    assert proc.stderr is not None
    errors = proc.stderr.read().strip()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    with os.fdopen(read) as report:
        peak_kb = int(report.read().split()[1])
    last = errors.splitlines()[-1] if errors else ""
    return peak_kb / 1024, usage.ru_utime + usage.ru_stime, proc.returncode, last


def _udp_feed(datagrams: list[bytes]) -> Callable[[int], None]:
    def feed(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", port))
                time.sleep(0.005)  # paced: what each costs, not what the kernel's buffer drops

    return feed


def _tcp_feed(frames: list[bytes]) -> Callable[[int], None]:
    def feed(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for frame in frames:
                sock.sendall(struct.pack(">i", len(frame)) + frame)

    return feed


def _message(tags: bytes, payload: bytes = b"", address: bytes = b"/a") -> bytes:
    head = address + b"\x00" * (4 - len(address) % 4)
    tag_string = b"," + tags + b"\x00"
    return head + tag_string + b"\x00" * (-len(tag_string) % 4) + payload


def _blob_message(size: int, address: bytes = b"/a") -> bytes:
    """An honest message of exactly ``size`` bytes (a multiple of 4): one blob."""
    blob = size - len(_message(b"b", address=address)) - 4
    return _message(b"b", struct.pack(">i", blob) + b"B" * blob, address)


def _compare(
    label: str, probe: tuple[float, float, str], baseline: tuple[float, float, str]
) -> None:
    print(
        f"  {label}: peak RSS {probe[0]:7.1f} MiB, CPU {probe[1]:6.2f} s; baseline "
        f"{baseline[0]:7.1f} MiB, {baseline[1]:6.2f} s (RSS x{probe[0] / baseline[0]:.2f}, "
        f"CPU {probe[1] - baseline[1]:+.2f} s)"
    )
    print(f"    probe: {probe[2]}")
    print(f"    baseline: {baseline[2]}")


def type_tag_probes(count: int, tmp: Path) -> None:
    """Item 6 over UDP: ``count`` messages ``/a ,TTTT...``, each a new 65,000-tag string (before:
    ~5 MB of plan each in a cache capped at 256 entries, 16.6 MB of UDP took dump, record and
    metronome listen from 26 MB to 1.2 GB), against as many honest datagrams of the same size."""
    bombs = []
    for n in range(count):
        tags = bytearray(b"T" * 65_000)
        tags[n % 65_000] = ord("F")
        bombs.append(_message(bytes(tags)))
    honest = [_blob_message(len(bombs[0]))] * count
    sent = sum(map(len, bombs))
    print(
        f"type-tag plan cache (item 6): {count} datagrams of {len(bombs[0]):,} bytes "
        f"({sent / 1e6:.1f} MB), each a new tag string, against {count} one-blob datagrams"
    )
    listeners = [
        ("dump --jsonl", ["dump", "--jsonl", "--listen", "127.0.0.1:0"]),
        ("record", ["record", "{file}", "--listen", "127.0.0.1:0"]),
        ("metronome listen", ["metronome", "listen", "--audio", "none", "--listen", "127.0.0.1:0"]),
    ]  # fmt: skip
    for name, argv in listeners:
        results = []
        for kind, datagrams in (("probe", bombs), ("baseline", honest)):
            path = tmp / f"{name.split()[0]}-{kind}.jsonl"
            args = [arg.replace("{file}", str(path)) for arg in argv]
            results.append(_listener_cost(args, " on ", _udp_feed(datagrams)))
        _compare(name, results[0], results[1])


def tcp_frame_probes(frames: int) -> None:
    """Item 6 over TCP (before: 48 MB reached 3.4 GB and ~5 s of CPU per frame) and item 7
    (a 15 MiB frame nested 63 deep peaked at 1 GB), each against frames of the same size holding
    one blob, fed to ``dump --listen tcp://``."""
    size = 16 * 1024 * 1024 - 64
    tees = _message(b"T" * (size - 12))
    ints = 65_534  # ,r then ints then one blob: python-osc copied the rest for every int
    head = _message(b"r" + b"i" * ints + b"b", bytes(4 * (ints + 1)))
    blob = size - len(head) - 4
    quadratic = head + struct.pack(">i", blob) + b"Q" * blob
    nested = _blob_message(15 * 1024 * 1024)
    for level in range(63):
        nested = codec.encode_bundle(level + 2, [nested])
    flat = codec.encode_bundle(2, [_blob_message(len(nested) - 20)])
    cases = [
        (f"{frames} frames of ,TTTT... (16 MiB)", [tees] * frames, [_blob_message(len(tees))] * frames),
        (f"{frames} frames of ,rii...ib (65,536 args, 16 MiB)", [quadratic] * frames,
         [_blob_message(len(quadratic))] * frames),
        (f"{frames} frames nested 63 deep (15 MiB)", [nested] * frames, [flat] * frames),
    ]  # fmt: skip
    print("TCP frames (items 6 and 7), dump --jsonl --listen tcp://, against one-blob frames")
    argv = ["dump", "--jsonl", "--listen", "tcp://127.0.0.1:0"]
    for label, probe, baseline in cases:
        _compare(
            label,
            _listener_cost(argv, " on ", _tcp_feed(probe)),
            _listener_cost(argv, " on ", _tcp_feed(baseline)),
        )


_OSCQUERY_CHILD = """
import sys, time
from oscsync.discovery.oscquery import OscQueryServer, host_info, namespace
server = OscQueryServer("127.0.0.1", namespace(()), host_info("bench", 9000)).start()
print(server.port, flush=True)
sys.stdin.read()
print(dict(server.rejected), server.served, file=sys.stderr)
"""


def oscquery_probe(requests: int) -> None:
    """Item 9: ``GET //[ HTTP/1.1`` printed a traceback per request (3,689 in 5 s, 2.8 MB):
    the server's CPU and stderr for malformed requests against as many good ones."""
    print(f"OSCQuery (item 9): {requests} requests 'GET //[ HTTP/1.1' against {requests} 'GET /'")
    for label, line in (
        ("probe", b"GET //[ HTTP/1.1\r\n\r\n"),
        ("baseline", b"GET / HTTP/1.1\r\n\r\n"),
    ):
        proc = subprocess.Popen(
            [sys.executable, "-c", _OSCQUERY_CHILD],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        before = _cpu_seconds(proc.pid)
        start = time.perf_counter()
        answers: Counter[bytes] = Counter()
        for _ in range(requests):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(line)
                answers[sock.recv(64)[:12]] += 1
        took = time.perf_counter() - start
        cpu = _cpu_seconds(proc.pid) - before
        peak = int(proc_status(proc.pid)["VmHWM"].split()[0]) / 1024
        _, errors = proc.communicate("", timeout=30)
        print(
            f"  {label}: {requests / took:,.0f} requests/s, server CPU {cpu * 1e6 / requests:.0f} "
            f"µs a request, peak RSS {peak:.1f} MiB; stderr {len(errors) - len(errors.splitlines()[-1]) - 1:,} "
            f"bytes besides the counts, tracebacks {errors.count('Traceback')}; answers "
            f"{dict((k.decode(), v) for k, v in answers.items())}; counted {errors.strip().splitlines()[-1]}"
        )


def replay_shift_probe(datagrams: int, tmp: Path) -> None:
    """Item 10: ``replay --timetags shift`` of a recording holding one malformed bundle (element
    size 0xFFFFFFF0) looped ~10^9 times (20 s CPU, 3.8 GB), against the same recording with that
    bundle valid."""
    from oscsync.files.recording import RecordingWriter

    stamp = tt.from_unix(1_800_000_000.0)
    good = codec.encode_bundle(stamp, [codec.encode_message("/a", [1])])
    bad = good[:16] + struct.pack(">I", 0xFFFFFFF0) + b"#bundle\x00" + bytes(8)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    peer = f"127.0.0.1:{sink.getsockname()[1]}"
    print(
        f"replay --timetags shift (item 10): {datagrams} datagrams, one a malformed bundle, "
        "against the same recording with that one valid"
    )
    results = []
    for label, odd in (
        ("probe", bad),
        ("baseline", good),
    ):
        path = tmp / f"shift-{label}.jsonl"
        with path.open("w") as out:
            writer = RecordingWriter(out, 0.0)
            writer.write_header(host="h", clock="system", started_unix=1.8e9, listen="x:1",
                                software="bench")  # fmt: skip
            for n in range(datagrams):
                data = odd if n == datagrams // 2 else good
                writer.add(data, "127.0.0.1:1", 1.8e9 + n / 1000, n / 1000)
            writer.close(datagrams / 1000, {})
        results.append(_command_cost(
            ["replay", str(path), "--peer", peer, "--timetags", "shift", "--speed", "100"]
        ))  # fmt: skip
    sink.close()
    for label, (peak, cpu, code, last) in zip(("probe", "baseline"), results):
        print(f"  {label}: peak RSS {peak:.1f} MiB, CPU {cpu:.2f} s, exit {code}; {last}")


def stats_probe(tmp: Path) -> None:
    """Item 13: ``stats /dev/zero`` ran forever at 100 % CPU. Each endless file against a finite
    file of what it now reads before it stops, and a real tick log."""
    zeros = tmp / "zeros.bin"
    with zeros.open("wb") as out:
        for _ in range(64):
            out.write(bytes(1 << 20))
    lines = tmp / "random-lines.txt"
    with lines.open("wb") as out:
        for _ in range(10_000):
            out.write(os.urandom(40).replace(b"\n", b" ") + b"\n")
    log = tmp / "ticks.jsonl"
    with log.open("w") as out:
        for k in range(10_000):
            out.write(json.dumps({"seq": k, "arrival": 1e9 + k / 4, "onset": 1e9 + k / 4,
                                  "timetag": None, "late": False}) + "\n")  # fmt: skip
    print("stats (item 13): files that never end, against finite files of what they now read")
    for label, path in (
        ("/dev/zero", "/dev/zero"),
        ("64 MiB of zeros in a file", str(zeros)),
        ("/dev/urandom", "/dev/urandom"),
        ("10,000 random lines in a file", str(lines)),
        ("a tick log of 10,000 ticks", str(log)),
    ):
        peak, cpu, code, last = _command_cost(["stats", path])
        said = last or "its table on stdout"
        print(f"  {label}: peak RSS {peak:.1f} MiB, CPU {cpu:.2f} s, exit {code}; {said}")


def third_round(quick: bool) -> None:
    """Every memory and CPU probe of issue 27's files and memory items, against its baseline."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="oscsync-hardening-") as name:
        tmp = Path(name)
        type_tag_probes(64 if quick else 256, tmp)
        tcp_frame_probes(1 if quick else 3)
        oscquery_probe(500 if quick else 2000)
        replay_shift_probe(1000 if quick else 5000, tmp)
        stats_probe(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument(
        "--third-round",
        action="store_true",
        help="only issue 27's memory and CPU probes (items 6, 7, 9, 10, 13), each with its baseline",
    )
    args = parser.parse_args()
    if args.third_round:
        third_round(args.quick)
        return
    cases = 5_000 if args.quick else args.cases
    seconds = 3.0 if args.quick else args.flood_seconds

    start = time.perf_counter()
    ran, crashes = fuzz(cases)
    print(
        f"fuzz: {ran} mutated packets decoded in {time.perf_counter() - start:.0f} s, "
        f"crashes {len(crashes)} (goal 0)"
    )
    for crash in crashes[:5]:
        print("  ", crash)
    flood(seconds)
    recovery_latency()
    shutdown_under_load()
    ping_amplification()
    clock_hijack()
    exhaustion(args.quick)
    blob_bomb()
    third_round(args.quick)


if __name__ == "__main__":
    main()
