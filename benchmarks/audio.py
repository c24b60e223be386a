"""Figures for the audio note (issue #14): where the sounddevice player's onsets land, measured
through a real audio server, with and without the delay-locked loop, in one run.

Starts a private ``jackd -d dummy`` (48 kHz, 256-frame periods, realtime if allowed), and for
each variant plays ``--ticks`` ticks 250 ms apart (240 bpm), each asked for 100 ms ahead as a
timetagged metronome does, while a JACK client records ``system:playback_1`` with JACK's frame
times. An onset detector that knows nothing of the player finds the ticks. Variants:

  dll       the player as shipped: frame clock mapped to time by the DLL (``placement="dll"``)
  callback  the placement before issue #14: each block from its callback's own clock reading
  playsound the workshop's player, when GStreamer's Python bindings are there (else: why not)

Per variant it prints:

* gaps: inter-onset gap minus 12,000 frames: share within ±1 frame, median and worst |error|;
* onset − timetag: when the sound left the device (its JACK frame time plus the playback latency
  the server reports for ``system:playback_1``, through the driver's frame clock stretch by
  stretch, ``jackharness.FrameClock``; JACK's own mapping slews for a second across a stall of
  the driver) minus the tick's timetag, in ms: median, p95 of |error|, worst;
* xruns PortAudio flagged, ticks the player started late.

A background thread keeps the interpreter busy part of the time (``--gil-load``, default 0.1 of
each millisecond), as a listener's receive and scheduler threads do: that is what makes the
callbacks jitter in a real ``metronome listen``.

    .venv/bin/python benchmarks/audio.py              # 120 ticks per variant, ~75 s
    .venv/bin/python benchmarks/audio.py --ticks 40   # quicker

Goal (issue #14): dll ≥ 98 % of gaps within ±1 frame; |onset − timetag| ≤ 0.25 ms.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from jackharness import JackUnavailable, Recorder, jack_server
from oscsync import audio
from oscsync.audio import sounds
from oscsync.clock import SystemClock

RATE = 48_000
SPACING_S = 0.25
AHEAD_S = 0.1
LOCK_S = 1.5


@dataclass
class Result:
    name: str
    gaps: list[int]
    errors_ms: list[float]
    xruns: int | None
    relocks: int
    late: int
    note: str = ""


def busy_thread(stop: threading.Event, duty: float) -> threading.Thread:
    """Holds the GIL ``duty`` of every millisecond (pure-Python work), until ``stop``."""

    def run() -> None:
        while not stop.is_set():
            end = time.perf_counter() + duty * 1e-3
            while time.perf_counter() < end:
                pass
            time.sleep((1 - duty) * 1e-3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def play_ticks(player: audio.Player, clock: SystemClock, ticks: int) -> list[float]:
    """Ask for a tick every 250 ms, each 100 ms ahead; return the timetags (wall seconds)."""
    first = clock.now() + LOCK_S + AHEAD_S
    due: list[float] = []
    for k in range(ticks):
        t = first + k * SPACING_S
        clock.sleep(t - AHEAD_S - clock.now())
        player.play_at(t)
        due.append(t)
    clock.sleep(due[-1] + 0.3 - clock.now())
    return due


def measure(server: object, name: str, player: audio.Player, ticks: int, duty: float) -> Result:
    clock = SystemClock()
    recorder = Recorder(server, seconds=ticks * SPACING_S + LOCK_S + 3)  # type: ignore[arg-type]
    stop = threading.Event()
    busy = busy_thread(stop, duty) if duty > 0 else None
    follower = None
    try:
        player.load(sounds.default_path("tick"))
        player.start()
        if isinstance(player, audio.SoundDevicePlayer):
            recorder.connect_player()
        else:  # a JACK client per sound: connect each as it appears
            follower = recorder.follow_playback(stop)
        due = play_ticks(player, clock, ticks)
    finally:
        stop.set()
        if busy is not None:
            busy.join()
        if follower is not None:
            follower.join()
        player.close()
        recorder.close()
    onsets = audio.find_onsets(recorder.samples_int16())
    left = [clock.monotonic_to_wall(recorder.leaves_device_mono(frame)) for frame in onsets]
    # Each tick is paired with the sound that left within [timetag − 50 ms, + 200 ms) (ticks are
    # 250 ms apart): a tick a player missed leaves no gap and no error, it is counted instead.
    matched: list[tuple[int, int]] = []  # (tick number, onset index)
    for k, t in enumerate(due):
        near = [i for i, at in enumerate(left) if t - 0.05 <= at < t + 0.2]
        if near:
            matched.append((k, near[0]))
    gaps = [
        onsets[j] - onsets[i] - round(SPACING_S * RATE)
        for (k, i), (m, j) in itertools.pairwise(matched)
        if m == k + 1
    ]
    errors = [(left[i] - due[k]) * 1000 for k, i in matched]
    stats = getattr(player, "stats", None)
    note = "" if len(matched) == ticks else f"{ticks - len(matched)} of {ticks} ticks not heard"
    return Result(
        name,
        gaps,
        errors,
        getattr(stats, "xruns", None) if isinstance(player, audio.SoundDevicePlayer) else None,
        getattr(stats, "relocks", 0),
        getattr(stats, "late", 0),
        note,
    )


DEBIAN_GI = Path("/usr/lib/python3/dist-packages")


def playsound_through_jack() -> str | None:
    """Set playsound up to play into JACK; None if it can, else why not.

    playsound 1.2.2 plays through GStreamer's ``playbin`` on Linux, which needs PyGObject
    (``gi``). Building PyGObject in a venv needs C build dependencies; Debian's ``python3-gi``
    is used instead when this interpreter is the same minor version (appended to ``sys.path``,
    benchmark only). ``jackaudiosink`` (gstreamer1.0-plugins-good) is ranked first so that
    ``playbin`` picks JACK.
    """
    os.environ.setdefault("GST_PLUGIN_FEATURE_RANK", "jackaudiosink:MAX")
    try:
        import gi  # noqa: F401
    except ImportError:
        if (DEBIAN_GI / "gi").is_dir() and sys.version_info[:2] == (3, 11):
            sys.path.append(str(DEBIAN_GI))
    return audio.probe_playsound()


def show(result: Result, details: bool) -> None:
    if details:
        print(
            "  gaps off by more than 1:", [(i, g) for i, g in enumerate(result.gaps) if abs(g) > 1]
        )
    if not result.gaps:
        print(f"{result.name:10s} no gaps measured {result.note}")
        return
    within = sum(abs(g) <= 1 for g in result.gaps) / len(result.gaps)
    absolute = sorted(abs(e) for e in result.errors_ms)
    p95 = absolute[min(len(absolute) - 1, round(0.95 * (len(absolute) - 1)))]
    xruns = "-" if result.xruns is None else str(result.xruns)
    print(
        f"{result.name:10s} gaps ±1 frame {within * 100:5.1f} %  "
        f"|gap err| median {statistics.median(abs(g) for g in result.gaps):4.0f} "
        f"max {max(abs(g) for g in result.gaps):5d} frames   "
        f"onset−timetag median {statistics.median(result.errors_ms):+7.3f} ms "
        f"p95|.| {p95:6.3f} max|.| {absolute[-1]:6.3f} ms   "
        f"xruns {xruns}  relocks {result.relocks}  late {result.late}  {result.note}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=120)
    parser.add_argument("--gil-load", type=float, default=0.1, help="0 .. 0.9 (default 0.1)")
    parser.add_argument("--gaps", action="store_true", help="also list the gaps off by > 1 frame")
    args = parser.parse_args()
    print(
        f"# {platform.platform()}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}; {args.ticks} ticks per variant, "
        f"GIL load {args.gil_load:.0%}"
    )
    try:
        with jack_server(RATE) as server:
            os.environ["JACK_DEFAULT_SERVER"] = server.name
            clock = SystemClock()
            variants: list[tuple[str, audio.Player | str]] = [
                ("dll", audio.SoundDevicePlayer(clock, placement="dll")),
                ("callback", audio.SoundDevicePlayer(clock, placement="callback")),
            ]
            reason = playsound_through_jack()
            variants.append(("playsound", reason or audio.PlaysoundPlayer(clock)))
            for name, player in variants:
                if isinstance(player, str):
                    print(f"{name:10s} not measured: {player}")
                    continue
                show(measure(server, name, player, args.ticks, args.gil_load), args.gaps)
            import sounddevice

            sounddevice._terminate()  # before the server goes, or PortAudio aborts at exit
    except JackUnavailable as exc:
        print(f"cannot run: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
