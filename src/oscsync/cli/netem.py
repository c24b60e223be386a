"""``oscsync netem``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from oscsync.apps.netem import (
    DEFAULT_QUEUE_LIMIT,
    DISTRIBUTIONS,
    ImpairmentSpec,
    Relay,
    forwards_to_itself,
)
from oscsync.cli.params import DURATION, LISTEN, PEER, PERCENT, DurationType
from oscsync.cli.peers import resolve_peer
from oscsync.cli.runtime import AppContext, running, wait
from oscsync.hostport import HostPort

F = TypeVar("F", bound=Callable[..., Any])

DELAY = DurationType(minimum=0.0, maximum=10.0)


def impairment_options(delay: float = 0.0, jitter: float = 0.0) -> Callable[[F], F]:
    """The link options, shared with ``timetag sweep`` (which defaults to a jittery link)."""
    options = [
        click.option(
            "--delay", type=DELAY, default=delay, show_default=True, help="Mean one-way delay."
        ),
        click.option(
            "--jitter",
            type=DELAY,
            default=jitter,
            show_default=True,
            help="Spread of the delay: ± half-width for uniform, standard deviation otherwise.",
        ),
        click.option(
            "--dist",
            type=click.Choice(DISTRIBUTIONS),
            default="uniform",
            show_default=True,
            help="Delay distribution (pareto: a heavy tail of late packets, like Wi-Fi retries).",
        ),
        click.option(
            "--loss", type=PERCENT, default="0%", show_default=True, help="Datagrams lost."
        ),
        click.option(
            "--duplicate",
            type=PERCENT,
            default="0%",
            show_default=True,
            help="Datagrams sent twice.",
        ),
        click.option(
            "--reorder/--no-reorder",
            default=True,
            show_default=True,
            help="Let jitter reorder datagrams (--no-reorder queues them instead).",
        ),
        click.option(
            "--seed", type=int, default=None, help="Seed for reproducible runs (same draws)."
        ),
    ]

    def apply(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return apply


@click.command(
    epilog="""\b
Examples:
  oscsync netem --listen 9000 --forward 127.0.0.1:9001 --delay 20ms --jitter 15ms
  oscsync netem -l 9000 -f 127.0.0.1:9001 --delay 30ms --jitter 10ms --dist pareto --loss 1%
  oscsync metronome send --peer 127.0.0.1:9000 --offset 50ms   # then send through it
"""
)
@click.option(
    "--listen",
    "-l",
    type=LISTEN,
    required=True,
    help="Where senders send to (port 0 picks a free one).",
)
@click.option(
    "--forward",
    "-f",
    type=PEER,
    required=True,
    metavar="HOST:PORT",
    help="Where datagrams go on to.",
)
@impairment_options()
@click.option(
    "--queue-limit",
    type=click.IntRange(min=1),
    default=DEFAULT_QUEUE_LIMIT,
    show_default=True,
    help="Datagrams held at once; more are dropped (counted).",
)
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@click.pass_obj
def netem(
    app: AppContext,
    listen: HostPort,
    forward: HostPort,
    queue_limit: int,
    duration: float | None,
    delay: float,
    jitter: float,
    dist: str,
    loss: float,
    duplicate: float,
    reorder: bool,
    seed: int | None,
) -> None:
    """Relay UDP from --listen to --forward with delay, jitter, loss and duplicates.

    A userspace stand-in for Linux netem (which needs root): whatever the far side sends back
    returns to the original sender through the same impairment, so clock pings see the same
    network as the ticks. Ctrl-C stops and reports the delay distribution actually achieved.
    """
    forward = resolve_peer(forward)
    if forwards_to_itself(listen, forward):
        raise click.BadParameter(
            f"{forward} is the --listen address: the relay would send every datagram to itself",
            param_hint="'--forward'",
        )
    spec = ImpairmentSpec(delay, jitter, dist, loss, duplicate, reorder)
    with running():
        relay = Relay(
            listen,
            forward,
            spec,
            seed=seed,
            clock=app.clock,
            queue_limit=queue_limit,
            on_warning=app.warn,
        )
        try:
            relay.start()
            app.note(f"netem: {relay.local_address} -> {forward}, {spec.describe()}")
            wait(threading.Event(), app.clock, duration)
        finally:
            relay.close()
            click.echo(relay.report(), err=True)
