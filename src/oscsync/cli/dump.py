"""``oscsync dump``."""

from __future__ import annotations

import sys

import click

from oscsync.apps.dump import Dumper, summary
from oscsync.cli.params import DURATION, allow_option, iface_option, listen_option
from oscsync.cli.runtime import AppContext, running, wait
from oscsync.hostport import HostPort
from oscsync.transport import Endpoint, Network, Received


@click.command(
    epilog="""\b
Examples:
  oscsync dump                              # listen on 127.0.0.1:9001
  oscsync dump --listen 0.0.0.0:9000        # accept OSC from the network
  oscsync dump --jsonl --count 10 | jq .args
  oscsync dump --listen 239.1.2.3:9001 --iface 127.0.0.1   # a multicast group
"""
)
@listen_option()
@allow_option()
@iface_option()
@click.option("--jsonl", is_flag=True, help="One JSON object per line instead of text.")
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@click.pass_obj
def dump(
    app: AppContext,
    listen: HostPort,
    allow: tuple[Network, ...],
    iface: str | None,
    jsonl: bool,
    count: int | None,
    duration: float | None,
) -> None:
    """Print every OSC message that arrives, as it arrives.

    Each line shows the arrival time (UTC), the sender, the bundle timetag with how far it is from
    now (+ = in the future) and the message. Strings are printed with control characters escaped.
    Ctrl-C stops and prints a summary of what was received and dropped.
    """
    dumper = Dumper(sys.stdout, jsonl=jsonl, count=count)
    clock = app.clock

    def on_message(received: Received) -> None:
        dumper.write(received, clock.now())

    with running():
        endpoint = Endpoint(
            listen,
            allow=allow,
            clock=clock,
            on_warning=app.warn,
            multicast_interface=iface,
        )
        try:
            app.note(f"listening on {endpoint.local_address}")
            endpoint.start(on_message)
            wait(dumper.done, clock, duration)
        finally:
            endpoint.close()
            sys.stdout.flush()
            app.note(summary(endpoint.stats, dumper.written))
