"""The forward-sync lab: scoring, `timetag sweep`, `stats`, `demo`."""

from __future__ import annotations

import csv
import json
import math
import os
import pty
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import oscsync_command, require_module
from oscsync.apps import lab, labrecords, scoring, tables
from oscsync.cli.main import cli

PERIOD = 0.25


def test_score_of_a_perfect_grid_is_zero_and_of_a_jittered_one_is_not() -> None:
    perfect = {k: 100.0 + k * PERIOD for k in range(16)}
    result = scoring.score(perfect, {}, {}, PERIOD, 16)
    assert result.ioi_std == pytest.approx(0, abs=1e-9)
    assert result.max_grid_error == pytest.approx(0, abs=1e-9)
    assert (result.received, result.lost, result.late_pct) == (16, 0, 0.0)
    shaken = dict(perfect)
    shaken[5] += 0.010  # one tick 10 ms late
    result = scoring.score(shaken, {}, {5: True}, PERIOD, 16)
    # The grid is fitted to the mean: the late tick is 10 ms - 10/16 ms from it.
    assert result.max_grid_error == pytest.approx(0.010 - 0.010 / 16, abs=1e-9)
    assert result.ioi_std > 0.003
    assert result.late == 1 and result.late_pct == pytest.approx(100 / 16)
    assert (result.arrived_late, result.played_late) == (0, 1)
    row = result.row()
    assert (row["arrived_late_pct"], row["played_late_pct"]) == (0.0, 6.25)


def test_score_counts_lost_ticks_and_skips_gaps_in_intervals() -> None:
    onsets = {k: k * PERIOD for k in range(10) if k not in (3, 4)}
    result = scoring.score(onsets, {}, {}, PERIOD, 10)
    assert result.lost == 2
    assert result.ioi_std == pytest.approx(0, abs=1e-9)  # no interval spans the gap


def _write_log(path: Path, onsets: list[float], timed: bool, skip: set[int]) -> None:
    lines = []
    for k, onset in enumerate(onsets):
        if k in skip:
            continue
        lines.append(
            json.dumps(
                {
                    "seq": len(lines),
                    "beat": k % 4,
                    "arrival": onset - (0.05 if timed else 0.0),
                    "timetag": (1000.0 + k * PERIOD) if timed else None,
                    "onset": onset,
                    "late": False,
                }
            )
        )
    lines.append("not json")
    path.write_text("\n".join(lines) + "\n")


def test_stats_summarises_a_tick_log(tmp_path: Path, cli_runner: CliRunner) -> None:
    log = tmp_path / "ticks.jsonl"
    onsets = [1000.0 + k * PERIOD for k in range(12)]
    onsets[6] += 0.004
    _write_log(log, onsets, timed=True, skip={9})
    result = cli_runner.invoke(cli, ["stats", str(log), "--jsonl"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.splitlines()[-1])
    assert row["lost"] == 1 and row["received"] == 11
    assert row["period_ms"] == pytest.approx(250.0)
    assert row["max_grid_error_ms"] == pytest.approx(4.0 - 4.0 / 11, abs=0.01)
    assert "skipped 1 line" in result.output
    table = cli_runner.invoke(cli, ["stats", str(log), "--bpm", "240"])
    assert table.exit_code == 0
    assert "inter-onset std" in table.output and str(log) in table.output


def test_stats_counts_arrived_late_and_played_late_apart(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    """Today's logs say which; a log from before issue 29 has only ``late`` (handled > 1 ms
    after the timetag): a tick whose arrival was past its timetag arrived late, else it was
    played late."""
    tick = {"timetag": 1000.0, "onset": 1000.0, "arrival": 999.9, "late": False}
    records = [
        {**tick, "arrived_late": True, "played_late": False, "late": True},
        {**tick, "arrived_late": False, "played_late": True, "late": True},
        {**tick, "arrived_late": False, "played_late": False},
        {**tick, "late": True, "arrival": 1000.002},  # old: arrived 2 ms after its timetag
        {**tick, "late": True},  # old: arrived early, handled late
        {**tick, "arrival": 1000.0005},  # old, on time
    ]
    log = tmp_path / "ticks.jsonl"
    log.write_text(
        "".join(
            json.dumps({**r, "timetag": r["timetag"] + k * PERIOD, "onset": r["onset"] + k * PERIOD,
                        "arrival": r["arrival"] + k * PERIOD}) + "\n"
            for k, r in enumerate(records)
        )
    )  # fmt: skip
    result = cli_runner.invoke(cli, ["stats", str(log), "--jsonl", "--bpm", "240"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.splitlines()[-1])
    assert (row["arrived_late_pct"], row["played_late_pct"]) == (
        round(200 / 6, 2),
        round(200 / 6, 2),
    )
    table = cli_runner.invoke(cli, ["stats", str(log), "--bpm", "240"])
    assert "arrived late" in table.output and "played late" in table.output
    assert "33.3 %" in table.output


def test_stats_rejects_missing_and_empty_logs(tmp_path: Path, cli_runner: CliRunner) -> None:
    missing = cli_runner.invoke(cli, ["stats", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "cannot read" in missing.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = cli_runner.invoke(cli, ["stats", str(empty)])
    assert result.exit_code == 1 and "no ticks" in result.output


def test_stats_skips_records_whose_times_are_not_times(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    log = tmp_path / "ticks.jsonl"
    good = [{"onset": 1000.0 + k * PERIOD, "arrival": 999.9 + k * PERIOD} for k in range(4)]
    bad = [
        '{"onset": 1, "arrival": 1, "timetag": "soon"}',
        '{"onset": NaN, "arrival": 1}',
        '{"onset": 1, "arrival": Infinity}',
        '{"onset": 1e308, "arrival": 1}',
        '{"onset": 1, "arrival": 1, "timetag": 1' + "0" * 400 + "}",
        "[1, 2]",
        '{"arrival": 1}',
    ]
    log.write_text("\n".join([json.dumps(r) for r in good] + bad) + "\n")
    result = cli_runner.invoke(cli, ["stats", str(log), "--jsonl"])
    assert result.exit_code == 0, result.output
    assert f"skipped {len(bad)} lines" in result.output
    assert json.loads(result.output.splitlines()[-1])["received"] == 4


def test_stats_says_when_times_cannot_share_a_grid(tmp_path: Path, cli_runner: CliRunner) -> None:
    log = tmp_path / "ticks.jsonl"
    log.write_text('{"onset": 0, "arrival": 0}\n{"onset": 1e12, "arrival": 1e12}\n')
    result = cli_runner.invoke(cli, ["stats", str(log), "--bpm", "1e308"])
    assert result.exit_code == 1 and "too far apart" in result.output


def test_sweep_tiny_run_writes_table_csv_json_and_plot(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    require_module("matplotlib")
    csv_path, json_path, png = tmp_path / "s.csv", tmp_path / "s.json", tmp_path / "s.png"
    result = cli_runner.invoke(
        cli,
        [
            "timetag", "sweep", "--offsets", "0,15ms,60ms", "--delay", "20ms", "--jitter", "8ms",
            "--ticks", "10", "--bpm", "600", "--seed", "4",
            "--csv", str(csv_path), "--json-out", str(json_path), "--plot", str(png),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "inter-onset std" in result.output and "late" in result.output
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == tables.SWEEP_COLUMNS
    assert [float(r["offset_ms"]) for r in rows] == [0.0, 15.0, 60.0]
    assert json.loads(json_path.read_text()) == [
        {k: (float(v) if "." in v else int(v)) for k, v in row.items()} for row in rows
    ]
    late = [float(r["late_pct"]) for r in rows]
    assert late == sorted(late, reverse=True)  # more headroom, fewer late ticks
    assert late[0] == 100.0 and late[-1] == 0.0  # delay >= 12 ms > 0; 60 ms > 28 ms max delay
    # Too little offset: the ticks arrived late (the network), not played late (this machine).
    assert float(rows[0]["arrived_late_pct"]) == 100.0
    assert "arrived late" in result.output and "played late" in result.output
    jitter = [float(r["ioi_std_ms"]) for r in rows]
    assert jitter[-1] < 0.01 < jitter[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_rejects_bad_offsets(cli_runner: CliRunner) -> None:
    for bad in ("", "soon", "-5ms", "20"):
        result = cli_runner.invoke(cli, ["timetag", "sweep", "--offsets", bad])
        assert result.exit_code == 2, (bad, result.output)


def test_sweep_refuses_an_unwritable_output_before_it_runs(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    for option in ("--csv", "--json-out", "--json", "--plot"):
        target = tmp_path / "missing-dir" / "out"
        result = cli_runner.invoke(cli, ["timetag", "sweep", option, str(target)])
        assert result.exit_code == 2, (option, result.output)
        assert f"Invalid value for '{option}': cannot write {target}" in result.output
        assert "sweep:" not in result.output  # refused before the first run


@pytest.mark.parametrize("command", [["demo"], ["timetag", "sweep"]])
@pytest.mark.parametrize("skew", ["nan", "inf", "1e300", "-1e300"])
def test_lab_commands_refuse_a_skew_that_is_not_a_clock_offset(
    command: list[str], skew: str, cli_runner: CliRunner
) -> None:
    result = cli_runner.invoke(cli, [*command, "--skew", skew])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--skew'" in result.output


def test_demo_short_run_prints_the_table_and_the_verdict(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    result = cli_runner.invoke(cli, ["demo", "--duration", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "forward sync cut jitter from" in out
    assert "plain ticks" in out and "forward sync 50 ms" in out
    assert "A↔B spread" in out
    wavs = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert wavs == ["forward-A.wav", "forward-B.wav", "plain-A.wav", "plain-B.wav"]
    assert all(p.stat().st_size > 44 for p in tmp_path.glob("*.wav"))


def test_session_followers_agree_only_with_forward_sync() -> None:
    from oscsync.apps.netemlink import ImpairmentSpec
    from oscsync.clock import SystemClock

    link = ImpairmentSpec(delay=0.010, jitter=0.008)
    followers = (labrecords.FollowerSpec("A"), labrecords.FollowerSpec("B", skew=-0.2, sync=True))
    runs = {}
    for offset, plain in ((0.0, True), (0.04, False)):
        spec = labrecords.SessionSpec(
            offset=offset, link=link, followers=followers, bpm=600, ticks=14, plain=plain, seed=2
        )
        runs[plain] = lab.run_session(spec, SystemClock())
    synced = runs[False]
    b = synced.followers[1]
    assert b.sync_offset is not None and b.sync_offset == pytest.approx(0.2, abs=0.009)
    scores = [scoring.score_follower(synced, f) for f in synced.followers]
    assert all(s.late == 0 and s.lost == 0 for s in scores)
    # Forward sync: the followers play within the clock-sync error (bounded by half the
    # fastest round trip, < 9 ms here), while plain ticks differ by the links' jitter.
    assert max(scoring.spread(synced)) < 0.009
    plain_spread = scoring.spread(runs[True])
    assert not math.isnan(scoring.p99(plain_spread))
    assert max(plain_spread) > max(scoring.spread(synced))


# -- issue 20, item 2: stats streams the file, bounds each line --------------------------------


def _tick_lines(count: int, start: int = 0) -> str:
    records = (
        {
            "seq": k,
            "beat": k % 4,
            "accent": k % 4 == 0,
            "arrival": 1000.0 + k * PERIOD - 0.05,
            "timetag": 1000.0 + k * PERIOD,
            "timetag_hex": "eeb06e3a.89bb5800",
            "onset": 1000.0 + k * PERIOD,
            "handled": 1000.0 + k * PERIOD,
            "late": False,
            "headroom_ms": 50.0,
            "source": "[::1]:9001",
        }
        for k in range(start, start + count)
    )
    return "".join(json.dumps(r) + "\n" for r in records)


def test_stats_line_of_100000_brackets_is_one_line_error_not_recursion_error(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    log = tmp_path / "ticks.jsonl"
    deep = "[" * 100_000 + "\n" + "[" * 50_000 + "\n" + '{"a":' * 20_000 + "\n"
    log.write_text(_tick_lines(4) + deep + _tick_lines(4, start=4))
    result = cli_runner.invoke(cli, ["stats", str(log), "--jsonl"])
    assert result.exit_code == 0, result.output
    assert "skipped 3 lines" in result.output
    assert json.loads(result.output.splitlines()[-1])["received"] == 8
    only = tmp_path / "deep.jsonl"
    only.write_text("[" * 100_000)
    result = cli_runner.invoke(cli, ["stats", str(only)])
    assert result.exit_code == 1
    assert result.output == f"Error: {only}: the log has no ticks\n"


class _Endless:
    """A file that never ends (``/dev/zero``, ``/dev/urandom``): each read returns ``piece``
    repeated; reading more than ``limit`` bytes fails the test instead of hanging it."""

    def __init__(self, piece: bytes, limit: int = 256 << 20) -> None:
        self.piece, self.limit, self.read = piece, limit, 0

    def readline(self, size: int = -1) -> bytes:
        end = self.piece.find(b"\n")
        chunk = self.piece[: end + 1] if end >= 0 else (self.piece * (size // len(self.piece) + 1))
        chunk = chunk[:size]
        self.read += len(chunk)
        assert self.read <= self.limit, "read on and on: no bound"
        return chunk

    def __enter__(self) -> _Endless:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize(
    ("piece", "message"),
    [
        (b"\x00", "line 1 goes on for more than 64 MiB: not a tick log"),  # /dev/zero
        (b"\x8f\x12garbage\n", "none of the first 10,000 lines is a tick record"),  # urandom
        (b"\n", "none of the first 10,000 lines is a tick record"),  # yes ''
    ],
)
def test_stats_of_a_file_that_never_ends_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: bytes, message: str
) -> None:
    """Issue 27, item 13: ``stats /dev/zero`` ran forever at 100 % CPU (one endless "line",
    skipped a piece at a time). What is read of a file is bounded, whatever it is."""
    from oscsync.apps import ticklog

    endless = _Endless(piece)
    path = tmp_path / "endless"
    monkeypatch.setattr(Path, "open", lambda self, *args, **kwargs: endless)
    with pytest.raises(ticklog.LogError, match=message):
        ticklog.read_log(path)
    assert endless.read <= ticklog.MAX_SKIPPED_LINE_BYTES + (1 << 20)


def test_stats_names_a_file_with_no_tick_record_in_one_line(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    log = tmp_path / "not-a-log.jsonl"
    log.write_text('{"some": "json"}\n' * 10_001)
    result = cli_runner.invoke(cli, ["stats", str(log)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {log}: none of the first 10,000 lines is a tick record: not a tick log\n"
    )


def test_stats_streams_the_file_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    from oscsync.apps import ticklog

    log = tmp_path / "ticks.jsonl"
    with log.open("w") as out:
        out.write(_tick_lines(20_000))  # 5 MB of records
        out.write("x" * 20_000_000 + "\n")  # one 20 MB line
        out.write(_tick_lines(20_000, start=20_000))
    tracemalloc.start()
    try:
        times = ticklog.read_log(log)
        score, period = ticklog.score_log(times, bpm=240)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (score.received, score.lost, times.bad) == (40_000, 0, 1)
    assert period == PERIOD
    assert peak < 3_000_000  # the file is 25 MB; 40,000 ticks in arrays are 0.7 MB


def test_stats_refuses_more_ticks_than_it_holds(tmp_path: Path) -> None:
    from oscsync.apps import ticklog

    log = tmp_path / "ticks.jsonl"
    log.write_text(_tick_lines(11))
    with pytest.raises(ticklog.LogError, match="more than 10 ticks"):
        ticklog.read_log(log, max_ticks=10)


def test_stats_out_of_order_and_duplicate_ticks_score_like_in_order(tmp_path: Path) -> None:
    from oscsync.apps import ticklog

    ordered = tmp_path / "ordered.jsonl"
    shuffled = tmp_path / "shuffled.jsonl"
    lines = _tick_lines(12).splitlines(keepends=True)
    del lines[5]
    ordered.write_text("".join(lines))
    shuffled.write_text("".join(lines[6:] + lines[:6] + lines[2:3]))
    first = ticklog.score_log(ticklog.read_log(ordered))
    second = ticklog.score_log(ticklog.read_log(shuffled))
    assert first == second
    assert (first[0].received, first[0].lost) == (11, 1)


def test_sweep_on_a_terminal_keeps_its_note_its_bar_and_its_table_on_their_own_lines() -> None:
    """Issue 30 item 10: the note was drawn after the bar had started, on the bar's line."""
    parent, child = pty.openpty()
    args = oscsync_command("timetag", "sweep", "--offsets", "0", "--ticks", "4")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    screen = b""
    try:
        while chunk := _read_pty(parent):
            screen += chunk
    finally:
        os.close(parent)
        assert proc.wait(60) == 0
    # A terminal shows what is after the last carriage return of each line.
    lines = [line.split("\r")[-1] for line in screen.decode().replace("\r\n", "\n").split("\n")]
    shown = [line for line in lines if line.strip()]
    assert shown[0].startswith("sweep: 1 offset × 4 ticks"), shown
    assert "sweep  [" in shown[1], shown
    assert shown[2].startswith("offset  inter-onset std"), shown


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other side closed
        return b""
