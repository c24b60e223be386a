"""How long ``--audio wav:FILE`` takes to finish when the run stops (issue #20 item 11).

A tick flood (``--ticks-per-second``, default 100: every sound overlaps the next three) over
``--seconds`` of session time, on a fake clock so the session takes only as long as the work.
Two renderers in one run:

  streamed      the renderer as shipped: a writer thread mixes and appends as the run goes,
                close() writes the last ~1.5 s
  at exit       the same renderer told never to write before close() (the behaviour before the
                fix: the whole session rendered at exit, 17 s after a flood in the issue's probe)

It prints, for each, the seconds close() took (what the user waits for after Ctrl-C), the time
for the whole run, and the bytes on disk *before* close (what a killed run leaves).

    .venv/bin/python benchmarks/wav.py                  # 300 s of session, 100 ticks/s
    .venv/bin/python benchmarks/wav.py --seconds 60
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from oscsync.audio import render, sounds
from oscsync.clock import FakeClock


def run(path: Path, seconds: float, rate_hz: float, *, streamed: bool) -> tuple[float, float, int]:
    clock = FakeClock(start=1_700_000_000.0, monotonic_start=1000.0)
    player = render.WavRenderer(path, clock)
    player.load(sounds.default_path("tick"))
    if not streamed:
        saved_flush_every, render.FLUSH_EVERY_S = render.FLUSH_EVERY_S, float("inf")
    began = time.perf_counter()
    try:
        player.start()
        step = 1.0 / rate_hz
        for _ in range(round(seconds * rate_hz)):
            player.play_at(clock.now() + 0.05)
            clock.advance(step)
        if streamed:  # the writer keeps up in a real run, where ticks take real time to come
            player.wait_written(player.frame_of(clock.now() - 2.0), timeout=600)
        on_disk = path.stat().st_size
        closing = time.perf_counter()
        player.close()
        done = time.perf_counter()
    finally:
        if not streamed:
            render.FLUSH_EVERY_S = saved_flush_every
    return done - closing, done - began, on_disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--ticks-per-second", type=float, default=100.0)
    args = parser.parse_args()
    print(
        f"# {platform.platform()}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}; {args.seconds:g} s of session, "
        f"{args.ticks_per_second:g} ticks/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, streamed in (("streamed", True), ("at exit", False)):
            close_s, total_s, on_disk = run(
                Path(tmp) / f"{name}.wav", args.seconds, args.ticks_per_second, streamed=streamed
            )
            print(
                f"{name:9s} close() {close_s:6.2f} s   whole run {total_s:6.2f} s   "
                f"on disk before close {on_disk / 1e6:6.1f} MB"
            )


if __name__ == "__main__":
    main()
