"""pd/example2_client.pd and pd/example3_client.pd against real, headless Pure Data.

Each patch is driven through its named receivers (``oscsync-listen``, ``oscsync-connect``,
``oscsync-metro``, ``oscsync-bpm``, ``oscsync-offset``) and talks to ``oscsync metronome``.
Timing is checked with generous windows: PD headless polls its sockets every few milliseconds.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, LineReader, free_udp_port
from pdharness import PdProcess
from waiting import wait_until

EXAMPLE2 = REPO / "pd" / "example2_client.pd"
EXAMPLE3 = REPO / "pd" / "example3_client.pd"
FIX = REPO / "pd" / "packOSC-timetag-fix.pd"
RunPd = Callable[..., PdProcess]
Spawn = Callable[..., subprocess.Popen[str]]


def start_example(
    run_pd: RunPd, patch: Path, peer_port: int | None = None, *sends: str
) -> tuple[PdProcess, int]:
    """The patch listening on a free port (returned), sending to ``peer_port`` if given."""
    pd_port = free_udp_port()
    connect = [f"oscsync-connect 127.0.0.1 {peer_port}"] if peer_port else []
    return run_pd(patch, sends=[f"oscsync-listen {pd_port}", *connect, *sends]), pd_port


def listen(spawn: Spawn, tmp_path: Path, count: int) -> tuple[int, subprocess.Popen[str], Path]:
    """``oscsync metronome listen`` on a free port, logging ``count`` ticks, no audio."""
    port = free_udp_port()
    log = tmp_path / "ticks.jsonl"
    proc = spawn(
        "metronome", "listen", "--listen", str(port), "--audio", "none",
        "--log", str(log), "--count", str(count),
    )  # fmt: skip
    assert proc.stderr is not None
    LineReader(proc.stderr).wait_for(lambda line: "listening" in line)
    return port, proc, log


def read_log(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def arrival_gaps_ms(ticks: list[dict[str, Any]]) -> list[float]:
    return [(b["arrival"] - a["arrival"]) * 1000 for a, b in itertools.pairwise(ticks)]


@pytest.mark.parametrize("patch", [EXAMPLE2, EXAMPLE3, FIX], ids=lambda p: p.name)
def test_every_object_creates(run_pd: RunPd, patch: Path) -> None:
    pd = run_pd(patch, sends=[f"oscsync-listen {free_udp_port()}"])
    assert pd.creation_failures() == []


@pytest.mark.parametrize("patch", [EXAMPLE2, EXAMPLE3], ids=lambda p: p.name)
def test_tick_sound_is_loaded(run_pd: RunPd, patch: Path) -> None:
    pd, _ = start_example(run_pd, patch)
    # [soundfiler] reports the samples read from ../sounds/tick.wav (48 kHz, at most 50 ms).
    samples = int(pd.wait_for(r"^tick-samples: ").split()[-1])
    assert 0 < samples <= 2400


def test_our_metronome_ticks_are_printed_by_example2(run_pd: RunPd, spawn: Spawn) -> None:
    pd, pd_port = start_example(run_pd, EXAMPLE2)
    sender = spawn(
        "metronome", "send", "--peer", f"127.0.0.1:{pd_port}", "--count", "4", "--bpm", "240"
    )
    assert sender.wait(20) == 0
    pd.wait_for_all(r"^tick: ", 4)
    assert pd.printed("tick") == ["0", "1", "2", "3"]


def test_example2_metro_reaches_our_listener_every_500ms(
    run_pd: RunPd, spawn: Spawn, tmp_path: Path
) -> None:
    port, listener, log = listen(spawn, tmp_path, 4)
    start_example(run_pd, EXAMPLE2, port, "oscsync-metro 1")
    assert listener.wait(20) == 0
    ticks = read_log(log)
    assert [t["beat"] for t in ticks] == [0, 1, 2, 3]
    assert all(t["timetag"] is None for t in ticks)  # example 2 sends plain messages
    gaps_ms = arrival_gaps_ms(ticks)
    assert 450 < statistics.mean(gaps_ms) < 550, gaps_ms
    assert all(350 < gap < 650 for gap in gaps_ms), gaps_ms


def test_example2_bpm_receiver_sets_the_tempo(run_pd: RunPd, spawn: Spawn, tmp_path: Path) -> None:
    port, listener, log = listen(spawn, tmp_path, 4)
    start_example(run_pd, EXAMPLE2, port, "oscsync-bpm 300", "oscsync-metro 1")
    assert listener.wait(20) == 0
    ticks = read_log(log)
    gaps_ms = arrival_gaps_ms(ticks)
    assert 150 < statistics.mean(gaps_ms) < 250, gaps_ms  # 300 bpm = 200 ms


def test_example3_offset_gives_timetags_100ms_after_arrival(
    run_pd: RunPd, spawn: Spawn, tmp_path: Path
) -> None:
    port, listener, log = listen(spawn, tmp_path, 4)
    start_example(run_pd, EXAMPLE3, port, "oscsync-offset 100000", "oscsync-metro 1")
    assert listener.wait(20) == 0
    ticks = read_log(log)
    assert [t["beat"] for t in ticks] == [0, 1, 2, 3]
    for tick in ticks:
        assert 80 < tick["headroom_ms"] <= 101, tick
        assert tick["onset"] >= tick["timetag"]
    # Not asserted: `late` (played > 1 ms after the timetag). That is the listener's timer
    # thread, not PD's offset: with one core kept busy (make test-busy) it was preempted 1.3-8 ms
    # past a timetag in 5 of 6 runs, while every headroom stayed 99.3-99.9 ms. The scheduler's
    # accuracy is measured by benchmarks/scheduler.py and its logic tested on the FakeClock.


def test_example3_offset_minus_one_sends_immediate_bundles(
    run_pd: RunPd, spawn: Spawn, tmp_path: Path
) -> None:
    port, listener, log = listen(spawn, tmp_path, 2)
    start_example(run_pd, EXAMPLE3, port, "oscsync-offset -1", "oscsync-metro 1")
    assert listener.wait(20) == 0
    assert [t["timetag"] for t in read_log(log)] == [None, None]  # IMMEDIATELY


def test_our_offset_shows_100ms_until_timetag_in_example3(run_pd: RunPd, spawn: Spawn) -> None:
    pd, pd_port = start_example(run_pd, EXAMPLE3)
    sender = spawn(
        "metronome", "send", "--peer", f"127.0.0.1:{pd_port}",
        "--count", "4", "--bpm", "240", "--offset", "0.1",
    )  # fmt: skip
    assert sender.wait(20) == 0
    pd.wait_for_all(r"^tick: ", 4)
    lines = [line for line in pd.snapshot() if line.startswith(("ms-ahead: ", "tick: "))]
    # Each bundle: its wait is shown on arrival, then [pipelist] lets the tick out at the timetag.
    assert [line.split(":")[0] for line in lines] == ["ms-ahead", "tick"] * 4
    assert pd.printed("tick") == ["0", "1", "2", "3"]
    for ms in map(float, pd.printed("ms-ahead")):
        assert 60 < ms <= 100.5


def _udp_no_ports() -> int:
    """Datagrams this network namespace's kernel got for a port nobody listened on (Linux)."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (row for row in rows if row[0] == "Udp:")
    return int(values[names.index("NoPorts")])


@pytest.mark.parametrize("patch", [EXAMPLE2, EXAMPLE3], ids=lambda p: p.name)
def test_a_patch_started_before_oscsync_reaches_it_once_it_listens(
    run_pd: RunPd, spawn: Spawn, tmp_path: Path, patch: Path
) -> None:
    """Issue 30 item 5: mrpeach's [udpsend] disconnected on the first "Connection refused" and
    printed "udpsend: not connected" on every tick after; the patches now send with Pd's own
    [netsend -u -b], which keeps sending while nothing listens."""
    port = free_udp_port()
    before = _udp_no_ports()
    pd, _ = start_example(run_pd, patch, port, "oscsync-bpm 600", "oscsync-metro 1")
    # Three ticks into the void: [udpsend] disconnected at the second.
    wait_until(lambda: _udp_no_ports() - before >= 3, 10, "three ticks sent to a closed port")
    log = tmp_path / "ticks.jsonl"
    listener = spawn(
        "metronome", "listen", "--listen", str(port), "--audio", "none",
        "--log", str(log), "--count", "3",
    )  # fmt: skip
    assert listener.wait(20) == 0
    assert len(read_log(log)) == 3
    assert not [line for line in pd.snapshot() if "error" in line]


def test_signed_ticks_still_play_in_example3(run_pd: RunPd, spawn: Spawn, tmp_path: Path) -> None:
    """Issue #27 item 2: with a key each bundle carries one more message, /oscsync/auth with a
    blob: [unpackOSC] decodes it, [routeOSC] passes it by; the ticks play as unsigned ones do."""
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    key.chmod(0o600)
    pd, pd_port = start_example(run_pd, EXAMPLE3)
    sender = spawn(
        "--key-file", str(key), "metronome", "send", "--peer", f"127.0.0.1:{pd_port}",
        "--count", "4", "--bpm", "240", "--offset", "0.1",
    )  # fmt: skip
    assert sender.wait(20) == 0
    pd.wait_for_all(r"^tick: ", 4)
    assert pd.printed("tick") == ["0", "1", "2", "3"]
    assert not [line for line in pd.snapshot() if "error" in line.lower()]
