"""``oscsync timetag sweep``: the forward-sync experiment at several offsets, as a table."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from oscsync.apps.netemlink import ImpairmentSpec
from oscsync.cli.netem import impairment_options
from oscsync.cli.params import (
    bpm_range,
    collect,
    overwrite_option,
    parse_duration,
    refuse_existing,
    renamed_option,
    skew_option,
)
from oscsync.cli.runtime import AppContext, pass_app, running
from oscsync.install import install_hint
from oscsync.outfile import open_output
from oscsync.terminal.wording import plural


def _offsets(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        offsets = [parse_duration(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not offsets:
        raise click.BadParameter("give at least one offset, e.g. 0,10ms,50ms")
    if any(not 0 <= offset <= 10 for offset in offsets):
        raise click.BadParameter("offsets must be between 0 and 10 s")
    return offsets


@click.command(
    epilog="""\b
Examples:
  oscsync timetag sweep                                   # 20 ms ± 15 ms uniform link
  oscsync timetag sweep --offsets 0,10ms,30ms,50ms --dist pareto --csv sweep.csv
  oscsync timetag sweep --skew 0.2 --sync --plot sweep.png   # a follower 200 ms ahead, synced
"""
)
@click.option(
    "--offsets",
    default="0,5ms,10ms,20ms,40ms,80ms",
    show_default=True,
    callback=_offsets,
    help="Comma-separated forward offsets to try.",
)
@impairment_options(delay=0.020, jitter=0.015)
@click.option("--ticks", type=click.IntRange(4, 10_000), default=64, show_default=True)
@click.option("--bpm", type=bpm_range(30, 1200), default=240.0, show_default=True)
@skew_option(0.0, "Follower clock skew (s).")
@click.option(
    "--sync/--no-sync", default=False, show_default=True, help="Follower syncs to the leader."
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the table to this CSV file.",
)
@click.option(
    "--json-out",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the table to this file as one JSON array of rows.",
)
@renamed_option(
    "--json", "--json-out", "old_json_path", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw jitter and late % against offset into a PNG (needs matplotlib: the [plot] extra).",
)
@overwrite_option("the --csv, --json-out and --plot files")
@pass_app
@collect("link", ImpairmentSpec)
def sweep(
    app: AppContext,
    offsets: list[float],
    link: ImpairmentSpec,
    seed: int | None,
    ticks: int,
    bpm: float,
    skew: float,
    sync: bool,
    csv_path: Path | None,
    json_path: Path | None,
    old_json_path: Path | None,
    plot_path: Path | None,
    overwrite: bool,
) -> None:
    """Run leader → netem → follower at each forward offset and tabulate how steady it was.

    Every offset is a fresh run (in this process) of TICKS ticks, each in a bundle timetagged
    OFFSET after its grid time, through a netem link. Columns: standard deviation of the
    intervals between onsets, the largest distance of an onset from the ideal grid, the share of
    ticks that arrived late (after their timetag: played on arrival) and of those played late
    (in time, but played more than 1 ms after it), and ticks lost. The first bar is a count-in
    and is not scored.
    """
    from oscsync.apps import lab, labrecords, tables

    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError(f"--plot needs matplotlib: {install_hint('plot')}") from None
    json_option = "--json-out"
    if json_path is None and old_json_path is not None:
        json_path, json_option = old_json_path, "--json"
    # Named pipes are opened now (their reader must be there: never a wait, never a surprise
    # after minutes of sweeping) and kept open until the results are written.
    pipes: dict[Path, IO[Any]] = {}
    for path, option in ((csv_path, "--csv"), (json_path, json_option), (plot_path, "--plot")):
        _check_writable(path, option, overwrite, pipes)
    follower = labrecords.FollowerSpec("follower", skew=skew, sync=sync)
    rows = []
    app.keep_time()
    bar_shown = sys.stderr.isatty()

    def warn(text: str) -> None:
        if bar_shown:
            click.echo("\r\x1b[K", nl=False, err=True)  # not on the bar's line (issue 30)
        app.warn(text)

    with running() as run:
        # Inside running(): a Ctrl-C right after this line is a clean stop too. Before the bar:
        # printed after it, the note shared the bar's line.
        app.note(
            f"sweep: {plural(len(offsets), 'offset')} × {ticks} ticks at {bpm:g} bpm; "
            f"{link.describe()}"
        )
        with click.progressbar(
            offsets,
            label="sweep",
            file=sys.stderr,
            show_pos=True,
            item_show_func=_show,
            # Piped, click would print the bare label once: nothing is better.
            hidden=not bar_shown,
        ) as progress:
            for offset in progress:
                spec = labrecords.SessionSpec(
                    offset=offset,
                    link=link,
                    followers=(follower,),
                    bpm=bpm,
                    ticks=ticks,
                    seed=seed,
                    count_in=4 if ticks >= 12 else 1,
                )
                result = lab.run_session(spec, app.clock, on_warning=warn)
                rows.append(tables.sweep_row(offset, result))
    if len(rows) < len(offsets):
        app.warn("interrupted: the table shows the offsets that finished")
    click.echo(tables.format_table(rows))
    app.note(app.realtime_text())
    try:
        if csv_path is not None:
            with pipes.pop(csv_path, None) or open_output(csv_path) as out:
                tables.write_csv(out, rows)
        if json_path is not None:
            with pipes.pop(json_path, None) or open_output(json_path) as out:
                out.write(json.dumps(rows, indent=1) + "\n")
        if plot_path is not None and rows:
            title = f"forward sync through {link.describe()}"
            with pipes.pop(plot_path, None) or open_output(plot_path, binary=True) as out:
                tables.plot_sweep(out, rows, title)
            app.note(f"plot: {plot_path}")
    except OSError as exc:  # checked at the start, but a disk can fill up during a sweep
        raise click.ClickException(f"cannot write the results: {exc.strerror or exc}") from None
    finally:
        for pipe in pipes.values():
            with contextlib.suppress(OSError):
                pipe.close()
    if run.stopped_by is not None:  # the partial table is out; a script must still know (#13)
        raise click.exceptions.Exit(run.exit_code)


def _check_writable(
    path: Path | None, option: str, overwrite: bool, pipes: dict[Path, IO[Any]]
) -> None:
    """Fail before the sweep, not after minutes of it, when an output file cannot be written:
    an existing one without --overwrite, or one that cannot be opened. A named pipe is opened
    into ``pipes`` (closing it again would end its reader's input)."""
    if path is None:
        return
    refuse_existing(path, overwrite, f"'{option}'")
    if path.is_fifo():
        try:
            pipes[path] = open_output(path, binary=option == "--plot")
        except OSError as exc:
            raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    try:
        path.open("a").close()  # "a": an existing file is kept until the results replace it
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write {path}: {exc.strerror}", param_hint=f"'{option}'"
        ) from None


def _show(offset: float | None) -> str | None:
    return None if offset is None else f"offset {offset * 1e3:g} ms"
