"""Go further: a piece for two laptops. The leader keeps time; the follower follows the leader's
clock over the network (no NTP, no shared clock) and plays its own part on the leader's grid.

The leader sends each beat AHEAD seconds early, timetagged, and plays its downbeats; the
follower translates each timetag onto its own clock and answers with a hat half a beat later.
Laptop A:  python examples/two_laptops.py leader      (set FOLLOWER_IP to laptop B's address)
Laptop B:  python examples/two_laptops.py follower
"""

import sys
import threading

import oscsync

ROLE = "leader"  # or "follower"
FOLLOWER_IP = "127.0.0.1"  # the leader sends here
PORT = 9003  # the follower listens here
BPM = 90
BEATS = 0  # how many beats the piece lasts (0: until Ctrl-C)
AHEAD = 0.25  # seconds each beat is sent before it sounds
AUDIO = "auto"  # "none" for silence, "wav:part.wav" to record a part
CLOCK_SKEW = 0.0  # seconds this laptop's clock is off: try 0.3, the piece stays together

# `python two_laptops.py follower 9103 8 none 0.3` (ROLE PORT BEATS AUDIO CLOCK_SKEW).
ROLE = sys.argv[1] if len(sys.argv) > 1 else ROLE
if len(sys.argv) > 5:
    PORT, BEATS, AUDIO = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    CLOCK_SKEW = float(sys.argv[5])

clock = oscsync.SkewedClock(oscsync.SystemClock(), skew=CLOCK_SKEW)
player = oscsync.SoundPlayer(AUDIO, clock=clock, on_notice=print)

if ROLE == "leader":
    with oscsync.Endpoint(peers=f"{FOLLOWER_IP}:{PORT}", clock=clock) as endpoint:
        grid = oscsync.Grid(BPM, start=oscsync.add_seconds(clock.now_timetag(), AHEAD))
        for tick in grid.ticks(count=BEATS or None):
            oscsync.sleep_until(oscsync.add_seconds(tick.timetag, -AHEAD), clock=clock)
            endpoint.send("/piece/beat", tick.bar, tick.beat, at=tick.timetag)
            player.play_at(tick.timetag, "accent" if tick.accent else "kick")
            print(f"leader: bar {tick.bar} beat {tick.beat}", flush=True)
else:
    heard = []
    done = threading.Event()
    with oscsync.Endpoint(listen=PORT, sync=True, clock=clock) as endpoint:

        @endpoint.on("/piece/beat", hold=False)  # timetags already on this laptop's clock
        def answer(received):
            player.play_at(oscsync.add_seconds(received.timetag, 30 / BPM), "hat")
            bar, beat = received.args
            print(f"follower: bar {bar} beat {beat}  {endpoint.sync.snapshot().line()}", flush=True)
            heard.append(beat)
            if BEATS and len(heard) >= BEATS:
                done.set()

        print(f"follower: listening on {endpoint.local_address}", flush=True)
        done.wait()
oscsync.sleep_until(oscsync.add_seconds(clock.now_timetag(), 0.5), clock=clock)  # the last hat
player.close()
