"""Example 3: forward synchronisation. Each tick is sent in a bundle timetagged timetagOffset
seconds ahead; the receiver holds it and plays it at its timetag, so jitter smaller than the
offset disappears. Prints how far ahead each tick arrived (PD's unpackOSC shows the same).

Run:  python examples/example3_client.py      (with pd/example3_client.pd, or
      `oscsync metronome listen --listen 9000`)
"""

import sys

import oscsync

IP = "127.0.0.1"  # where the other side listens
SEND_PORT = 9000  # pd/example3_client.pd listens on 9000 ...
LISTEN_PORT = 9001  # ... and sends its ticks to 9001
BPM = 120
TICKS = 0  # how many ticks to send (0: until Ctrl-C)
AUDIO = "auto"  # "none" for silence, "wav:out.wav" to record into a file
timetagOffset = 0.1  # seconds: each tick is due this long after it is sent

# `python example3_client.py 9100 9101 8 none 0.2` (SEND_PORT LISTEN_PORT TICKS AUDIO OFFSET).
if len(sys.argv) > 5:
    SEND_PORT, LISTEN_PORT, TICKS = map(int, sys.argv[1:4])
    AUDIO, timetagOffset = sys.argv[4], float(sys.argv[5])

with (
    oscsync.SoundPlayer(AUDIO, on_notice=print) as player,
    oscsync.Endpoint(listen=LISTEN_PORT, peers=f"{IP}:{SEND_PORT}") as endpoint,
):
    # hold=False: hand the tick on as it arrives; the player places it at its timetag itself.
    @endpoint.on("/tick", hold=False)
    def play(received):
        beat = int(received.args[0]) if received.args else 0
        timed = received.timetag not in (None, oscsync.IMMEDIATELY)  # else: play it now
        due = received.timetag if timed else oscsync.IMMEDIATELY
        player.play_at(due, "accent" if beat == 0 else "tick")
        ahead = (oscsync.to_unix(due) - received.arrival) * 1000 if timed else 0.0
        print(f"tick {beat} arrived {ahead:+.1f} ms ahead of its timetag", flush=True)

    print(f"listening on {endpoint.local_address}, sending to {IP}:{SEND_PORT}", flush=True)
    for tick in oscsync.Grid(BPM).ticks(count=TICKS or None):
        oscsync.sleep_until(tick.timetag)
        endpoint.send("/tick", tick.beat, at=oscsync.add_seconds(tick.timetag, timetagOffset))
    oscsync.sleep_until(oscsync.add_seconds(oscsync.now(), 0.5 + timetagOffset))
