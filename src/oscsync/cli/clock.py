"""``oscsync clock``."""

from __future__ import annotations

import click

from oscsync.apps.clock import measure_peer
from oscsync.cli.params import DURATION, PEER
from oscsync.cli.peers import resolve_peer
from oscsync.cli.runtime import AppContext, running
from oscsync.hostport import HostPort
from oscsync.transport import Endpoint


@click.command(
    epilog="""\b
Examples:
  oscsync clock --peer 127.0.0.1:9001              # any oscsync listener answers
  oscsync --clock-skew 0.15 dump -l 9001 &          # a listener 150 ms ahead ...
  oscsync clock --peer 127.0.0.1:9001 --count 32   # ... measured: offset +150 ms
"""
)
@click.option(
    "--peer", "-p", type=PEER, required=True, metavar="HOST:PORT|@NAME", help="Who to ask."
)
@click.option(
    "--count", "-c", type=click.IntRange(1, 1000), default=16, show_default=True, help="Pings."
)
@click.option(
    "--interval", type=DURATION, default=0.02, show_default=True, help="Seconds between pings."
)
@click.option(
    "--timeout",
    type=DURATION,
    default=1.0,
    show_default=True,
    help="How long to wait for the last answers.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.pass_obj
def clock(
    app: AppContext, peer: HostPort, count: int, interval: float, timeout: float, as_json: bool
) -> None:
    """Measure how far a peer's clock is from this one (and the round trip to it).

    Sends COUNT clock pings (/oscsync/clock/ping) to an oscsync listener, which answers with its
    own time. Like NTP, the estimate comes from the exchange with the shortest round trip, and
    the true offset is within half that round trip of it (the ± figure). Positive: the peer's
    clock is ahead of this one.
    """
    peer = resolve_peer(peer)
    with running(), Endpoint(peers=[peer], clock=app.clock, on_warning=app.warn) as endpoint:
        report = measure_peer(endpoint, count=count, interval=interval, timeout=timeout)
        click.echo(report.json() if as_json else report.text())
        if report.estimate is None:
            raise click.ClickException(
                f"no answer from {peer} (is an oscsync listener running there?)"
            )
