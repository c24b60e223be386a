"""pd/example4_sequencer.pd against real, headless Pure Data and ``oscsync sequence`` (issue #19).

The patch is driven through its named receivers (``oscsync-listen``, ``oscsync-connect``,
``oscsync-metro``, ``oscsync-bpm``, ``oscsync-offset``, ``oscsync-kick`` ...). Timing windows
are generous: PD headless polls its sockets every few milliseconds.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import REPO, LineReader, free_udp_port
from oscsync.osc import codec
from pdharness import PdProcess

EXAMPLE4 = REPO / "pd" / "example4_sequencer.pd"
RunPd = Callable[..., PdProcess]
Spawn = Callable[..., subprocess.Popen[str]]

PATTERN = """\
kick:  x... x... x... x...
snare: .... o... .... o...
hat:   ..o. ..o. ..o. ..o.
bass:  36 . . 36 . . 39 . | 41 . . . 39 . 36 .
"""


def start_example4(run_pd: RunPd, *sends: str) -> tuple[PdProcess, int]:
    pd_port = free_udp_port()
    return run_pd(EXAMPLE4, sends=[f"oscsync-listen {pd_port}", *sends]), pd_port


def test_example4_every_object_creates_and_the_drums_load(run_pd: RunPd) -> None:
    pd, _ = start_example4(run_pd)
    for name, frames in (("kick", 5760), ("snare", 4800), ("hat", 2400)):
        assert pd.wait_for(rf"^{name}-samples: ") == f"{name}-samples: {frames}"
    assert pd.creation_failures() == []


def test_example4_prints_every_voice_oscsync_sequence_sends(
    run_pd: RunPd, spawn: Spawn, tmp_path: Path
) -> None:
    pd, pd_port = start_example4(run_pd)
    beat = tmp_path / "beat.txt"
    beat.write_text(PATTERN)
    sender = spawn(
        "sequence", "send", str(beat), "--peer", f"127.0.0.1:{pd_port}", "--bars", "1",
        "--offset", "0.1", "--bpm", "240",
    )  # fmt: skip
    assert sender.wait(20) == 0
    pd.wait_for_all(r"^bass: ", 6)
    pd.wait_for_all(r"^kick: ", 4)
    assert pd.printed("kick") == ["0", "4", "8", "12"]
    assert pd.printed("snare") == ["4", "12"]
    assert pd.printed("hat") == ["2", "6", "10", "14"]
    assert pd.printed("bass") == ["0", "3", "6", "8", "12", "14"]
    # Each bundle arrived ahead of its timetag, which set the voices' delays.
    ahead = [float(ms) for ms in pd.printed("ms-ahead")]
    assert len(ahead) == 9  # one per sounding step
    assert all(50 < ms <= 100.5 for ms in ahead), ahead


def read_log(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_example4_own_pattern_reaches_oscsync_sequence_listen(
    run_pd: RunPd, spawn: Spawn, tmp_path: Path
) -> None:
    port = free_udp_port()
    log = tmp_path / "events.jsonl"
    listener = spawn(
        "sequence", "listen", "--listen", str(port), "--audio", "none", "--log", str(log),
        "--count", "10",
    )  # fmt: skip
    assert listener.stderr is not None
    LineReader(listener.stderr).wait_for(lambda line: "listening" in line)
    start_example4(
        run_pd,
        f"oscsync-connect 127.0.0.1 {port}",
        "oscsync-offset 100000",
        "oscsync-bpm 240",
        "oscsync-metro 1",
    )
    assert listener.wait(20) == 0
    events = read_log(log)
    # The patch's pattern: kick on 0 4 8 12, snare (0.6) on 4 12, hat (0.6) on 2 6 10 14.
    expected = {"kick": {0, 4, 8, 12}, "snare": {4, 12}, "hat": {2, 6, 10, 14}}
    for event in events:
        assert event["step"] in expected[event["voice"]], event
        assert event["velocity"] == (1.0 if event["voice"] == "kick" else 0.6)
        assert event["timetag"] is not None and event["onset"] >= event["timetag"], event
        assert 50 < (event["timetag"] - event["arrival"]) * 1000 <= 101, event
    assert Counter(e["voice"] for e in events).keys() == expected.keys()


def test_example4_starts_on_step_0_once(run_pd: RunPd) -> None:
    """Issue 30 item 4: the toggle fanned out to [metro] and to the counter's reset without a
    [t f b], so starting sent step 0, then reset the counter and sent step 0 again."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        port = receiver.getsockname()[1]
        start_example4(
            run_pd, f"oscsync-connect 127.0.0.1 {port}", "oscsync-bpm 240", "oscsync-metro 1"
        )
        kicks: list[int] = []
        while len(kicks) < 3:
            for message in codec.decode(receiver.recv(65536)):
                if message.address == "/seq/kick":
                    kicks.append(int(message.args[1]))
    assert kicks == [0, 4, 8]
