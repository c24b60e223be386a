"""A room on loopback (issue #33): 8 ``metronome listen --sync`` followers on a multicast group
lock to one ``metronome send --room`` leader, and their pings fall from ~100 to ~2 a second;
with a key, the leader's session signs its sync messages and takes only signed reports.
Timing accuracy is a figure for benchmarks/room.py, not asserted here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from conftest import free_udp_port
from oscsync.apps.endpoints import open_endpoint
from oscsync.apps.receiving import SessionSetup
from oscsync.apps.sessions import SendSession
from oscsync.clock import SystemClock
from oscsync.net.hostport import HostPort
from oscsync.osc.auth import Key, PacketAuth
from oscsync.osc.routing import Received
from oscsync.sync import room
from waiting import wait_until

Spawn = Callable[..., subprocess.Popen[str]]
FOLLOWERS = 8


def test_eight_followers_lock_and_their_traffic_drops(spawn: Spawn) -> None:
    group = f"239.255.43.{free_udp_port() % 200 + 1}:{free_udp_port()}"
    listen = ("metronome", "listen", "--listen", group, "--iface", "127.0.0.1", "--sync")
    followers = [spawn(*listen, "--audio", "none", "--duration", "30") for _ in range(FOLLOWERS)]
    leader = spawn(
        "metronome", "send", "--peer", group, "--iface", "127.0.0.1", "--offset", "0.1",
        "--bpm", "240", "--duration", "28", "--room",
    )  # fmt: skip
    out, err = leader.communicate(timeout=90)
    assert leader.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    for follower in followers:
        follower.wait(timeout=60)
    assert len(lines) >= 10, out
    last = lines[-1]
    assert last["followers"] == FOLLOWERS and last["locked"] == FOLLOWERS, last
    assert {m["poll_s"] for m in last["members"]} == {0.5}  # backed off: 2 pings a second

    def per_follower(first: dict[str, float], then: dict[str, float]) -> float:
        span = then["time"] - first["time"]
        return (then["packets_in"] - first["packets_in"]) / span / FOLLOWERS

    # What reaches the leader from each follower: pings (and a report every 5 s); the pongs
    # back are as many. Acquiring (the first 10 s): ~100 a second; backed off: ~2.2.
    early = per_follower(lines[0], lines[2])
    late = per_follower(lines[-3], lines[-1])
    assert late <= 2.5 < 20 <= early, (early, late)


def test_with_a_key_the_leader_signs_sync_messages_and_takes_only_signed_reports() -> None:
    clock = SystemClock()
    key = Key(b"0123456789abcdef-room", "test")
    follower_auth = PacketAuth(key)
    syncs: list[Received] = []
    listen = HostPort("127.0.0.1", 0)
    with open_endpoint(listen, clock=clock, auth=follower_auth) as follower:
        follower.add_service(room.SYNC, lambda _endpoint, received: syncs.append(received))
        follower.start(lambda received: None)
        target = follower.local_address
        assert target is not None
        setup = SessionSetup(clock, auth=PacketAuth(key))
        with SendSession([target], setup, room=True) as leader:
            wait_until(lambda: len(syncs) >= 3, 10.0, "the leader's sync messages")
            assert all(received.authenticated for received in syncs)
            status = room.encode_status(room.Status("f", "locked", 0.1, 0.5, 1, 0))
            to = syncs[0].source
            follower.reply(status, to=to)  # unsigned: dropped
            follower.reply(follower_auth.sign_message(status), to=to)
            wait_until(
                lambda: (
                    leader.room.summary().followers == 1
                    and leader.room.dropped["unauthenticated-status"] == 1
                ),
                10.0,
                "one signed report taken, the unsigned one dropped",
                state=lambda: (leader.room.summary().followers, dict(leader.room.dropped)),
            )
