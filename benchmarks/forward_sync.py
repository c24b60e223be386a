"""Figures for the forward-sync lab (issue 6): P2 jitter, P3 clock sync, P7 multicast fan-out.

All in one process on loopback, with the lab's own pieces (:mod:`oscsync.apps.lab`): a leader on
an exact grid, a netem relay per follower, followers that are ordinary metronome listeners.

P2  ``--delay 20ms --jitter 15ms`` (uniform): inter-onset std at offset 0 (plain ticks, played
    on arrival) vs offset 50 ms. Two kinds of follower player: ``wav`` places each sound itself
    at the timetag (what sounddevice and the wav renderer hear), ``none`` acts when the scheduler
    dispatches the tick (its dispatch time is measured). Goal: ≥ 50× less, ≤ 0.1 ms with sync.
P3  two followers, B's clock 250 ms ahead with ``--sync``, zero-impairment relays: B's clock
    offset estimate error (goal ≤ 0.2 ms) and the onset difference A−B, p99 (goal ≤ 0.5 ms).
P7  one leader → 32 followers on a multicast group on loopback (``--iface 127.0.0.1``), offset
    20 ms: onset spread across followers per tick, p99 (goal ≤ 1 ms); arrival spread and late
    ticks for context. Followers use the wav-style player (onset = timetag when in time) and a
    scheduler-dispatched one.

    .venv/bin/python benchmarks/forward_sync.py              # ~40 s
    .venv/bin/python benchmarks/forward_sync.py --ticks 24   # quicker
    .venv/bin/python benchmarks/forward_sync.py --only P7
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import statistics
import sys
from fractions import Fraction

from oscsync.apps import lab, labrecords, scoring
from oscsync.apps.endpoints import open_endpoint
from oscsync.apps.metronome import MetronomeListener, TickRecord
from oscsync.apps.netemlink import ImpairmentSpec
from oscsync.audio import NonePlayer, Player
from oscsync.clock import Clock, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.scheduler import Scheduler


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.3f} ms"


def _std_of_intervals(by_k: dict[int, float], first: int) -> float:
    ks = sorted(k for k in by_k if k >= first)
    intervals = [by_k[b] - by_k[a] for a, b in itertools.pairwise(ks) if b == a + 1]
    return statistics.stdev(intervals) if len(intervals) > 1 else math.nan


def _none_player(index: int, clock: Clock) -> Player:
    player = NonePlayer()
    player.start()
    return player


def p2(clock: Clock, ticks: int) -> None:
    print("P2  jitter under --delay 20ms --jitter 15ms (uniform), 240 bpm, "
          f"{ticks} ticks (first bar not scored)")  # fmt: skip
    link = ImpairmentSpec(delay=0.020, jitter=0.015)
    follower = (labrecords.FollowerSpec("A"),)
    figures: dict[tuple[str, str], float] = {}
    for player_name, make in (("wav", None), ("none", _none_player)):
        for label, offset, plain in (("offset 0", 0.0, True), ("offset 50 ms", 0.05, False)):
            spec = labrecords.SessionSpec(
                offset=offset, link=link, followers=follower, ticks=ticks, plain=plain, seed=7
            )
            result = lab.run_session(spec, clock, make_player=make)
            f = result.followers[0]
            times = f.onsets_ref if player_name == "wav" else f.handled_ref
            std = _std_of_intervals(times, spec.count_in)
            late = sum(f.late.get(k, False) for k in times if k >= spec.count_in)
            figures[(player_name, label)] = std
            print(f"    player {player_name:<4} {label:<13} inter-onset std {_ms(std)}   "
                  f"late {late}  received {len(times)}/{ticks}")  # fmt: skip
        before, after = figures[(player_name, "offset 0")], figures[(player_name, "offset 50 ms")]
        ratio = before / after if after > 0 else math.inf
        verdict = "meets" if ratio >= 50 and after <= 1e-4 else "MISSES"
        print(f"    player {player_name:<4} reduction {ratio:,.0f}×  "
              f"({verdict} goal ≥ 50× and ≤ 0.1 ms)")  # fmt: skip


def p3(clock: Clock, ticks: int) -> None:
    print(f"P3  two followers, B 250 ms ahead with --sync, no impairment, {ticks} ticks, "
          "offset 20 ms")  # fmt: skip
    followers = (labrecords.FollowerSpec("A"), labrecords.FollowerSpec("B", skew=0.25, sync=True))
    errors, spreads, handled_spreads = [], [], []
    for run in range(3):
        spec = labrecords.SessionSpec(
            offset=0.02, link=ImpairmentSpec(), followers=followers, ticks=ticks, seed=run
        )
        result = lab.run_session(spec, clock)
        b = result.followers[1]
        assert b.sync_offset is not None, "B never synced"
        # B's clock is exactly 250 ms ahead of the reference, so the leader is 250 ms behind B.
        errors.append(abs(b.sync_offset + 0.25))
        spreads += scoring.spread(result)
    print(f"    clock offset estimate error: runs {', '.join(_ms(e) for e in errors)}; "
          f"worst {_ms(max(errors))} ({'meets' if max(errors) <= 2e-4 else 'MISSES'} ≤ 0.2 ms)")  # fmt: skip
    p99 = scoring.p99(spreads)
    print(f"    onset difference A−B: p50 {_ms(statistics.median(spreads))}, p99 {_ms(p99)}, "
          f"max {_ms(max(spreads))} over {len(spreads)} ticks "
          f"({'meets' if p99 <= 5e-4 else 'MISSES'} ≤ 0.5 ms)")  # fmt: skip
    del handled_spreads


def p7(clock: Clock, ticks: int, followers: int = 32) -> None:
    print(f"P7  one leader → {followers} followers, multicast 239.255.6.7 on loopback, "
          f"{ticks} ticks at 240 bpm, offset 20 ms")  # fmt: skip
    period = 0.25
    for player_name in ("wav", "none"):
        records: list[list[TickRecord]] = [[] for _ in range(followers)]
        opened: list[object] = []
        group = HostPort("239.255.6.7", _free_port())
        try:
            for index in range(followers):
                endpoint = open_endpoint(group, clock=clock, multicast_interface="127.0.0.1")
                scheduler = Scheduler(clock)
                player: Player = lab.OnsetRecorder() if player_name == "wav" else NonePlayer()
                listener = MetronomeListener(
                    player, scheduler, clock, on_tick=records[index].append
                )
                scheduler.start()
                endpoint.start(listener.on_message)
                opened += [endpoint, scheduler]
            leader = open_endpoint(peers=[group], clock=clock, multicast_interface="127.0.0.1")
            opened.append(leader)
            sender = Scheduler(clock, spin=0.0)
            opened.append(sender)
            t0 = tt.add_seconds(clock.now_timetag(), 0.2)
            for k in range(ticks):
                grid = tt.add_seconds(t0, Fraction(period) * k)
                message = codec.encode_message("/tick", [k % 4], "i")
                data = codec.encode_bundle(tt.add_seconds(grid, Fraction(0.02)), [message])
                sender.submit(grid, _Send(leader, data))
            sender.start()
            end = tt.to_unix(t0) + ticks * period + 0.2
            clock.sleep(clock.wall_to_monotonic(end) - clock.monotonic())
        finally:
            for thing in reversed(opened):
                thing.close()  # type: ignore[attr-defined]
        t0_unix = tt.to_unix(t0)
        by_tick: dict[int, list[TickRecord]] = {}
        for follower_records in records:
            for record in follower_records:
                k = round((record.arrival - t0_unix) / period)
                by_tick.setdefault(k, []).append(record)
        onset_spread, arrival_spread, handled_spread = [], [], []
        for group_records in by_tick.values():
            if len(group_records) < followers:
                continue
            onset_spread.append(_spread(r.onset for r in group_records))
            arrival_spread.append(_spread(r.arrival for r in group_records))
            handled_spread.append(_spread(r.handled for r in group_records))
        late = sum(r.late for rs in records for r in rs)
        heard = sum(len(rs) for rs in records)
        measured = onset_spread if player_name == "wav" else handled_spread
        p99 = scoring.p99(measured)
        what = "onset (= timetag)" if player_name == "wav" else "dispatch"
        print(f"    player {player_name:<4} {what} spread p99 {_ms(p99)} max {_ms(max(measured))}; "
              f"arrival spread p99 {_ms(scoring.p99(arrival_spread))}; late {late}/{heard}; "
              f"complete ticks {len(measured)}/{ticks} "
              f"({'meets' if p99 <= 1e-3 else 'MISSES'} ≤ 1 ms)")  # fmt: skip


class _Send:
    def __init__(self, endpoint: Endpoint, data: bytes) -> None:
        self.endpoint, self.data = endpoint, data

    def __call__(self, _dispatch: object) -> None:
        self.endpoint.send_bytes(self.data)


def _spread(values: object) -> float:
    items = list(values)  # type: ignore[call-overload]
    return float(max(items) - min(items))


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--only", choices=["P2", "P3", "P7"])
    args = parser.parse_args()
    print(f"forward-sync benchmarks on {platform.node()} ({platform.processor() or 'cpu'}, "
          f"python {sys.version.split()[0]})")  # fmt: skip
    clock = SystemClock()
    if args.only in (None, "P2"):
        p2(clock, args.ticks)
    if args.only in (None, "P3"):
        p3(clock, args.ticks)
    if args.only in (None, "P7"):
        p7(clock, args.ticks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
