"""Example 2: a networked metronome. Sends /tick BEAT on the beat, plays a click on each /tick.

Ticks are plain messages: the receiver plays them when they arrive, network jitter and all.
Run:  python examples/example2_client.py      (with pd/example2_client.pd, or
      `oscsync metronome listen --listen 9000` and `oscsync metronome send`)
"""

import sys

import oscsync

IP = "127.0.0.1"  # where the other side listens
SEND_PORT = 9000  # pd/example2_client.pd listens on 9000 ...
LISTEN_PORT = 9001  # ... and sends its ticks to 9001
BPM = 120  # 120 beats a minute: a tick every half second
TICKS = 0  # how many ticks to send (0: until Ctrl-C)
AUDIO = "auto"  # the sound card; "none" for silence, "wav:out.wav" to record into a file

# `python example2_client.py 9100 9101 8 none` (SEND_PORT LISTEN_PORT TICKS AUDIO).
if len(sys.argv) > 4:
    SEND_PORT, LISTEN_PORT, TICKS = map(int, sys.argv[1:4])
    AUDIO = sys.argv[4]

with (
    oscsync.SoundPlayer(AUDIO, on_notice=print) as player,
    oscsync.Endpoint(listen=LISTEN_PORT, peers=f"{IP}:{SEND_PORT}") as endpoint,
):

    @endpoint.on("/tick")
    def play(received):
        beat = int(received.args[0]) if received.args else 0
        player.play("accent" if beat == 0 else "tick")
        print(f"tick {beat} from {received.source[0]}", flush=True)

    print(f"listening on {endpoint.local_address}, sending to {IP}:{SEND_PORT}", flush=True)
    for tick in oscsync.Grid(BPM).ticks(count=TICKS or None):
        oscsync.sleep_until(tick.timetag)  # on the beat: sleeps, then spins the last 2 ms
        endpoint.send("/tick", tick.beat)
    oscsync.sleep_until(oscsync.add_seconds(oscsync.now(), 0.5))  # the last ticks coming back
