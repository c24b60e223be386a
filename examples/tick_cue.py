"""Go further: your own code on every tick of a leader's metronome, at the tick's time.

Listens for /tick (from `oscsync metronome send --offset 0.1`, or example3_client.py on
another laptop), follows the sender's clock, and at each tick's timetag ramps a light level up
over the bar: it prints a text cue and sends the level on as /light LEVEL (to a lamp, a synth,
Pure Data...). Replace cue() with your own code.
Run:  python examples/tick_cue.py   and   oscsync metronome send --peer 127.0.0.1:9001 --offset 0.1
"""

import sys
import threading

import oscsync

LISTEN_PORT = 9001  # where the ticks come in
OUTPUT = "127.0.0.1:9002"  # where /light goes
BEATS_PER_BAR = 4
TICKS = 0  # stop after this many ticks (0: until Ctrl-C)

# `python tick_cue.py 9101 127.0.0.1:9102 8` (LISTEN_PORT OUTPUT TICKS).
if len(sys.argv) > 3:
    LISTEN_PORT, OUTPUT, TICKS = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

heard = []
done = threading.Event()

# sync=True: follow the clock of whoever sends the first timetagged tick; its timetags are
# translated onto this machine's clock, and each tick is handed to cue() at its timetag.
with oscsync.Endpoint(listen=LISTEN_PORT, peers=OUTPUT, sync=True) as endpoint:

    @endpoint.on("/tick")
    def cue(received):
        beat = int(received.args[0]) if received.args else 0
        level = (beat % BEATS_PER_BAR + 1) / BEATS_PER_BAR  # a ramp: 0.25, 0.5, 0.75, 1
        endpoint.send("/light", level)
        when = "now"  # a plain /tick (no timetag): handed on as it arrived
        if received.timetag not in (None, oscsync.IMMEDIATELY):
            late = oscsync.to_unix(endpoint.now()) - oscsync.to_unix(received.timetag)
            when = f"{late * 1000:+.3f} ms"  # how long after its timetag this ran
        print(
            f"beat {beat}  {'#' * round(level * 20):<20} {level:.2f}  "
            f"({when})  {endpoint.sync.snapshot().line()}",
            flush=True,
        )
        heard.append(beat)
        if TICKS and len(heard) >= TICKS:
            done.set()

    print(f"waiting for ticks on {endpoint.local_address}", flush=True)
    done.wait()
