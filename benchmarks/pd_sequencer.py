"""Figures for pd/example4_sequencer.pd (issue #19): [vline~] onsets against example 3's [pipelist].

Runs headless Pure Data at 48 kHz (``-nosound``: DSP paced by the system clock) twice in the same
run, each time recording the patch's output (``[s~ oscsync-out]``) with ``[writesf~]``, while
``oscsync sequence send`` sends 4 bars of kick/snare/hat (a sound every 250 ms) with
``--offset 0.1``:

  A. ``benchmarks/pd/pipelist_baseline.pd``: example 3's way, ``[pipelist]`` then ``[tabplay~]``
  B. ``pd/example4_sequencer.pd``: ``[unpackOSC]``'s delay into ``[vline~]`` → ``[tabread4~]``

It prints, for the onsets found in each recording, the error of every interval against the exact
250 ms (ms: standard deviation, worst) and the share of onsets on a DSP block boundary
(frame % 64 == 0; the recording starts on one). ``[tabplay~]`` can only start on a boundary;
``[vline~]`` starts on the sample.

    .venv/bin/python benchmarks/pd_sequencer.py        # ~20 s; needs pd, pd-osc, pd-mrpeach-net
"""

from __future__ import annotations

import array
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RATE = 48_000
INTERVAL = RATE // 4  # a sound every 2 steps of 16ths at 120 bpm: 250 ms
BLOCK = 64
PATCHES = {
    "A [pipelist] + [tabplay~]": REPO / "benchmarks" / "pd" / "pipelist_baseline.pd",
    "B example4: [vline~]": REPO / "pd" / "example4_sequencer.pd",
}
PATTERN = "kick:  x... x... x... x...\nsnare: .... o... .... o...\nhat:   ..o. ..o. ..o. ..o.\n"
RECORDER = """\
#N canvas 0 0 400 300 12;
#X obj 20 20 r~ oscsync-out;
#X obj 20 80 writesf~ 1;
#X obj 200 20 r rec-open;
#X msg 200 50 open -bytes 2 \\$1 \\, start;
#X obj 300 20 t b a;
#X obj 300 80 delay {stop_ms};
#X msg 300 110 stop;
#X connect 0 0 1 0;
#X connect 2 0 4 0;
#X connect 4 1 3 0;
#X connect 4 0 5 0;
#X connect 5 0 6 0;
#X connect 3 0 1 0;
#X connect 6 0 1 0;
"""
"""Records from ``rec-open symbol FILE`` until ``stop_ms`` later, then closes the file."""
PD_PATHS = ("/usr/lib/pd/extra/osc", "/usr/lib/pd/extra/mrpeach/net")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def onsets(path: Path, threshold: int = 800, quiet: int = RATE // 40) -> list[int]:
    with wave.open(str(path)) as wav:
        samples = array.array("h", wav.readframes(wav.getnframes()))
    found: list[int] = []
    last = -quiet
    for index, value in enumerate(samples):
        if abs(value) >= threshold:
            if index - last >= quiet:
                found.append(index)
            last = index
    return found


def record(patch: Path, workdir: Path, bars: int) -> list[int]:
    recorder = workdir / "recorder.pd"
    seconds = bars * 2 + 2.5  # 2 s a bar at 120 bpm, the start-up, the last sound's tail
    recorder.write_text(RECORDER.format(stop_ms=round(seconds * 1000)))
    out = workdir / f"{patch.stem}.wav"
    beat = workdir / "beat.txt"
    beat.write_text(PATTERN)
    port = free_port()
    paths = [arg for p in PD_PATHS for arg in ("-path", p)]
    pd = subprocess.Popen(
        ["pd", "-nogui", "-nosound", "-nomidi", "-stderr", "-noprefs", "-r", str(RATE), *paths,
         "-open", str(patch), "-open", str(recorder),
         "-send", f"oscsync-listen {port}", "-send", f"rec-open symbol {out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # PD opens the patches and binds the port
        subprocess.run(
            [sys.executable, "-m", "oscsync", "sequence", "send", str(beat),
             "--peer", f"127.0.0.1:{port}", "--offset", "0.1", "--bars", str(bars)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        time.sleep(1.5)  # until the recorder has stopped and closed the file
    finally:
        pd.terminate()  # SIGTERM: writesf~ has written what it got so far
        pd.wait(5)
    return onsets(out)


def main() -> None:
    bars = 4
    print(f"machine load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'run':<28} {'onsets':>6} {'std ms':>8} {'max |err| ms':>13} {'on a block edge':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, patch in PATCHES.items():
            found = record(patch, Path(tmp), bars)
            errors = [(b - a - INTERVAL) / (RATE / 1000) for a, b in itertools.pairwise(found)]
            edge = sum(1 for frame in found if frame % BLOCK == 0) / max(len(found), 1)
            print(
                f"{label:<28} {len(found):>6} {statistics.pstdev(errors):>8.3f} "
                f"{max(map(abs, errors)):>13.3f} {edge:>15.0%}"
            )
    print(f"expected onsets: {bars * 8}")


if __name__ == "__main__":
    main()
