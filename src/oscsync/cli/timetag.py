"""``oscsync timetag``: the time as OSC sees it (and, with the scheduler, live monitoring)."""

from __future__ import annotations

import sys

import click

from oscsync.apps.monitor import DEFAULT_WINDOW, LIVE_REFRESH, MonitorView, summary
from oscsync.apps.receiving import ReceiveSession
from oscsync.cli.hangup import hangup_stops
from oscsync.cli.params import DURATION, allow_option, iface_option, listen_option
from oscsync.cli.runtime import AppContext, leave_without_stdout, pass_app, running, stdout_is_tty
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort
from oscsync.osc import timetag as tt


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
@pass_app
def now(app: AppContext, fmt: str) -> None:
    """Print the current time as an OSC timetag.

    OSC timetags count from 1900-01-01 (NTP); Unix time (and python-osc's API) counts from
    1970-01-01. The two differ by 2,208,988,800 seconds.
    """
    now = app.clock.now()
    stamp = tt.from_unix(now)
    # The era (2036 and after: era 1) is the one nearest now (RFC 5905 §6).
    if fmt != "all":
        click.echo(tt.FORMATS[fmt](stamp, now))
        return
    for name in ("hex", "ntp", "unix", "iso"):
        click.echo(f"{name:<5} {tt.FORMATS[name](stamp, now)}")


@timetag.command(
    epilog="""\b
Examples:
  oscsync timetag monitor                          # listen on 127.0.0.1:9001
  oscsync send 127.0.0.1:9001 /tick 1 --in 0.25 --repeat 20 --interval 0.1
  oscsync timetag monitor --listen 0.0.0.0:9001 --jsonl | jq .headroom_ms
"""
)
@listen_option()
@allow_option()
@iface_option()
@click.option("--jsonl", is_flag=True, help="One JSON object per bundle.")
@click.option(
    "--window",
    type=click.IntRange(min=1, max=100_000),
    default=DEFAULT_WINDOW,
    show_default=True,
    help="Bundles the rolling statistics cover.",
)
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many bundles.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@pass_app
def monitor(
    app: AppContext,
    listen: HostPort,
    allow: tuple[Network, ...],
    iface: str | None,
    jsonl: bool,
    window: int,
    count: int | None,
    duration: float | None,
) -> None:
    """Show each bundle's headroom as it arrives.

    Headroom is the bundle's timetag minus its arrival time, in ms. Positive: the bundle arrived
    before its time and can be played exactly on it; negative: it arrived late. This is what
    Pure Data's [unpackOSC] reports on its second outlet. Rolling mean, standard deviation, min,
    max and late count cover the last --window bundles. On a terminal one line is refreshed in
    place; piped, one line per bundle.
    """
    mode = "jsonl" if jsonl else ("live" if stdout_is_tty() else "lines")
    clock = app.clock
    live = app.live_line() if mode == "live" else None
    view = MonitorView(sys.stdout, clock, mode=mode, window=window, count=count, live=live)
    app.keep_time()
    with running(), hangup_stops():
        session = ReceiveSession(listen, (), app.setup(allow, iface, clock=clock))
        try:
            app.note(f"monitoring timetags on {session.endpoint.local_address}")
            session.start(view.on_message)
            deadline = None if duration is None else clock.monotonic() + duration
            while not view.done.is_set():
                remaining = LIVE_REFRESH if deadline is None else deadline - clock.monotonic()
                if remaining <= 0:
                    break
                clock.wait(view.done, min(LIVE_REFRESH, remaining))
                view.refresh()
        finally:
            # As dump does: a closed or blocked stdout must not turn a stop into a hang or a
            # traceback (issue 20, item 10).
            receiver_stopped = session.close()
            stdout_usable = receiver_stopped and view.finish()
            app.live = None
            if stdout_usable:
                try:
                    sys.stdout.flush()
                except BrokenPipeError:
                    stdout_usable = False
            app.note(f"{summary(view.monitor)}; {app.realtime_text()}")
            if not stdout_usable:
                leave_without_stdout(stopped_cleanly=receiver_stopped)


# ``timetag sweep`` lives in its own module (it drives netem and the metronome).
from oscsync.cli.sweep import sweep  # noqa: E402

timetag.add_command(sweep)
