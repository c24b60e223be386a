"""Two `sequence listen`ers through jittery links, one with a skewed clock and --sync (issue #19).

The proof the issue asks for: two listeners, one with ``--clock-skew`` and ``--sync``, play the
same steps together, with a spread as good as the metronome's (``benchmarks/clock_sync.py``).
Everything runs as real processes on loopback: one ``sequence send`` (forward offset 100 ms) to
two ``oscsync netem`` relays (20 ms ± 15 ms uniform each, seeded), each in front of one listener
(``--audio wav:``: each sound is placed at its timetag, as a sample-accurate sound card
plays it, like the metronome benchmark's players). B's clock reads SKEW seconds ahead (no
drift: a drifting clock could not be mapped back onto A's from outside the processes), so B's
onsets minus SKEW are on A's clock. Steps are matched by voice and onset; the spread is
|onset_B − SKEW − onset_A| over the steps after the first SETTLE seconds.

    .venv/bin/python benchmarks/sequence_sync.py [--bars 12]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKEW = 0.15
SETTLE = 10.0
PATTERN = "hat:  oooo oooo oooo oooo\nkick: x... x... x... x...\n"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oscsync(*args: str) -> list[str]:
    return [sys.executable, "-m", "oscsync", *args]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=12, help="Bars at 120 bpm (2 s each).")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "beat.txt").write_text(PATTERN)
        events_per_bar = 16 + 4
        procs: list[subprocess.Popen[bytes]] = []
        relays: list[str] = []
        logs: list[Path] = []
        try:
            for name, extra in (("A", []), ("B", ["--clock-skew", str(SKEW)])):
                port, relay = free_port(), free_port()
                log = folder / f"{name}.jsonl"
                sync = ["--sync"] if extra else []
                procs.append(
                    subprocess.Popen(
                        oscsync(
                            *extra,
                            "sequence",
                            "listen",
                            "--listen",
                            f"127.0.0.1:{port}",
                            "--audio",
                            f"wav:{folder / name}.wav",
                            "--log",
                            str(log),
                            "--duration",
                            str(2 * args.bars + 15),
                            *sync,
                        ),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                procs.append(
                    subprocess.Popen(
                        oscsync(
                            "netem",
                            "--listen",
                            f"127.0.0.1:{relay}",
                            "--forward",
                            f"127.0.0.1:{port}",
                            "--delay",
                            "20ms",
                            "--jitter",
                            "15ms",
                            "--seed",
                            "7" if extra else "3",
                        ),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                relays += ["--peer", f"127.0.0.1:{relay}"]
                logs.append(log)
            time.sleep(2.0)  # a benchmark, not a test: let both listeners and relays start
            subprocess.run(
                oscsync(
                    "sequence",
                    "send",
                    str(folder / "beat.txt"),
                    *relays,
                    "--bars",
                    str(args.bars),
                    "--offset",
                    "0.1",
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=2 * args.bars + 30,
            )
            time.sleep(1.0)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
        a, b = ([json.loads(line) for line in log.read_text().splitlines()] for log in logs)
    first = min(float(e["onset"]) for e in a)
    spreads: list[float] = []
    unmatched = 0
    for event in b:
        onset = float(event["onset"]) - SKEW
        twins = [
            float(x["onset"])
            for x in a
            if x["voice"] == event["voice"] and abs(float(x["onset"]) - onset) < 0.06
        ]
        if not twins:
            unmatched += 1
            continue
        if onset - first >= SETTLE:
            spreads.append(abs(onset - twins[0]) * 1e3)
    late = sum(bool(e["late"]) for e in a + b)
    print(
        f"sent {args.bars * events_per_bar} events; A logged {len(a)}, B logged {len(b)} "
        f"({unmatched} of B's without a twin in A), late {late}"
    )
    print(
        f"A–B spread after {SETTLE:g} s over {len(spreads)} events: "
        f"p50 {percentile(spreads, 0.5):.3f} ms, p99 {percentile(spreads, 0.99):.3f} ms, "
        f"max {max(spreads):.3f} ms   (the metronome's through the same link: "
        f"benchmarks/clock_sync.py)"
    )


if __name__ == "__main__":
    main()
