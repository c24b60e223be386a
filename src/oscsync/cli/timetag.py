"""``oscsync timetag``: the time as OSC sees it (and, with the scheduler, live monitoring)."""

from __future__ import annotations

import click

from oscsync import timetag as tt
from oscsync.cli.runtime import AppContext


@click.group()
def timetag() -> None:
    """OSC timetags: print them, watch them arrive."""


@timetag.command()
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["hex", "unix", "iso", "ntp", "all"]),
    default="all",
    show_default=True,
    help="hex: liblo's notation (NTP seconds since 1900 . fraction); unix: seconds since 1970; "
    "ntp: seconds since 1900; iso: ISO-8601 UTC.",
)
@click.pass_obj
def now(app: AppContext, fmt: str) -> None:
    """Print the current time as an OSC timetag.

    OSC timetags count from 1900-01-01 (NTP); Unix time (and python-osc's API) counts from
    1970-01-01. The two differ by 2,208,988,800 seconds.
    """
    stamp = app.clock.now_timetag()
    if fmt != "all":
        click.echo(tt.FORMATS[fmt](stamp))
        return
    for name in ("hex", "ntp", "unix", "iso"):
        click.echo(f"{name:<5} {tt.FORMATS[name](stamp)}")
