"""``oscsync stats``: summarise ``metronome listen --log`` files like ``timetag sweep`` does."""

from __future__ import annotations

import json
from pathlib import Path

import click

from oscsync.cli.params import NumberRange, renamed_option
from oscsync.cli.runtime import AppContext, pass_app
from oscsync.terminal.wording import plural


@click.command(
    epilog="""\b
Examples:
  oscsync metronome listen --log ticks.jsonl --count 64 --audio none
  oscsync stats ticks.jsonl
  for o in 0 0.02 0.05; do ... --log run-$o.jsonl; done; oscsync stats run-*.jsonl --bpm 240
"""
)
@click.argument(
    "logs",
    nargs=-1,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="LOG.jsonl...",
)
@click.option(
    "--bpm",
    type=NumberRange(0, min_open=True, example="120 for two beats a second"),
    help="The sender's tempo (default: the median interval between ticks).",
)
@click.option(
    "--jsonl", "as_json", is_flag=True, help="One JSON object per log and line instead of a table."
)
@renamed_option("--json", "--jsonl", "old_json", is_flag=True)
@pass_app
def stats(
    app: AppContext, logs: tuple[Path, ...], bpm: float | None, as_json: bool, old_json: bool
) -> None:
    """Summarise tick logs: inter-onset std, max |onset − grid|, arrived/played late %, lost.

    Tick numbers come from the timetags (or arrival times of plain ticks) on the beat grid, so
    a missing tick shows up as lost. Late is more than 1 ms after the timetag: arrived late
    (after it) or played late (in time, played late by this machine); a log from before the two
    were logged apart is split by its arrival times. Lines that are not tick records are
    skipped and counted.
    """
    from oscsync.apps import tables, ticklog
    from oscsync.files.kinds import file_kind

    as_json = as_json or old_json

    rows = []
    for path in logs:
        if file_kind(path) == "recording":
            raise click.ClickException(
                f"{path}: this is a recording (oscsync record), not a tick log: send it again "
                f"with `oscsync replay {path} --peer HOST:PORT`; `oscsync metronome listen "
                "--log ticks.jsonl` writes a tick log"
            )
        try:
            times = ticklog.read_log(path)
            result, period = ticklog.score_log(times, bpm)
        except ticklog.LogError as exc:
            raise click.ClickException(f"{path}: {exc}") from None
        if times.bad:
            app.warn(f"{path}: skipped {plural(times.bad, 'line')} that are not tick records")
        row = {"file": str(path), "period_ms": round(period * 1e3, 4), **result.row()}
        rows.append(row)
        if as_json:
            click.echo(json.dumps(row, separators=(",", ":")))
    if not as_json:
        click.echo(tables.format_table(rows, first="file"))
