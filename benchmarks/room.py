"""A room of laptops on one machine (issue #33): N followers in time with one leader.

Two parts, each printed for N = 2, 16, 64:

**The protocol alone.** Each follower is the real ``ClockFollower`` (estimator, servo, poll) on a
fake clock, driven event by event: the leader's sync messages every 10 ms and the follower's own
pings cross a link of its own (20 ± 15 ms uniform each way, 1 % loss), every stamp exact. A
second row adds to every datagram an exponential delay of mean :data:`LAB_NOISE`, what the
process lab below measures of its own: the protocol's figure, and what the lab's noise makes
of it. Seconds of CPU, whatever N.

**The process lab.** One leader process (``SendSession``: ticks at 240 bpm to a multicast group,
100 ms ahead, and the room's sync messages), one relay process (``apps/roomlab.RoomRelay``: a link
of its own per follower, the same model, multicast on loopback, delays from the kernel's receive
stamps) and N follower processes (``TickListenSession`` on a group of their own, ``--sync``
following the leader, no audio: an onset recorder), each on a clock of its own (``SkewedClock``,
skew up to ±200 ms, drift up to ±100 ppm, the epoch given so that every onset maps back exactly
onto the one real clock). Followers start staggered; ticks start once the last follower is up and has
had 12 s; everything is scored from 10 s after the first tick. Printed for each N:

* the spread of all followers' onsets per tick (max − min, on the real clock), p50/p99/max
  (goal at 64: p99 ≤ 0.5 ms), and each follower's median error (a spread made of biases is
  stamping or relaying noise, not jitter);
* packets per second on the leader's socket, in and out (out includes the 100 sync messages a
  second and the ticks, which on a real channel are one multicast frame each);
* packets per second per follower, its own unicast traffic (pings, pongs, reports) as the relay
  counted it (goal ≤ 5; before issue #33: ~200);
* the leader's CPU share of one core (goal ≤ 10 %), its tick send lateness (mean/max: it should
  not grow with N), late ticks and lost ticks (due in the scored window, never played);
* the lab's own noise: how late the relay read and sent datagrams, how long the leader took
  from T3 to the wire, and the followers from T1 (their clocks are known here); a follower's CPU.
  A follower process costs ~3.5 % of a core on the 2-core VM (its Python receive path, 100 sync
  messages a second): 64 of them ask more than two cores, and a row whose relay could not keep
  up says so.

``before #33`` rows run the same room with followers as before the issue (no sync messages,
pings 200 then 100 a second): the per-follower rate beside the new one, in the same run.

    scripts/isolated nice .venv/bin/python benchmarks/room.py     # N = 2, 16, 64; before: 2, 16
    scripts/isolated .venv/bin/python benchmarks/room.py --quick  # N = 2, 8; before: 2; shorter
    .venv/bin/python benchmarks/room.py --only simulated          # the protocol alone (no lab)

Run the lab in the namespace ``scripts/isolated`` makes (multicast on ``lo`` only).
``ROOM_PLAIN_RELAY=1`` runs the relay as first written (no kernel stamps, the selector alone
waiting for due times), ``ROOM_LINK=0.02,0,0`` a link without jitter or loss: checks of the lab.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
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
    if not os.environ.get("ROOM_PLAIN_RELAY"):
        from oscsync.realtime import Realtime

        policy = Realtime("auto")  # the relay's thread asks for real-time priority
        policy.probe()
        policy.install()
    spec = ImpairmentSpec(delay=LINK["delay"], jitter=LINK["jitter"], loss=LINK["loss"])
    groups = [HostPort(f"239.255.34.{i + 1}", PORT + 1) for i in range(args.followers)]
    relay = RoomRelay(
        HostPort("239.255.33.1", PORT),
        groups,
        spec,
        clock=clock,
        seed=args.seed,
        precise=not os.environ.get("ROOM_PLAIN_RELAY"),
    )
    relay.start()
    addresses = [str(relay.link_address(i)) for i in range(args.followers)]
    print(json.dumps({"links": addresses}), flush=True)
    end = _told()
    time.sleep(max(0.0, end - time.time()))
    relay.close()
    out = {
        "counts": [
            [(t - clock.monotonic() + time.time(), up, down) for t, up, down in link.counts_at]
            for link in relay.links
        ],
        "lost": [link.lost for link in relay.links],
        "pings": [list(link.pings) for link in relay.links],
        "lateness_max": relay.lateness_max,
        "realtime": relay.realtime,
        "noise": {
            name: [kept.percentile(0.5), kept.percentile(0.99), kept.maximum]
            for name, kept in vars(relay.noise).items()
        },
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
    from oscsync.realtime import Realtime

    policy = Realtime("auto")  # as `metronome send` asks (its timer, receive and sync threads)
    policy.probe()
    policy.install()
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
    t0, end = _told(), _told()
    sender = session.tick_sender(bpm=BPM, beats_per_bar=4, offset=OFFSET)
    count = int((end - t0) / PERIOD)
    sender.start(count, t0=tt.from_unix(t0))
    session.scheduler.start()
    sender.done.wait(end - time.time() + 5)
    time.sleep(max(0.0, end + 1.0 - time.time()))
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
        "realtime": policy.describe(),
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

    started, cpu_before = time.time(), os.times()
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
    print("ready", flush=True)
    end = _told()
    time.sleep(max(0.0, end - time.time()))
    session.close_follower()
    session.close()

    def to_reference(wall: float) -> float:
        return reference.monotonic_to_wall(clock.wall_to_monotonic(wall))

    times = os.times()
    out = {
        "onsets": [(to_reference(onset), late) for onset, _, late in records],
        "describe": follower.describe(),
        "cpu": times.user + times.system - cpu_before.user - cpu_before.system,
        "lifetime": time.time() - started,
    }
    Path(args.out).write_text(json.dumps(out))


# -- the protocol alone: fake clocks, exact stamps ---------------------------------------------


@dataclass
class Simulated:
    """One simulated follower: its map's error at each tick time, its packets after lock."""

    errors: list[float]
    per_second: float


def simulate_follower(seed: int, seconds: float, noise: float) -> Simulated:
    """The room protocol for one follower on the fake clock: the leader's sync messages every
    10 ms and the follower's own pings (its burst, then its poll), each datagram across a link
    of :data:`LINK` drawn independently, plus ``noise``: an extra exponential delay of that
    mean on every datagram (the lab's stamping and relaying, measured). Every stamp is exact;
    the follower is the real :class:`~oscsync.sync.follow.ClockFollower` (estimator, servo,
    poll), driven by events in time order as ``tests/test_room.py`` drives it."""
    import heapq
    import itertools
    from collections.abc import Callable

    from oscsync.apps.endpoints import open_endpoint
    from oscsync.clock import FakeClock, SkewedClock
    from oscsync.osc import codec
    from oscsync.osc.routing import Received
    from oscsync.sync import room
    from oscsync.sync.follow import ClockFollower
    from oscsync.sync.ping import PONG, pong_for

    rng = random.Random(seed)
    clock = FakeClock()
    leader_clock = SkewedClock(clock, rng.uniform(-0.2, 0.2), rng.uniform(-100, 100))
    leader = ("127.0.0.1", 7000)
    endpoint = open_endpoint(clock=clock)
    follower = ClockFollower(endpoint, peer=leader, name="sim")
    events: list[tuple[float, int, Callable[[], None]]] = []
    order = itertools.count()
    packets = [0]

    def carried(action: Callable[[], None]) -> None:
        packets[0] += 1
        if rng.random() < LINK["loss"]:
            return
        delay = LINK["delay"] + rng.uniform(-LINK["jitter"], LINK["jitter"])
        if noise:
            delay += rng.expovariate(1 / noise)
        heapq.heappush(events, (clock.monotonic() + delay, next(order), action))

    def deliver(data: bytes) -> None:
        for message in codec.decode(data):
            received = Received(message, leader, clock.now())
            if received.address == PONG:
                follower.take_pong(received)
            else:
                follower.take_sync(received)

    def from_follower(data: bytes) -> None:
        def arrive() -> None:
            if data.startswith(room.STATUS.encode()):
                return
            (ping,) = (
                Received(m, ("127.0.0.1", 9001), leader_clock.now()) for m in codec.decode(data)
            )
            pong = pong_for(ping, leader_clock)
            carried(lambda: deliver(pong))

        carried(arrive)

    follower._sender = lambda: from_follower  # type: ignore[method-assign]
    start = clock.monotonic()
    scored, end = start + SETTLE + SCORED_AFTER, start + SETTLE + seconds
    next_sync, next_ping, next_tick = start + rng.uniform(0, 0.01), start, scored
    burst, seq, at_score = follower.burst, 0, 0
    errors: list[float] = []
    while True:
        pending = events[0][0] if events else math.inf
        when = min(pending, next_sync, next_ping, next_tick)
        if when > end:
            break
        clock.advance(max(0.0, when - clock.monotonic()))
        if when == pending:
            heapq.heappop(events)[2]()
        elif when == next_sync:
            seq += 1
            sync = room.encode_sync(7, seq, leader_clock.now_timetag())
            packets[0] -= 1  # the room's multicast: not this follower's own traffic
            carried(lambda sync=sync: deliver(sync))  # type: ignore[misc]
            next_sync += 1 / room.SYNC_RATE
        elif when == next_tick:
            offset = follower.offset()
            truth = leader_clock.monotonic_to_wall(when) - clock.monotonic_to_wall(when)
            errors.append(math.nan if offset is None else offset - truth)
            if not at_score:
                at_score = packets[0]
            next_tick += PERIOD
        else:
            follower.ping()
            follower._report()
            if burst > 0:
                burst -= 1
                next_ping += follower.burst_interval
            else:
                next_ping += follower._next_interval()
    endpoint.close()
    return Simulated(errors, (packets[0] - at_score) / (end - scored))


def simulate(
    n: int, seconds: float, seed: int, noise: float
) -> tuple[list[float], list[float], list[float]]:
    """Spread per tick, each follower's packets a second after lock, each one's median error."""
    followers = [simulate_follower(seed * 10_000 + i, seconds, noise) for i in range(n)]
    spread = [max(col) - min(col) for col in zip(*(f.errors for f in followers), strict=True)]
    biases = [statistics.median(f.errors) for f in followers]
    return spread, [f.per_second for f in followers], biases


OVERLOADED = 1e-3
"""A relay whose median send lateness exceeds this (seconds) could not keep up: the machine
was the limit."""
LAB_NOISE = 100e-6
"""Mean of the extra delay the simulation's second row adds to every datagram: what the process
lab measures of its own (a relay's sleep overshooting, a Python thread between reading its clock
and the wire: p50 ~70-140 µs each way on the shared 2-core VM)."""


def report_simulated(n: int, seconds: float, seed: int) -> None:
    for label, noise in (("exact", 0.0), ("+lab noise", LAB_NOISE)):
        spread, rates, biases = simulate(n, seconds, seed, noise)
        print(
            f"{label:<11} {n:3d}  {_ms(spread, 0.5)} / {_ms(spread, 0.99)} / "
            f"{_ms(spread, 1.0)}   {statistics.mean(rates):6.1f} / {max(rates):6.1f}   "
            f"median errors {min(biases) * 1e3:+.3f} to {max(biases) * 1e3:+.3f} ms"
        )
        sys.stdout.flush()


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
    biases: list[float]
    """Each follower's median onset error (against the leader's grid) in the scored window."""
    follower_cpu: float
    """A follower process's CPU share of one core, mean over its life."""
    noise: dict[str, list[float]]
    """The lab's own noise (apps/roomlab.RelayNoise): p50, p99, max of each, seconds."""
    relay_realtime: bool = False
    leader_realtime: str = ""
    start_late: float = 0.0
    """How long after its own start the last follower was up (process start on this machine)."""


def _spawn(role: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--worker", role, "--out", str(out), *extra]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _told() -> float:
    """A worker's next time (Unix seconds) from the run, on its stdin: the ticks' start and
    the end are known only once every follower is up."""
    return float(sys.stdin.readline())


def _tell(process: subprocess.Popen[str], *times: float) -> None:
    assert process.stdin is not None
    process.stdin.write("".join(f"{t!r}\n" for t in times))
    process.stdin.flush()


def run(n: int, mode: str, seconds: float, stagger: float, seed: int, work: Path) -> Row:
    rng = random.Random(seed * 100 + n)
    start = time.time()
    followers_start = start + 2.0
    common = ["--followers", str(n), "--seed", str(seed), "--mode", mode]
    relay = _spawn("relay", work / "relay.json", *common)
    assert relay.stdout is not None
    links = json.loads(relay.stdout.readline())["links"]
    leader = _spawn("leader", work / "leader.json", *common)
    workers = []
    clocks = []
    for index in range(n):
        skew, drift = rng.uniform(-0.2, 0.2), rng.uniform(-100, 100)
        clocks.append((skew, drift))
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
                repr(skew),
                "--drift",
                repr(drift),
                "--epoch",
                repr(start),
            )
        )
    # Ticks start once the last follower is up and has had SETTLE seconds (on a loaded
    # machine 64 Python processes start late: their acquisition must not be scored).
    for worker in workers:
        assert worker.stdout is not None
        worker.stdout.readline()
    last_up = time.time()
    t0 = last_up + SETTLE
    end = t0 + seconds
    _tell(leader, t0, end)
    for process in (relay, *workers):
        _tell(process, end)
    for process in (*workers, leader, relay):
        process.wait(timeout=end - time.time() + 60)
    results = [json.loads((work / f"f{i}.json").read_text()) for i in range(n)]
    led = json.loads((work / "leader.json").read_text())
    relayed = json.loads((work / "relay.json").read_text())
    scored = t0 + SCORED_AFTER
    by_tick: dict[int, list[float]] = {}
    late = lost = 0
    due = [k for k in range(int((end - t0) / PERIOD)) if scored <= t0 + k * PERIOD + OFFSET < end]
    biases = []
    for result in results:
        played = set()
        errors = []
        for onset, was_late in result["onsets"]:
            k = round((onset - t0 - OFFSET) / PERIOD)
            if k not in due or k in played:
                continue
            played.add(k)
            errors.append(onset - (t0 + OFFSET + k * PERIOD))
            if was_late:
                late += 1
            else:
                by_tick.setdefault(k, []).append(onset)
        lost += len(set(due) - played)
        if errors:
            biases.append(statistics.median(errors))
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
    # How long each follower took from its ping's T1 to the wire: its clock is known here.
    ping_late: list[float] = []
    ping_floor: list[float] = []
    for (skew, drift), pings in zip(clocks, relayed["pings"], strict=True):
        rate = 1 + drift * 1e-6
        late_here = sorted(
            arrived - (t1 - skew + drift * 1e-6 * start) / rate for arrived, t1 in pings
        )
        if late_here:
            ping_late += late_here
            ping_floor.append(percentile(late_here, 0.01))
    ping_late.sort()
    noise = dict(relayed["noise"])
    if ping_late:
        noise["follower_ping"] = [
            percentile(ping_late, 0.5),
            percentile(ping_late, 0.99),
            ping_late[-1],
        ]
        noise["follower_ping_floor"] = [min(ping_floor), max(ping_floor), math.nan]
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
        biases,
        statistics.mean(r["cpu"] / r["lifetime"] for r in results) if results else math.nan,
        noise,
        relayed.get("realtime", False),
        led.get("realtime", ""),
        last_up - (followers_start + (n - 1) * stagger),
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
    print(f"{'':17}leader's view: {row.room} ({row.leader_realtime})")
    if row.biases:
        low, high = min(row.biases), max(row.biases)
        print(
            f"{'':17}followers' median onset error {low * 1e3:+.3f} to {high * 1e3:+.3f} ms "
            f"(their own spread {(high - low) * 1e3:.3f} ms); a follower's CPU "
            f"{row.follower_cpu * 100:.1f} % of a core; the last one up {row.start_late:.1f} s "
            "after it was started"
        )

    def us(name: str) -> str:
        p50, p99, worst = row.noise.get(name, [math.nan] * 3)
        return f"{p50 * 1e6:.0f} / {p99 * 1e6:.0f} / {worst * 1e6:.0f}"

    print(
        f"{'':17}lab's own noise p50 / p99 / max (µs), relay "
        f"{'real-time' if row.relay_realtime else 'ordinary'}: read late {us('read_late')}, "
        f"sent late: copies {us('sent_late')}, pongs {us('sent_late_answers')}, pings "
        f"{us('sent_late_up')}; leader's T3 to the wire: sync {us('leader_sync')}, "
        f"pong {us('leader_pong')}; followers' T1 to the wire {us('follower_ping')}"
    )
    low, high, _ = row.noise.get("follower_ping_floor", [math.nan] * 3)
    print(
        f"{'':17}(a follower's T1 to the wire, 1st percentile: {low * 1e6:.0f} to "
        f"{high * 1e6:.0f} µs over the followers)"
    )
    sent_p50 = row.noise.get("sent_late", [math.nan])[0]
    demand = row.followers * row.follower_cpu
    if not sent_p50 <= OVERLOADED:
        print(
            f"{'':17}THE LAB WAS OVERLOADED: its relay sent datagrams {sent_p50 * 1e3:.1f} ms "
            f"late at the median (N followers ask {demand:.1f} cores of {os.cpu_count()}): "
            "these figures measure this machine, not the protocol"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 2, 8; before #33: 2; 30 s.")
    parser.add_argument("--followers", help="Comma-separated N (default 2,16,64).")
    parser.add_argument("--before", help="N for the rows before #33 (default 2,16).")
    parser.add_argument("--seconds", type=float, help="Seconds of ticks (default 60).")
    parser.add_argument("--stagger", type=float, default=0.4, help="Seconds between starts.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only",
        choices=["simulated", "lab"],
        help="Only the protocol on fake clocks, or only the process lab (default: both).",
    )
    parser.add_argument("--worker", choices=["relay", "leader", "follower"], help=argparse.SUPPRESS)
    for name in ("--out", "--peer", "--mode"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--skew", "--drift", "--epoch"):
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
    if args.only != "lab":
        print(
            "\nthe protocol alone: each follower the real ClockFollower on a fake clock, every "
            "stamp exact, the same links drawn independently; '+lab noise' adds to every "
            f"datagram an exponential delay of mean {LAB_NOISE * 1e6:g} µs (what the process lab "
            "measures of its own, below)"
        )
        print("            N   spread p50 /    p99 /    max (ms)   per follower mean / max (pkt/s)")
        for n in followers:
            report_simulated(n, seconds, args.seed)
    if args.only != "simulated":
        print(
            "\nthe process lab: a leader, a relay and N follower processes on this machine "
            "(followers before #33 first)"
        )
        print(
            "            N   spread p50 /    p99 /    max (ms)   leader in / out (pkt/s)   "
            "per follower mean / max (pkt/s)   leader CPU   tick send late mean / max   late  lost"
        )
        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"oscsync-room-{os.getpid()}"
        work.mkdir(parents=True, exist_ok=True)
        runs = [(n, "legacy") for n in before] + [(n, "room") for n in followers]
        try:
            for n, mode in runs:
                report(run(n, mode, seconds, args.stagger, args.seed, work))
                sys.stdout.flush()
        finally:
            if not os.environ.get("ROOM_DEBUG"):  # the workers' JSON files, kept to debug
                shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"load average at the end {load_after:.2f}")
    print("goal at 64: spread p99 ≤ 0.5 ms, ≤ 5 packets/s per follower, leader CPU ≤ 10 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
