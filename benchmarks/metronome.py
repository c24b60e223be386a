"""Figures for the metronome note: WAV onset error against timetags, and inter-onset jitter.

Runs the real CLI, as a user would, on loopback: ``oscsync metronome listen --log ...`` in one
process and ``oscsync metronome send --count N`` in another, three times:

  A. ``--offset 0``    plain ticks (workshop example 2), ``--audio wav:FILE``
  B. ``--offset 0.05`` bundles 50 ms ahead (example 3), ``--audio wav:FILE``
  C. ``--offset 0.05`` with ``--audio none``: a player that acts when the scheduler dispatches

For each run it prints, in µs, the standard deviation and worst deviation from the beat period of
the intervals between

* ``onset``   the time the listener handed the player (the timetag; arrival for plain ticks),
* ``handled`` the time the listener actually ran (receive thread for A/B, scheduler for C),
* ``wav``     the onsets found in the rendered WAV file (frames / 48 kHz; A and B only),

and, for the WAV runs, the onset error in frames: the frame each sound was found at minus
``round((timetag − frame0) · 48000)`` (plain ticks: the logged onset instead of the timetag).

    .venv/bin/python benchmarks/metronome.py            # 3 × 32 ticks at 240 bpm, ~30 s
    .venv/bin/python benchmarks/metronome.py --ticks 16 # quicker

Everything stops by itself; ports are picked by the kernel.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oscsync import audio

RATE = 48_000


def oscsync(*args: str) -> list[str]:
    return [sys.executable, "-m", "oscsync", *args]


@dataclass
class Session:
    label: str
    ticks: list[dict[str, object]]
    frame0: float | None
    wav_onsets: list[int] | None


def start_listener(
    ticks: int, audio_arg: str, log: Path, duration: float
) -> tuple[subprocess.Popen[str], str | None, float | None]:
    """``metronome listen`` on a port of the kernel's for ``ticks`` ticks (``--audio
    audio_arg``, ``--log log``), its stderr read up to where it listens: the process, that
    HOST:PORT and the WAV's frame 0 on the wall clock (None for what it did not say)."""
    listener = subprocess.Popen(
        oscsync(
            "metronome", "listen", "--listen", "127.0.0.1:0", "--count", str(ticks),
            "--audio", audio_arg, "--log", str(log), "--duration", str(duration),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert listener.stderr is not None
    frame0 = None
    for line in listener.stderr:
        if "frame 0 =" in line:
            frame0 = float(line.split("frame 0 = ")[1].split()[0])
        if line.startswith("listening on"):
            return listener, line.split()[-1], frame0
    return listener, None, frame0


def run_session(
    label: str, offset: float, audio_kind: str, ticks: int, bpm: float, workdir: Path
) -> Session:
    log = workdir / f"{label}.jsonl"
    wav = workdir / f"{label}.wav"
    audio_arg = f"wav:{wav}" if audio_kind == "wav" else audio_kind
    listener, where, frame0 = start_listener(ticks, audio_arg, log, ticks * 60 / bpm + 20)
    if where is None:
        listener.kill()
        raise SystemExit(f"{label}: the listener did not start")
    subprocess.run(
        oscsync(
            "metronome", "send", "--peer", where, "--count", str(ticks), "--bpm", str(bpm),
            "--offset", str(offset),
        ),
        check=True,
        capture_output=True,
        timeout=ticks * 60 / bpm + 30,
    )  # fmt: skip
    listener.communicate(timeout=30)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    onsets = audio.find_onsets(audio.read_wav(wav).samples) if audio_kind == "wav" else None
    return Session(label, records, frame0, onsets)


def interval_figures(times: list[float], period: float) -> str:
    intervals = [b - a for a, b in itertools.pairwise(times)]
    if len(intervals) < 2:
        return "n/a"
    std = statistics.stdev(intervals) * 1e6
    deviations = sorted(abs(i - period) * 1e6 for i in intervals)
    median = deviations[len(deviations) // 2]
    return f"std {std:8.1f} µs  |dev| median {median:8.1f} µs  worst {deviations[-1]:8.1f} µs"


def report(session: Session, period: float) -> None:
    ticks = session.ticks
    late = sum(bool(t["late"]) for t in ticks)
    print(f"\n{session.label}: {len(ticks)} ticks logged, {late} late")
    onsets = [float(t["onset"]) for t in ticks]  # type: ignore[arg-type]
    handled = [float(t["handled"]) for t in ticks]  # type: ignore[arg-type]
    print(f"  inter-onset  onset    {interval_figures(onsets, period)}")
    print(f"  inter-onset  handled  {interval_figures(handled, period)}")
    timed = [t for t in ticks if t["timetag"] is not None]
    if timed:
        after = sorted((float(t["handled"]) - float(t["timetag"])) * 1e6 for t in timed)  # type: ignore[arg-type]
        print(
            f"  handled − timetag: median {after[len(after) // 2]:.1f} µs, "
            f"max {after[-1]:.1f} µs (negative: handed over early, for a sample-placing player)"
        )
    if session.wav_onsets is None or session.frame0 is None:
        return
    frames = session.wav_onsets
    print(f"  inter-onset  wav      {interval_figures([f / RATE for f in frames], period)}")
    if len(frames) != len(ticks):
        print(f"  WAV has {len(frames)} onsets for {len(ticks)} ticks: no per-tick error")
        return
    errors = []
    for frame, tick in zip(frames, ticks):
        target = tick["timetag"] if tick["timetag"] is not None else tick["onset"]
        errors.append(frame - round((float(target) - session.frame0) * RATE))  # type: ignore[arg-type]
    against = "timetag" if ticks[0]["timetag"] is not None else "logged onset"
    print(
        f"  WAV onset error vs {against}: min {min(errors)} max {max(errors)} frames "
        f"(|error| <= 1 frame for {sum(abs(e) <= 1 for e in errors)}/{len(errors)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=32)
    parser.add_argument("--bpm", type=float, default=240.0)
    args = parser.parse_args()
    period = 60 / args.bpm
    print(
        f"metronome on loopback: {args.ticks} ticks at {args.bpm:g} bpm (period "
        f"{period * 1000:g} ms); Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        runs = [
            ("A offset 0, wav", 0.0, "wav"),
            ("B offset 0.05, wav", 0.05, "wav"),
            ("C offset 0.05, none (scheduler dispatch)", 0.05, "none"),
        ]
        for label, offset, kind in runs:
            session = run_session(label[0], offset, kind, args.ticks, args.bpm, workdir)
            session.label = label
            report(session, period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
