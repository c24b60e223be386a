"""Go further: a generative melody, each note sent ahead of its time in a timetagged bundle.

A random walk over a pentatonic scale, one note per eighth note, sent as /seq/bass VELOCITY
STEP NOTE (the sequencer's pitched voice): `oscsync sequence listen` plays each note as a tone
at its timetag, pd/example4_sequencer.pd prints it. Every note leaves AHEAD seconds early, so
the network's jitter is gone by the time it sounds.
Run:  oscsync sequence listen   and   python examples/melody.py
"""

import random
import sys

import oscsync

IP = "127.0.0.1"
SEND_PORT = 9001  # `oscsync sequence listen` listens on 9001
BPM = 100
NOTES = 32  # how many notes (0: for ever)
AHEAD = 0.2  # seconds each note is sent before it sounds
ROOT = 57  # MIDI note of the scale's root (A3)
SCALE = [0, 2, 4, 7, 9]  # major pentatonic, semitones above the root
SEED = None  # a number replays the same melody

# `python melody.py 9101 8 0.2 7` (SEND_PORT NOTES AHEAD SEED).
if len(sys.argv) > 4:
    SEND_PORT, NOTES = int(sys.argv[1]), int(sys.argv[2])
    AHEAD, SEED = float(sys.argv[3]), int(sys.argv[4])

rng = random.Random(SEED)
degree = 0
with oscsync.Endpoint(peers=f"{IP}:{SEND_PORT}") as endpoint:
    start = oscsync.add_seconds(oscsync.now(), AHEAD)  # the first note sounds AHEAD from now
    grid = oscsync.Grid(BPM, steps_per_beat=2, start=start)
    for tick in grid.ticks(count=NOTES or None):
        degree = max(-5, min(9, degree + rng.choice((-2, -1, -1, 1, 1, 2))))
        octave, step = divmod(degree, len(SCALE))
        note = ROOT + 12 * octave + SCALE[step]
        velocity = 1.0 if tick.accent else rng.choice((0.5, 0.7))
        oscsync.sleep_until(oscsync.add_seconds(tick.timetag, -AHEAD))
        endpoint.send_bundle(tick.timetag, [("/seq/bass", velocity, tick.step, note)])
        print(f"note {note} at step {tick.step} of bar {tick.bar}", flush=True)
