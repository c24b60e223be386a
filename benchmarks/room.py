"""A room of laptops on one machine (issue #33): N followers in time with one leader.

One leader process (``SendSession``: ticks at 240 bpm to a multicast group, 100 ms ahead, and the
room's sync messages), one relay process (``apps/roomlab.RoomRelay``: a link of its own per
follower, 20 ± 15 ms uniform each way, 1 % loss, multicast on loopback) and N follower processes
(``TickListenSession`` on a group of their own, ``--sync`` following the leader, no audio: an
onset recorder), each on a clock of its own (``SkewedClock``, skew up to ±200 ms, drift up to
±100 ppm, the epoch given so that every onset maps back exactly onto the one real clock).
Followers start staggered; ticks start once the last follower has had 12 s; everything is
scored from 10 s after the first tick. Printed for each N:

* the spread of all followers' onsets per tick (max − min, on the real clock), p50/p99/max
  (goal at 64: p99 ≤ 0.5 ms);
* packets per second on the leader's socket, in and out (out includes the 100 sync messages a
  second and the ticks, which on a real channel are one multicast frame each);
* packets per second per follower, its own unicast traffic (pings, pongs, reports) as the relay
  counted it (goal ≤ 5; before issue #33: ~200);
* the leader's CPU share of one core (goal ≤ 10 %), its tick send lateness (mean/max: it should
  not grow with N), late ticks and lost ticks (due in the scored window, never played).

``before #33`` rows run the same room with followers as before the issue (no sync messages,
pings 200 then 100 a second): the per-follower rate beside the new one, in the same run.

    scripts/isolated .venv/bin/python benchmarks/room.py            # N = 2, 16, 64; before: 2, 16
    scripts/isolated .venv/bin/python benchmarks/room.py --quick    # N = 2, 8; before: 2; shorter

Run it in the namespace ``scripts/isolated`` makes (multicast on ``lo`` only). 64 Python
followers on 2 cores is heavy: on a loaded machine the spread grows with the load, not the
protocol; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from oscsync.stats import percentile

BPM = 240.0
PERIOD = 60.0 / BPM
OFFSET = 0.1
SCORED_AFTER = 10.0
SETTLE = 12.0
"""Seconds the last follower has before the first tick (its acquisition is 10 s)."""
LINK = {"delay": 0.020, "jitter": 0.015, "loss": 0.01}
if os.environ.get("ROOM_LINK"):  # a check of the lab itself: ROOM_LINK=0.02,0,0 (no jitter)
    LINK = dict(zip(("delay", "jitter", "loss"), map(float, os.environ["ROOM_LINK"].split(","))))
PORT = 47_331


def _sample(window: list[tuple[float, ...]], start: float, end: float) -> tuple[float, ...]:
    """The rate of each counter over [start, end] from (time, counters...) samples."""
    inside = [row for row in window if start <= row[0] <= end]
    if len(inside) < 2:
        return tuple(math.nan for _ in window[0][1:]) if window else ()
    first, last = inside[0], inside[-1]
    span = last[0] - first[0]
    return tuple((b - a) / span for a, b in zip(first[1:], last[1:], strict=True))


# -- the workers (each its own process) --------------------------------------------------------


def relay_worker(args: argparse.Namespace) -> None:
    from oscsync.apps.netemlink import ImpairmentSpec
    from oscsync.apps.roomlab import RoomRelay
    from oscsync.clock import SystemClock
    from oscsync.net.hostport import HostPort

    clock = SystemClock()
    spec = ImpairmentSpec(delay=LINK["delay"], jitter=LINK["jitter"], loss=LINK["loss"])
    groups = [HostPort(f"239.255.34.{i + 1}", PORT + 1) for i in range(args.followers)]
    relay = RoomRelay(HostPort("239.255.33.1", PORT), groups, spec, clock=clock, seed=args.seed)
    relay.start()
    addresses = [str(relay.link_address(i)) for i in range(args.followers)]
    print(json.dumps({"links": addresses}), flush=True)
    time.sleep(max(0.0, args.end - time.time()))
    relay.close()
    out = {
        "counts": [
            [(t - clock.monotonic() + time.time(), up, down) for t, up, down in link.counts_at]
            for link in relay.links
        ],
        "lost": [link.lost for link in relay.links],
        "lateness_max": relay.lateness_max,
    }
    Path(args.out).write_text(json.dumps(out))


def leader_worker(args: argparse.Namespace) -> None:
    import threading

    from oscsync.apps.receiving import SessionSetup
    from oscsync.apps.sessions import SendSession
    from oscsync.clock import SystemClock
    from oscsync.net.hostport import HostPort
    from oscsync.osc import timetag as tt

    clock = SystemClock()
    session = SendSession(
        [HostPort("239.255.33.1", PORT)],
        SessionSetup(clock, multicast_interface="127.0.0.1"),
        room=None if args.mode == "room" else False,
    )
    if session.beacon is None:
        # One sync message all the same (followers as before #33 ignore it): the lab's relay
        # learns the leader's address from its first multicast datagram, before any tick.
        from oscsync.sync.room import SyncBeacon

        SyncBeacon(clock, session.endpoint.send_bytes).send_one()
    samples: list[tuple[float, ...]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            times = os.times()
            stats = session.endpoint.stats
            samples.append((time.time(), stats.datagrams, stats.sent, times.user + times.system))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sender = session.tick_sender(bpm=BPM, beats_per_bar=4, offset=OFFSET)
    count = int((args.end - args.t0) / PERIOD)
    sender.start(count, t0=tt.from_unix(args.t0))
    session.scheduler.start()
    sender.done.wait(args.end - time.time() + 5)
    time.sleep(max(0.0, args.end + 1.0 - time.time()))
    stop.set()
    sampler.join()
    room = session.room.summary()
    session.close()
    out = {
        "samples": samples,
        "sent": sender.sent,
        "lateness_mean": sender.lateness.mean,
        "lateness_max": sender.lateness.maximum,
        "room": room.line(),
        "syncs": 0 if session.beacon is None else session.beacon.sent,
    }
    Path(args.out).write_text(json.dumps(out))


def follower_worker(args: argparse.Namespace) -> None:
    from oscsync.apps.lab import OnsetRecorder
    from oscsync.apps.receiving import SessionSetup
    from oscsync.apps.sessions import TickListenSession
    from oscsync.clock import SkewedClock, SystemClock
    from oscsync.net.hostport import HostPort, parse_hostport
    from oscsync.sync.follow import ClockFollower

    reference = SystemClock()
    clock = SkewedClock(reference, skew=args.skew, drift_ppm=args.drift, epoch=args.epoch)
    recorder = OnsetRecorder()
    records: list[tuple[float, float, bool]] = []
    session = TickListenSession(
        HostPort(f"239.255.34.{args.index + 1}", PORT + 1),
        (),
        SessionSetup(clock, multicast_interface="127.0.0.1"),
        player=recorder,
        beats_per_bar=4,
    )
    session.show = lambda record: records.append((record.onset, record.arrival, record.late))
    peer = parse_hostport(args.peer)
    if args.mode == "room":
        session.start("peer", peer)
        assert session.follower is not None
        session.follower.name = f"f{args.index:02d}"
        follower: ClockFollower = session.follower
    else:
        follower = ClockFollower(session.endpoint, peer=peer.sockaddr, room_poll=None)
        session.start(follower=follower)
    time.sleep(max(0.0, args.end - time.time()))
    session.close_follower()
    session.close()

    def to_reference(wall: float) -> float:
        return reference.monotonic_to_wall(clock.wall_to_monotonic(wall))

    times = os.times()
    out = {
        "onsets": [(to_reference(onset), late) for onset, _, late in records],
        "describe": follower.describe(),
        "cpu": times.user + times.system,
    }
    Path(args.out).write_text(json.dumps(out))


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    followers: int
    spread: list[float]
    leader_in: float
    leader_out: float
    per_follower: list[float]
    cpu: float
    lateness_mean: float
    lateness_max: float
    late: int
    lost: int
    room: str


def _spawn(role: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--worker", role, "--out", str(out), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def run(n: int, mode: str, seconds: float, stagger: float, seed: int, work: Path) -> Row:
    rng = random.Random(seed * 100 + n)
    start = time.time()
    followers_start = start + 2.0
    t0 = followers_start + n * stagger + SETTLE
    end = t0 + seconds
    common = ["--followers", str(n), "--end", repr(end), "--seed", str(seed), "--mode", mode]
    relay = _spawn("relay", work / "relay.json", *common)
    assert relay.stdout is not None
    links = json.loads(relay.stdout.readline())["links"]
    leader = _spawn("leader", work / "leader.json", *common, "--t0", repr(t0))
    workers = []
    for index in range(n):
        time.sleep(max(0.0, followers_start + index * stagger - time.time()))
        workers.append(
            _spawn(
                "follower",
                work / f"f{index}.json",
                *common,
                "--index",
                str(index),
                "--peer",
                links[index],
                "--skew",
                repr(rng.uniform(-0.2, 0.2)),
                "--drift",
                repr(rng.uniform(-100, 100)),
                "--epoch",
                repr(start),
            )
        )
    for process in (*workers, leader, relay):
        process.wait(timeout=end - time.time() + 60)
    results = [json.loads((work / f"f{i}.json").read_text()) for i in range(n)]
    led = json.loads((work / "leader.json").read_text())
    relayed = json.loads((work / "relay.json").read_text())
    scored = t0 + SCORED_AFTER
    by_tick: dict[int, list[float]] = {}
    late = lost = 0
    due = [k for k in range(int((end - t0) / PERIOD)) if scored <= t0 + k * PERIOD + OFFSET < end]
    for result in results:
        played = set()
        for onset, was_late in result["onsets"]:
            k = round((onset - t0 - OFFSET) / PERIOD)
            if k not in due or k in played:
                continue
            played.add(k)
            if was_late:
                late += 1
            else:
                by_tick.setdefault(k, []).append(onset)
        lost += len(set(due) - played)
    spread = [max(v) - min(v) for v in by_tick.values() if len(v) >= 2]
    if os.environ.get("ROOM_DEBUG"):
        print(
            f"  relay: lost {relayed['lost']}, lateness max {relayed['lateness_max'] * 1e3:.1f} ms,"
            f" last counts {[c[-1] for c in relayed['counts']]}, leader syncs {led['syncs']}"
        )
        for index, result in enumerate(results):
            errors = sorted(
                onset - (t0 + OFFSET + round((onset - t0 - OFFSET) / PERIOD) * PERIOD)
                for onset, _ in result["onsets"]
            )
            print(f"  f{index} median error {errors[len(errors) // 2] * 1e3:+.3f} ms: "
                  f"{result['describe']}")  # fmt: skip
    samples = [tuple(row) for row in led["samples"]]
    leader_in, leader_out, cpu = _sample(samples, scored, end)
    per_follower = []
    for counts in relayed["counts"]:
        up, down = _sample([tuple(row) for row in counts], scored, end)
        per_follower.append(up + down)
    return Row(
        "room" if mode == "room" else "before #33",
        n,
        spread,
        leader_in,
        leader_out,
        per_follower,
        cpu,
        led["lateness_mean"],
        led["lateness_max"],
        late,
        lost,
        led["room"],
    )


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "   -  "
    return f"{percentile(sorted(values), q) * 1e3:6.3f}"


def report(row: Row) -> None:
    spread = row.spread
    worst = max(row.per_follower, default=math.nan)
    mean = sum(row.per_follower) / len(row.per_follower) if row.per_follower else math.nan
    print(
        f"{row.label:<11} {row.followers:3d}  {_ms(spread, 0.5)} / {_ms(spread, 0.99)} / "
        f"{_ms(spread, 1.0)}   {row.leader_in:7.0f} / {row.leader_out:6.0f}   "
        f"{mean:6.1f} / {worst:6.1f}   {row.cpu * 100:5.1f} %   "
        f"{row.lateness_mean * 1e6:5.0f} / {row.lateness_max * 1e6:6.0f} µs   "
        f"{row.late:5d} {row.lost:5d}"
    )
    print(f"{'':17}leader's view: {row.room}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 2, 8; before #33: 2; 30 s.")
    parser.add_argument("--followers", help="Comma-separated N (default 2,16,64).")
    parser.add_argument("--before", help="N for the rows before #33 (default 2,16).")
    parser.add_argument("--seconds", type=float, help="Seconds of ticks (default 60).")
    parser.add_argument("--stagger", type=float, default=0.4, help="Seconds between starts.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", choices=["relay", "leader", "follower"], help=argparse.SUPPRESS)
    for name in ("--out", "--peer", "--mode"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--end", "--t0", "--skew", "--drift", "--epoch"):
        parser.add_argument(name, type=float, help=argparse.SUPPRESS)
    for name in ("--index",):
        parser.add_argument(name, type=int, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.worker:
        if args.followers is not None:
            args.followers = int(args.followers)
        {"relay": relay_worker, "leader": leader_worker, "follower": follower_worker}[args.worker](
            args
        )
        return 0
    followers = [
        int(n) for n in (args.followers or ("2,8" if args.quick else "2,16,64")).split(",")
    ]
    before_text = args.before if args.before is not None else ("2" if args.quick else "2,16")
    before = [int(n) for n in before_text.split(",") if n]
    seconds = args.seconds or (30.0 if args.quick else 60.0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(
        f"room benchmark on {platform.node()} (python {sys.version.split()[0]}, load average "
        f"{load:.2f} on {os.cpu_count()} cores); links {LINK['delay'] * 1e3:g} ± "
        f"{LINK['jitter'] * 1e3:g} ms uniform, {LINK['loss'] * 100:g} % loss, each way, per "
        f"follower; skews ±200 ms, drifts ±100 ppm; {seconds:g} s of ticks at {BPM:g} bpm, "
        f"scored after {SCORED_AFTER:g} s"
    )
    print(
        "            N   spread p50 /    p99 /    max (ms)   leader in / out (pkt/s)   "
        "per follower mean / max (pkt/s)   leader CPU   tick send late mean / max   late  lost"
    )
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"oscsync-room-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    runs = [(n, "legacy") for n in before] + [(n, "room") for n in followers]
    for n, mode in runs:
        report(run(n, mode, seconds, args.stagger, args.seed, work))
        sys.stdout.flush()
    print("goal at 64: spread p99 ≤ 0.5 ms, ≤ 5 packets/s per follower, leader CPU ≤ 10 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
