"""The scripts in ``examples/`` run, on the public API, against the CLI and headless Pure Data.

Each script keeps its settings as constants at the top (the workshop's files are edited there);
the tests give ports from the kernel on the command line instead, which every script accepts.
Each one is also listed on the docs' Examples page, and stays a page of code or less.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import oscsync
from conftest import REPO, ChildProcesses, LineReader, Spawn, free_udp_port
from oscsync.audio import find_onsets, read_wav
from pdharness import PdProcess

EXAMPLES = REPO / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))
RunPd = Callable[..., PdProcess]
Script = Callable[..., tuple[subprocess.Popen[str], LineReader]]


@pytest.fixture
def script() -> Iterator[Script]:
    """Start ``examples/NAME`` with arguments; (process, its stdout lines). Stopped at the end."""
    with ChildProcesses() as children:

        def start(
            name: str, *args: object, stdin: int | None = subprocess.DEVNULL
        ) -> tuple[subprocess.Popen[str], LineReader]:
            argv = [sys.executable, str(EXAMPLES / name), *map(str, args)]
            proc = children.popen(argv, stdin=stdin, stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            return proc, LineReader(proc.stdout)

        yield start


def test_the_workshop_four_and_three_more_are_there_each_a_page_or_less() -> None:
    workshop = {
        "example1_client.py",
        "example2_client.py",
        "example3_client.py",
        "example3_print_timestamp.py",
    }
    assert workshop <= set(SCRIPTS)
    assert len(set(SCRIPTS) - workshop) >= 3
    for name in SCRIPTS:
        text = (EXAMPLES / name).read_text("utf-8")
        assert len(text.splitlines()) <= 66, name  # a printed page
        assert "import oscsync" in text, name
        # Only the public API: nothing below oscsync's own names.
        assert not re.search(r"from oscsync\.|oscsync\.(apps|net|osc|sync|cli)\b", text), name


def test_every_example_is_listed_on_the_examples_page() -> None:
    page = (REPO / "docs" / "python-examples.md").read_text("utf-8")
    for name in SCRIPTS:
        assert f"examples/{name}" in page, name


def test_example1_chats_with_pure_data(run_pd: RunPd, script: Script) -> None:
    pd_port, our_port = free_udp_port(), free_udp_port()
    pd = run_pd(
        REPO / "pd" / "example1_client.pd",
        sends=[f"oscsync-listen {pd_port}", f"oscsync-connect 127.0.0.1 {our_port}"],
    )
    proc, out = script("example1_client.py", pd_port, our_port, stdin=subprocess.PIPE)
    out.wait_for(lambda line: line.startswith("chat: listening on"))
    assert proc.stdin is not None
    proc.stdin.write("hello from python\n")
    proc.stdin.flush()
    assert pd.wait_for(r"^chat: ") == "chat: hello from python"
    pd.send("oscsync-chat", "hi", "there", 3)
    assert out.wait_for(lambda line: "hi there" in line) == "[127.0.0.1] hi there 3"
    proc.stdin.close()
    assert proc.wait(10) == 0


def test_example2_ticks_reach_the_metronome_listener_and_its_ticks_come_back(
    spawn: Spawn, script: Script
) -> None:
    listen_port, our_port = free_udp_port(), free_udp_port()
    listener = spawn("metronome", "listen", "--listen", str(listen_port), "--audio", "none")
    assert listener.stdout is not None and listener.stderr is not None
    LineReader(listener.stderr).wait_for(lambda line: line.startswith("listening on"))
    heard = LineReader(listener.stdout)
    # Ticks for the script from the CLI, already running when the script starts listening
    # (those sent before are refused and counted): no race with either start-up.
    spawn("metronome", "send", "--peer", f"127.0.0.1:{our_port}", "--bpm", "240", "--count", "80")
    proc, out = script("example2_client.py", listen_port, our_port, 6, "none")
    for beat in range(6):
        line = heard.wait_for(lambda line: line.startswith("tick "))
        assert line.split()[3].rstrip("*") == str(beat % 4)  # "beat 0*": the accent
    assert proc.wait(15) == 0
    ticks = [line for line in out.rest() if line.startswith("tick ")]
    assert len(ticks) >= 3, out.lines
    beats = [int(line.split()[1]) for line in ticks]
    assert all((b - a) % 4 == 1 for a, b in itertools.pairwise(beats)), beats
    assert all(line.endswith("from 127.0.0.1") for line in ticks)


def test_example3_timetags_arrive_timetag_offset_ahead_in_pure_data(
    run_pd: RunPd, script: Script
) -> None:
    pd_port, our_port = free_udp_port(), free_udp_port()
    pd = run_pd(REPO / "pd" / "example3_client.pd", sends=[f"oscsync-listen {pd_port}"])
    proc, _ = script("example3_client.py", pd_port, our_port, 3, "none", 0.2)
    pd.wait_for_all(r"^tick: ", 3, timeout=15)
    ahead = [float(ms) for ms in pd.printed("ms-ahead")]
    assert len(ahead) >= 3
    # unpackOSC: ms until the timetag; 200 ms ahead minus the trip (and Pd's polling, and load).
    assert all(100 < ms <= 200.5 for ms in ahead), ahead
    assert proc.wait(15) == 0


def test_example3_plays_our_ticks_at_their_timetags(
    spawn: Spawn, script: Script, tmp_path: Path
) -> None:
    our_port = free_udp_port()
    out_wav = tmp_path / "ticks.wav"
    spawn(
        "metronome", "send", "--peer", f"127.0.0.1:{our_port}", "--offset", "0.15", "--bpm", "240",
        "--count", "80",
    )  # fmt: skip
    # Eight ticks of its own (to a port nobody listens on): it ends by itself, writing the WAV.
    proc, out = script("example3_client.py", free_udp_port(), our_port, 8, f"wav:{out_wav}", 0.1)
    ahead = [
        float(out.wait_for(lambda line: line.startswith("tick ")).split()[3]) for _ in range(4)
    ]
    assert all(50 < ms <= 150.5 for ms in ahead), ahead  # 150 ms ahead, less the trip
    assert proc.wait(15) == 0
    sound = read_wav(out_wav)
    onsets = [frame / sound.rate for frame in find_onsets(sound.samples)]
    assert len(onsets) >= 4
    # The WAV renderer places each click at its timetag's frame: on the sender's 0.25 s grid.
    steps = [(b - a) / 0.25 for a, b in itertools.pairwise(onsets)]
    assert all(abs(step - round(step)) * 0.25 < 0.0005 for step in steps), steps


def test_example3_shows_a_tick_without_a_timetag_as_due_on_arrival(script: Script) -> None:
    # A bundle timetagged IMMEDIATELY was shown as arriving ~4e12 ms (to 1900) after its timetag.
    our_port = free_udp_port()
    proc, out = script("example3_client.py", free_udp_port(), our_port, 4, "none", 0.1)
    out.wait_for(lambda line: line.startswith("listening on"))
    with oscsync.Endpoint(peers=our_port) as sender:
        sender.send_bundle(oscsync.IMMEDIATELY, [("/tick", 1)])
        sender.send("/tick", 2)
    lines = [out.wait_for(lambda line: line.startswith("tick ")) for _ in range(2)]
    assert sorted(lines) == [f"tick {beat} arrived +0.0 ms ahead of its timetag" for beat in (1, 2)]
    assert proc.wait(15) == 0


def test_example3_print_timestamp_agrees_with_oscsync_timetag(script: Script) -> None:
    proc, out = script("example3_print_timestamp.py", 0.25)
    assert proc.wait(10) == 0
    lines = out.rest()
    hexes = [line.split()[1] for line in lines if line.strip().startswith("timetag")]
    unixes = [float(line.split()[1]) for line in lines if line.strip().startswith("Unix")]
    assert len(hexes) == 2 and len(unixes) == 2
    assert abs(unixes[1] - unixes[0] - 0.25) < 1e-6
    for hex_text, unix in zip(hexes, unixes):
        seconds, fraction = (int(part, 16) for part in hex_text.split("."))
        assert abs(seconds - 2_208_988_800 + fraction / 2**32 - unix) < 1e-6
    # The same instant read by the CLI: within a few seconds of what the script printed.
    now = subprocess.run(
        [sys.executable, "-m", "oscsync", "timetag", "now"],
        capture_output=True,
        text=True,
        check=True,
    )
    unix_line = next(line for line in now.stdout.splitlines() if line.startswith("unix"))
    cli_unix = float(unix_line.split()[1])
    assert 0 <= cli_unix - unixes[0] < 10


def test_tick_cue_runs_on_each_synced_tick_and_sends_the_ramp(spawn: Spawn, script: Script) -> None:
    cue_port, light_port = free_udp_port(), free_udp_port()
    dump = spawn("dump", "--listen", str(light_port), "--jsonl", "--count", "8")
    assert dump.stdout is not None and dump.stderr is not None
    LineReader(dump.stderr).wait_for(lambda line: line.startswith("listening on"))
    proc, out = script("tick_cue.py", cue_port, f"127.0.0.1:{light_port}", 8)
    out.wait_for(lambda line: line.startswith("waiting for ticks"))
    spawn(
        "metronome", "send", "--peer", f"127.0.0.1:{cue_port}", "--offset", "0.2", "--bpm", "240",
        "--count", "12",
    )  # fmt: skip
    cues = [out.wait_for(lambda line: line.startswith("beat "), timeout=15) for _ in range(8)]
    assert proc.wait(10) == 0
    beats = [int(line.split()[1]) for line in cues]
    assert all((b - a) % 4 == 1 for a, b in itertools.pairwise(beats)), beats  # none skipped
    # Each cue ran at its tick's (translated) timetag, after the clock was synced.
    assert all("sync " in line for line in cues)
    late_ms = [float(re.findall(r"\(([-+][\d.]+) ms\)", line)[0]) for line in cues]
    # At the timetag, not on arrival (that would be 200 ms early): late by the scheduler's µs,
    # or by what a loaded machine adds.
    assert all(0 <= ms < 100 for ms in late_ms), late_ms
    levels = [json.loads(line)["args"][0] for line in LineReader(dump.stdout).rest(10)]
    assert sorted(set(round(level, 2) for level in levels)) == [0.25, 0.5, 0.75, 1.0]


def test_tick_cue_takes_a_plain_tick_too(script: Script) -> None:
    # A /tick with no timetag made cue() raise (to_unix(None)): no cue, no /light.
    cue_port = free_udp_port()
    proc, out = script("tick_cue.py", cue_port, f"127.0.0.1:{free_udp_port()}", 2)
    out.wait_for(lambda line: line.startswith("waiting for ticks"))
    with oscsync.Endpoint(peers=cue_port) as sender:
        sender.send("/tick", 2)
        sender.send_bundle(oscsync.IMMEDIATELY, [("/tick", 3)])
    cues = [out.wait_for(lambda line: line.startswith("beat ")) for _ in range(2)]
    assert [cue.split()[1] for cue in cues] == ["2", "3"]
    assert all("(now)" in cue for cue in cues), cues
    assert proc.wait(10) == 0


def test_melody_notes_are_played_by_sequence_listen_at_their_timetags(
    spawn: Spawn, script: Script, tmp_path: Path
) -> None:
    port = free_udp_port()
    log = tmp_path / "events.jsonl"
    listener = spawn(
        "sequence", "listen", "--listen", str(port), "--audio", "none", "--log", str(log),
        "--count", "8",
    )  # fmt: skip
    assert listener.stderr is not None
    LineReader(listener.stderr).wait_for(lambda line: line.startswith("listening on"))
    proc, out = script("melody.py", port, 8, 0.2, 7)
    assert proc.wait(15) == 0
    assert listener.wait(15) == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    sent = [int(line.split()[1]) for line in out.rest() if line.startswith("note ")]
    assert [event["note"] for event in events] == sent
    assert all(event["voice"] == "bass" for event in events)
    gaps = [b["timetag"] - a["timetag"] for a, b in itertools.pairwise(events)]
    assert all(abs(gap - 0.3) < 1e-5 for gap in gaps), gaps  # eighth notes at 100 bpm
    # Sent 0.2 s ahead: each arrived about that long before its timetag.
    assert all(0.1 < event["timetag"] - event["arrival"] <= 0.2 for event in events)


def test_two_laptops_follower_follows_a_leader_whose_clock_is_elsewhere(script: Script) -> None:
    port = free_udp_port()
    follower, follower_out = script("two_laptops.py", "follower", port, 12, "none", 0.3)
    follower_out.wait_for(lambda line: line.startswith("follower: listening"))
    leader, _ = script("two_laptops.py", "leader", port, 12, "none", 0.0)
    assert leader.wait(20) == 0
    assert follower.wait(20) == 0
    lines = [line for line in follower_out.rest() if line.startswith("follower: bar")]
    assert len(lines) == 12
    # The follower's clock is 0.3 s ahead of the leader's: the leader's is -300 ms from it.
    last = re.search(r"sync \w+ ([-+][\d.]+) ± ([\d.]+) ms", lines[-1])
    assert last is not None, lines[-1]
    offset_ms, bound_ms = float(last.group(1)), float(last.group(2))
    assert abs(offset_ms + 300) <= max(bound_ms, 1.0), lines[-1]
