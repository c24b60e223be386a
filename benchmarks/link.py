"""Phase error between oscsync's ticks, as played, and a Link session's beat grid (issue 32).

One run, on loopback, inside a network namespace with only ``lo`` (Link finds peers by
multicast: run it through scripts/isolated, which makes one):

1. tests/linkpeer.py, another musician's Link app on another binding (aalink), starts a session
   at ``--bpm``, a bar before oscsync joins (so that oscsync joins the peer's session: see
   tests/test_link_session.py);
2. ``metronome listen --audio wav:FILE`` renders every tick at its timetag (offline: the WAV
   player places each sound at its frame);
3. ``metronome send --link --offset OFFSET`` sends ``--ticks`` ticks on the session's beats;
4. the WAV's onsets are found, put on the wall clock (the renderer's ``frame 0`` time), and
   compared with the peer's beat grid (its beat at a bracketed ``time.time()``) plus OFFSET.

Three rows, p50/p99/max of |error| (and the signed mean):

  timetag − peer's beat     oscsync's Link clock map alone: what ``--link`` writes in the bundles
  onset − timetag           the player alone (the baseline: oscsync without Link, same run)
  onset − peer's beat       the whole chain: the phase error a listener hears (goal ≤ 1 ms p99,
                            against Link's ~3 ms test-plan tolerance between peers)

    scripts/isolated .venv/bin/python benchmarks/link.py
    scripts/isolated .venv/bin/python benchmarks/link.py --ticks 64 --bpm 140
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from linkpeer import LinkPeer, interface_names, multicast_route_on_lo
from metronome import oscsync, start_listener
from oscsync import audio

RATE = 48_000


def figures(name: str, errors: list[float]) -> str:
    magnitudes = sorted(abs(e) * 1e6 for e in errors)
    p99 = magnitudes[min(len(magnitudes) - 1, round(0.99 * (len(magnitudes) - 1)))]
    return (
        f"  {name:<24} p50 {magnitudes[len(magnitudes) // 2]:7.1f} µs  p99 {p99:7.1f} µs  "
        f"max {magnitudes[-1]:7.1f} µs  (mean {statistics.fmean(errors) * 1e6:+7.1f} µs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=32)
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--offset", type=float, default=0.1)
    args = parser.parse_args()
    if interface_names() != ["lo"]:
        print(
            "benchmarks/link.py: run it through scripts/isolated (Link multicasts; here are real interfaces)"
        )
        return 2
    if not multicast_route_on_lo():
        print("benchmarks/link.py: no 224.0.0.0/4 route on lo (scripts/isolated adds it)")
        return 2
    # link: oscsync's Link extra (metronome send --link); aalink: the other peer's binding.
    absent = [name for name in ("link", "aalink") if importlib.util.find_spec(name) is None]
    if absent:
        print(f"benchmarks/link.py: {', '.join(absent)} not installed (pip install -e '.[test]')")
        return 2
    print(
        f"Link phase error on loopback: {args.ticks} ticks at {args.bpm:g} bpm, offset "
        f"{args.offset * 1000:g} ms, WAV at {RATE} Hz; Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    peer = LinkPeer(args.bpm)
    try:
        while peer.status()["beat"] < 4.0:  # its session a bar old: oscsync joins it
            pass
        with tempfile.TemporaryDirectory() as tmp:
            wav, log = Path(tmp) / "ticks.wav", Path(tmp) / "ticks.jsonl"
            duration = args.ticks * 60 / args.bpm + 20
            listener, where, frame0 = start_listener(args.ticks, f"wav:{wav}", log, duration)
            if where is None or frame0 is None:
                listener.kill()
                raise SystemExit("the listener did not start")
            sent = subprocess.run(
                oscsync(
                    "metronome", "send", "--link", "--peer", where, "--count", str(args.ticks),
                    "--offset", str(args.offset),
                ),
                capture_output=True, text=True, timeout=duration + 10,
            )  # fmt: skip
            if sent.returncode != 0:
                listener.kill()
                listener.communicate()
                print(f"metronome send --link failed ({sent.returncode}): {sent.stderr.strip()}")
                return 1
            joined = [line for line in sent.stderr.splitlines() if line.startswith("link: ")]
            print(f"  oscsync's {joined[0] if joined else 'link: (no session line)'}")
            listener.communicate(timeout=30)
            status = peer.status()
            ticks = [json.loads(line) for line in log.read_text().splitlines()]
            onsets = [frame0 + f / RATE for f in audio.find_onsets(audio.read_wav(wav).samples)]
    finally:
        peer.close()
    if len(onsets) != len(ticks):
        print(f"the WAV has {len(onsets)} onsets for {len(ticks)} ticks: no per-tick figures")
        return 1

    def beat_time(when: float) -> float:
        """The peer's nearest beat to ``when`` (wall clock), plus the offset."""
        beat = status["beat"] + (when - args.offset - status["unix"]) * status["tempo"] / 60
        return status["unix"] + (round(beat) - status["beat"]) * 60 / status["tempo"] + args.offset

    stamps = [float(t["timetag"]) for t in ticks]
    print(
        f"  session tempo {status['tempo']:.3f} bpm; {len(ticks)} ticks, {sum(t['late'] for t in ticks)} late"
    )
    print(figures("timetag − peer's beat", [s - beat_time(s) for s in stamps]))
    print(figures("onset − timetag (base)", [o - s for o, s in zip(onsets, stamps)]))
    print(figures("onset − peer's beat", [o - beat_time(o) for o in onsets]))
    print(
        "  (onsets: WAV frames, 1 frame = 20.8 µs; Link's test plan allows ~3000 µs between peers)"
    )
    print("goal (issue 32): onset − peer's beat p99 ≤ 1000 µs on loopback")
    return 0


if __name__ == "__main__":
    sys.exit(main())
