"""The ``oscsync netem`` command: its options and output (the work: :mod:`oscsync.apps.netem`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from oscsync.apps.netem import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLIENTS, Relay, forwards_to_itself
from oscsync.apps.netemlink import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_LIMIT,
    DISTRIBUTIONS,
    HELD_OVERHEAD,
    ImpairmentSpec,
)
from oscsync.cli.params import (
    DURATION,
    PERCENT,
    RELAY_LISTEN,
    RELAY_PEER,
    DurationType,
    allow_option,
    collect,
    options,
)
from oscsync.cli.peers import following, resolve_peer
from oscsync.cli.runtime import AppContext, pass_app, running, wait
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort

F = TypeVar("F", bound=Callable[..., Any])

DELAY = DurationType(minimum=0.0, maximum=10.0)
IDLE_TIMEOUT = DurationType(minimum=0.1, maximum=24 * 3600.0)

_SIZE_UNITS = {
    **{"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3},
    **{"kib": 1024, "mib": 1024**2, "gib": 1024**3},
}


class ByteSizeType(click.ParamType):  # type: ignore[type-arg]
    """A size in bytes: ``65536``, ``512KiB``, ``32MiB``, ``1GiB`` (``KB``, ``MB``: 1,000-based)."""

    name = "bytes"

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        number = text.rstrip("BbIiKkMmGg")
        unit = text[len(number) :].lower()
        try:
            size = int(float(number) * _SIZE_UNITS[unit])
        except (KeyError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a size (e.g. 65536, 512KiB, 32MiB)", param, ctx)
        if not self.minimum <= size <= self.maximum:
            self.fail(
                f"{value} is not between {self.minimum:,} and {self.maximum:,} bytes", param, ctx
            )
        return size


QUEUE_BYTES = ByteSizeType(minimum=64 * 1024, maximum=4 * 1024**3)


def impairment_options(delay: float = 0.0, jitter: float = 0.0) -> Callable[[F], F]:
    """The link options, shared with ``timetag sweep`` (which defaults to a jittery link); with
    ``collect("link", ImpairmentSpec)`` the command takes them as one ``link``."""
    return options(
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
            "--seed",
            type=int,
            default=None,
            # Issue #13: "reproducible" promised the same table; only the draws are seeded.
            help="Seed the random draws: each datagram in turn gets the same delay, loss and "
            "duplication as in another run with this seed. This machine's own timing is not "
            "seeded, so results near a threshold (late or not) can still differ slightly.",
        ),
    )


@click.command(
    epilog="""\b
Examples:
  oscsync netem --listen 9000 --forward 127.0.0.1:9001 --delay 20ms --jitter 15ms
  oscsync netem -l 9000 -f 127.0.0.1:9001 --delay 30ms --jitter 10ms --dist pareto --loss 1%
  oscsync netem -l 0.0.0.0:9000 -f 127.0.0.1:9001 --allow 192.168.1.0/24 --delay 20ms
  oscsync metronome send --peer 127.0.0.1:9000 --offset 50ms   # then send through it
"""
)
@click.option(
    "--listen",
    "-l",
    type=RELAY_LISTEN,
    required=True,
    help="Where senders send to: 127.0.0.1 unless a HOST is given (port 0 picks a free one).",
)
@click.option(
    "--forward",
    "-f",
    type=RELAY_PEER,
    required=True,
    metavar="HOST:PORT",
    help="Where datagrams go on to.",
)
@impairment_options()
@allow_option()
@click.option(
    "--queue-limit",
    type=click.IntRange(min=1),
    default=DEFAULT_QUEUE_LIMIT,
    show_default=True,
    help="Datagrams held at once; more are dropped (counted).",
)
@click.option(
    "--queue-bytes",
    type=QUEUE_BYTES,
    default=f"{DEFAULT_QUEUE_BYTES // 1024**2}MiB",
    show_default=True,
    help=f"Bytes held at once (payload + {HELD_OVERHEAD} per datagram); more are dropped "
    "(counted).",
)
@click.option(
    "--max-senders",
    type=click.IntRange(1, 4096),
    default=DEFAULT_MAX_CLIENTS,
    show_default=True,
    help="Senders relayed at once (one socket each); a new one takes the least recently "
    "active one's socket.",
)
@click.option(
    "--idle-timeout",
    type=IDLE_TIMEOUT,
    default=DEFAULT_IDLE_TIMEOUT,
    show_default=True,
    help="Close a sender's socket after this long without traffic either way.",
)
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@pass_app
@collect("link", ImpairmentSpec)
def netem(
    app: AppContext,
    listen: HostPort,
    forward: HostPort,
    link: ImpairmentSpec,
    seed: int | None,
    allow: tuple[Network, ...],
    queue_limit: int,
    queue_bytes: int,
    max_senders: int,
    idle_timeout: float,
    duration: float | None,
) -> None:
    """Relay UDP from --listen to --forward with delay, jitter, loss and duplicates.

    A userspace stand-in for Linux netem (which needs root): whatever the far side sends back
    returns to the original sender through the same impairment, so clock pings see the same
    network as the ticks. Ctrl-C stops and reports the delay distribution actually achieved.

    Anyone who can reach --listen can reach --forward through the relay: it listens on loopback
    unless told otherwise, and --allow limits who may use it. Each sender gets its own socket
    towards --forward (closed when idle); what is held is bounded by --queue-limit and
    --queue-bytes.
    """
    given, forward = forward, resolve_peer(forward)
    if forwards_to_itself(listen, forward):
        raise click.BadParameter(
            f"{forward} leads back to --listen {listen}: the relay would send every datagram "
            "to itself",
            param_hint="'--forward'",
        )
    app.keep_time()
    with running():
        relay = Relay(
            listen,
            forward,
            link,
            seed=seed,
            clock=app.clock,
            queue_limit=queue_limit,
            queue_bytes=queue_bytes,
            max_clients=max_senders,
            idle_timeout=idle_timeout,
            allow=allow,
            on_warning=app.warn,
        )
        try:
            relay.start()
            app.note(f"netem: {relay.local_address} -> {forward}, {link.describe()}")
            # @NAME re-registered elsewhere: forward there from then on (issue 17).
            with following(app, (given,), (forward,), lambda to: relay.set_forward(to[0])):
                wait(threading.Event(), app.clock, duration)
        finally:
            relay.close()
            click.echo(f"{relay.report()}\n{app.realtime_text()}", err=True)
