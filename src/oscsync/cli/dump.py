"""The ``oscsync dump`` command: its options and output (the work: :mod:`oscsync.apps.dump`)."""

from __future__ import annotations

import sys

import click

from oscsync.apps.dump import Dumper, handler, summary
from oscsync.apps.receiving import ReceiveSession
from oscsync.cli.hangup import hangup_stops
from oscsync.cli.params import (
    DURATION,
    advertise_option,
    allow_option,
    collect,
    iface_option,
    listen_option,
)
from oscsync.cli.peers import Advertising
from oscsync.cli.runtime import AppContext, leave_without_stdout, pass_app, running, wait
from oscsync.cli.scheduling import horizon_option, late_option
from oscsync.cli.syncing import Syncing, sync_options
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort
from oscsync.scheduler import DEFAULT_HORIZON, KEEP, LatePolicy
from oscsync.sync.follow import ClockFollower


@click.command(
    epilog="""\b
Examples:
  oscsync dump                              # listen on 127.0.0.1:9001
  oscsync dump --listen 0.0.0.0:9000        # accept OSC from the network
  oscsync dump --jsonl --count 10 | jq .args
  oscsync dump --listen 239.1.2.3:9001 --iface 127.0.0.1   # a multicast group
  oscsync dump --schedule                   # print each message when its timetag is due
  oscsync dump --schedule --late drop:5ms   # ... and drop bundles more than 5 ms late
  oscsync dump --listen 0.0.0.0:9001 --advertise alice   # partners send to @alice
  oscsync dump --listen 0.0.0.0:9001 --sync      # timetags on this clock, from the sender's
"""
)
@listen_option()
@allow_option()
@iface_option()
@click.option("--jsonl", is_flag=True, help="One JSON object per line instead of text.")
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@click.option(
    "--schedule",
    is_flag=True,
    help="Hold each bundle until its timetag and print it then (plain messages at once), "
    "instead of printing on arrival.",
)
@late_option()
@horizon_option()
@sync_options("the sender", "a timetagged message")
@advertise_option()
@pass_app
@collect("syncing", Syncing)
def dump(
    app: AppContext,
    listen: HostPort,
    allow: tuple[Network, ...],
    iface: str | None,
    jsonl: bool,
    count: int | None,
    duration: float | None,
    schedule: bool,
    late_policy: LatePolicy | None,
    horizon: float | None,
    syncing: Syncing,
    advertise: str | None,
    interface: str,
) -> None:
    """Print every OSC message that arrives, as it arrives.

    Each line shows the arrival time (UTC), the sender, the bundle timetag with how far it is from
    now (+ = in the future) and the message. Strings are printed with control characters escaped.
    Ctrl-C stops and prints a summary of what was received and dropped.

    With --schedule each message is printed when its timetag comes due (OSC 1.0: a bundle with a
    past timetag at once, counted late); the line then shows when it was printed. Bundles still
    held when dump stops are discarded and counted.

    With --sync (or --sync-peer) the sender's clock is followed as metronome listen does: each
    timetag is shown translated onto this machine's clock, so its offset is the real headroom
    (and --schedule prints it when it is really due). Timetagged messages that arrive before the
    clock is locked are held and printed at lock; those already due then are counted, not printed.
    """
    if not schedule and (late_policy is not None or horizon is not None):
        raise click.UsageError("--late and --horizon only apply with --schedule")
    syncing = syncing.checked()
    # Unscheduled, lines are collected and written when the socket has nothing more to read
    # (endpoint.start(on_idle=...)); scheduled, each is written at its due time.
    dumper = Dumper(sys.stdout, jsonl=jsonl, count=count, flush_each=schedule)
    clock = app.clock
    app.keep_time()
    with (
        running(),
        hangup_stops(),
        Advertising(app, advertise, interface, role="dump", allow=allow) as advertised,
    ):
        session = ReceiveSession(
            listen,
            (),
            app.setup(allow, iface, clock=clock),
            schedule=schedule,
            late_policy=late_policy or KEEP,
            horizon=DEFAULT_HORIZON if horizon is None else horizon,
            # A plain message is printed by the receive thread, without waking the timer
            # thread: ~0.1 ms less head-of-line delay (issue 18, benchmarks/scheduler.py).
            inline_due=True,
        )
        try:
            app.note(f"listening on {session.endpoint.local_address}")
            follower = session.follow(
                syncing.sync,
                syncing.sync_peer,
                interval=syncing.sync_interval,
                start_interval=syncing.sync_start_interval,
            )
            session.start(
                handler(dumper, session.scheduler),
                follower,
                on_idle=None if schedule else dumper.flush,
            )
            with syncing.following(app, session.move_sync_peer):
                advertised.publish(session.endpoint.local_address, session.endpoint.registry)
                wait(dumper.done, clock, duration)
        finally:
            receiver_stopped = session.close()
            if receiver_stopped:
                dumper.flush()  # lines the receive loop collected after its last flush
            stdout_usable = receiver_stopped and not dumper.output_closed
            if stdout_usable:
                try:
                    sys.stdout.flush()
                except BrokenPipeError:
                    stdout_usable = False
            text = summary(session.endpoint.stats, dumper.written, dumper.skipped)
            if session.scheduler is None:
                app.note(f"{text}; {app.realtime_text()}")
            else:
                app.note(text)
                app.note(f"{session.scheduler.stats().summary()}; {app.realtime_text()}")
            if session.follower is not None:
                app.note(sync_summary(session.follower))
            if not stdout_usable:
                leave_without_stdout(stopped_cleanly=receiver_stopped)


def sync_summary(follower: ClockFollower) -> str:
    """The clock sync line: a message due before sync is dropped, so never printed."""
    return follower.describe("message", dropped="not printed")
