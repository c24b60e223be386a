"""Timetags between oscsync and real, headless Pure Data (mrpeach's [packOSC] / [unpackOSC]).

The probe patch (tests/pd/osc_probe.pd) sends ``probe-send ADDRESS ARGS`` as a bundle through
``[packOSC]`` with ``timetagoffset``, optionally through ``pd/packOSC-timetag-fix.pd``, and
prints what its ``[unpackOSC]`` reports, including the second outlet (ms until the timetag).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable

from conftest import REPO, LineReader, free_udp_port
from oscsync.osc import timetag
from pdharness import PdProcess

PROBE = REPO / "tests" / "pd" / "osc_probe.pd"
RunPd = Callable[..., PdProcess]
Spawn = Callable[..., subprocess.Popen[str]]

# packOSC logs the timetag it writes into each bundle it opens (Pd 0.53 prints it with -stderr).
PACKOSC_TIMETAG = re.compile(r"delta_ms [-\d.]+ timetag: (\d+)sec (\d+)")


def start_dump(spawn: Spawn, count: int) -> tuple[int, LineReader]:
    port = free_udp_port()
    proc = spawn("dump", "--listen", str(port), "--jsonl", "--count", str(count))
    assert proc.stdout is not None and proc.stderr is not None
    LineReader(proc.stderr).wait_for(lambda line: line.startswith("listening on"))
    return port, LineReader(proc.stdout)


def test_packosc_bundle_arrives_with_the_timetag_pd_wrote(run_pd: RunPd, spawn: Spawn) -> None:
    port, out = start_dump(spawn, 2)
    pd = run_pd(PROBE, sends=[f"probe-connect 127.0.0.1 {port}"])
    written = []
    for offset in (100000, 1500000):
        mark = len(pd.snapshot())
        pd.send("probe-offset", offset)
        pd.send("probe-send", "/probe", offset)
        match = PACKOSC_TIMETAG.search(pd.wait_for(PACKOSC_TIMETAG, start=mark))
        assert match is not None
        written.append(timetag.from_parts(int(match.group(1)), int(match.group(2))))
    records = [json.loads(out.wait_for(lambda line: True)) for _ in written]
    assert [r["args"] for r in records] == [[100000], [1500000]]
    # Bit-exact: the NTP seconds and fraction PD wrote are what oscsync decoded.
    assert [r["timetag"] for r in records] == [timetag.format_hex(t) for t in written]


def test_packosc_timetagoffset_is_that_far_ahead_of_pd_clock(run_pd: RunPd, spawn: Spawn) -> None:
    """With pd/packOSC-timetag-fix.pd, ``timetagoffset N`` means N µs after PD's wall clock.

    (Raw [packOSC] writes a timetag off by a fraction of a second that changes every PD session:
    see the comment in pd/packOSC-timetag-fix.pd.)
    """
    offsets_us = (100000, 250000, 0)
    port, out = start_dump(spawn, len(offsets_us))
    pd = run_pd(PROBE, sends=[f"probe-connect 127.0.0.1 {port}", "probe-fix 1"])
    for offset in offsets_us:
        pd.send("probe-offset", offset)
        pd.send("probe-send", "/probe", offset)
    records = [json.loads(out.wait_for(lambda line: True)) for _ in offsets_us]
    for record, offset in zip(records, offsets_us):
        # headroom = timetag - arrival on the same machine's clock: the offset minus the trip.
        headroom_ms = record["headroom_ms"]
        assert offset / 1000 - 20 < headroom_ms <= offset / 1000 + 1, record


def test_bundle_sent_in_200ms_shows_200ms_in_unpackosc(run_pd: RunPd, spawn: Spawn) -> None:
    pd_port = free_udp_port()
    pd = run_pd(PROBE, sends=[f"probe-listen {pd_port}"])
    send = spawn("send", f"127.0.0.1:{pd_port}", "/probe", "7", "--in", "0.2")
    assert send.wait(10) == 0
    assert pd.wait_for(r"^probe-message: ") == "probe-message: /probe 7"
    # unpackOSC's second outlet: milliseconds from PD's now until the timetag.
    ms = float(pd.printed("probe-ms")[0])
    assert 150 < ms <= 200.5


def test_plain_message_has_no_wait_in_unpackosc(run_pd: RunPd, spawn: Spawn) -> None:
    pd_port = free_udp_port()
    pd = run_pd(PROBE, sends=[f"probe-listen {pd_port}"])
    assert spawn("send", f"127.0.0.1:{pd_port}", "/probe", "8").wait(10) == 0
    pd.wait_for(r"^probe-message: /probe 8")
    assert pd.printed("probe-ms") == ["0"]
