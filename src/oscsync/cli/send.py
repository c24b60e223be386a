"""The ``oscsync send`` command: its options and output (the work: :mod:`oscsync.apps.send`)."""

from __future__ import annotations

import difflib
import re

import click

from oscsync.apps.send import (
    ArgumentError,
    Packet,
    SendProgress,
    infer_value,
    send_to,
    typed_values,
)
from oscsync.cli.params import PEER, TIMETAG, DurationType, framing_option, iface_option
from oscsync.cli.peers import resolve_peers
from oscsync.cli.runtime import AppContext, pass_app, running
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort
from oscsync.osc import codec, timetag
from oscsync.terminal.wording import plural

_LOOKS_LIKE_AN_OPTION = re.compile(r"--?[A-Za-z]")

FAR_AHEAD = DurationType(maximum=1e9)
"""``--in`` and ``--interval``: under 68 years, so that a timetag that far ahead is still read as
ahead (:func:`oscsync.osc.timetag.difference`; ``--in 5e9`` wrapped to 22 years, ``1e12`` into
the past), and under the longest wait a thread can make (``threading.TIMEOUT_MAX``)."""


def _is_number(word: str) -> bool:
    """``-1``, ``-0.5``, ``-1e3``, ``-0x1f``: data for an OSC argument, never an option."""
    for parse in (float, lambda text: int(text, 0)):
        try:
            parse(word)
        except ValueError:
            continue
        return True
    return False


class DataArgumentsCommand(click.Command):
    """A command whose last argument takes any words, including negative numbers, as data.

    A word that looks like an option but is none of the command's (``--inn`` for ``--in``) is
    refused with the nearest option, instead of silently becoming OSC data (issue 30); after
    ``--`` every word is data. click is then handed the options first and every argument after
    a ``--`` of its own, so that it never reads ``-inf`` or ``-1n`` as short options.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {name: False for name in ctx.help_option_names}
        for param in self.params:
            if isinstance(param, click.Option):
                for name in param.opts + param.secondary_opts:
                    takes_value[name] = not param.is_flag and not param.count
        options: list[str] = []
        words: list[str] = []
        given = iter(args)
        for word in given:
            if word == "--":
                words.extend(given)
                break
            name = word.partition("=")[0] if word.startswith("--") else word[:2]
            if word.startswith("-") and name in takes_value:
                attached = word != name  # --in=0.25, -n3
                options.append(word)
                if takes_value[name] and not attached:
                    value = next(given, None)
                    if value is None:
                        raise click.BadOptionUsage(name, f"{name} needs a value", ctx=ctx)
                    options.append(value)
                elif attached and not takes_value[name]:
                    self._refuse(ctx, word)
                continue
            if _LOOKS_LIKE_AN_OPTION.match(word) and not _is_number(word):
                self._refuse(ctx, word)
            words.append(word)
        return super().parse_args(ctx, [*options, "--", *words])

    def _refuse(self, ctx: click.Context, word: str) -> None:
        name = word.partition("=")[0]
        long_names = [
            opt[2:]
            for param in self.params
            if isinstance(param, click.Option)
            for opt in param.opts + param.secondary_opts
            if opt.startswith("--")
        ]
        close = difflib.get_close_matches(name.lstrip("-"), long_names, n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        raise click.NoSuchOption(
            name,
            message=f"no such option: {name}{hint}; to send {word!r} as an argument, "
            "write -- before the arguments",
            ctx=ctx,
        )


@click.command(
    cls=DataArgumentsCommand,
    epilog="""\b
Examples:
  oscsync send 127.0.0.1:9001 /chat "hello world"
  oscsync send 127.0.0.1:9001 /synth/freq 440.0 -1 true
  oscsync send 127.0.0.1:9001 /chat -- --verbose       # -- first: words like options as data
  oscsync send 127.0.0.1:9001 /raw --types ihdsb 7 9000000000 0.5 text cafe
  oscsync send 127.0.0.1:9001 /all -t 'Sctr[ifI]' sym x dd9d15a7.922f48c2 ff0000ff 1 0.5
  oscsync send 127.0.0.1:9001 '/{left,right}/gain' 0.5   # an address pattern
  oscsync send 127.0.0.1:9001 /tick 0 --in 0.25        # a bundle due 250 ms from now
  oscsync send 127.0.0.1:9001 /go --at 20:30Z         # a bundle for the next 20:30 UTC
  oscsync send 239.0.0.1:9001 /tick 1 --repeat 8 --interval 0.5
  oscsync send @alice /chat hi                         # a peer advertised as alice
  oscsync send tcp://127.0.0.1:9001 /chat hi           # over TCP (SLIP framing, OSC 1.1)
""",
)
@click.argument("peer", type=PEER, metavar="HOST:PORT|@NAME")
@click.argument("address")
@click.argument("args", nargs=-1)
@click.option(
    "--types",
    "-t",
    metavar="TAGS",
    help="Type tags for ARGS, as liblo's oscsend: i h f d s S (symbol) c (one character) "
    "t (a timetag, as --at takes it) b m r (hex: blob, 4-byte MIDI, RGBA) and T F N I "
    "(true false nil infinitum) and [ ] (an array), which take no ARG. "
    "Without it: ints, floats, true/false/nil, else strings.",
)
@click.option(
    "--in",
    "ahead",
    type=FAR_AHEAD,
    help="Send in a bundle timetagged this far ahead.",
)
@click.option(
    "--at",
    "at",
    type=TIMETAG,
    help="Send in a bundle with this timetag: hex (dd9d15a7.922f48c2 or 16 digits), Unix "
    "seconds, ISO-8601, or a time of day such as 20:30Z (the next 20:30 UTC).",
)
@click.option("--repeat", "-n", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--interval", type=FAR_AHEAD, default=1.0, show_default=True, help="Seconds between repeats."
)
@click.option(
    "--also", "more_peers", type=PEER, multiple=True, metavar="HOST:PORT", help="Another peer."
)
@iface_option()
@framing_option()
@pass_app
def send(
    app: AppContext,
    peer: HostPort,
    address: str,
    args: tuple[str, ...],
    types: str | None,
    ahead: float | None,
    at: int | None,
    repeat: int,
    interval: float,
    more_peers: tuple[HostPort, ...],
    iface: str | None,
    framing: Framing,
) -> None:
    """Send one OSC message (optionally in a timetagged bundle) to HOST:PORT.

    ADDRESS is the OSC address (it starts with '/'). Each ARG becomes one OSC argument.
    """
    if ahead is not None and at is not None:
        raise click.UsageError("use --in or --at, not both")
    try:
        values = typed_values(args, types) if types is not None else [infer_value(a) for a in args]
        message = codec.encode_message(address, values, types)
    except (ArgumentError, codec.EncodeError) as exc:
        raise click.UsageError(str(exc)) from None
    if at is not None and at != timetag.IMMEDIATELY:
        behind = timetag.difference(app.clock.now_timetag(), at)
        if behind > 0:
            app.warn(
                f"--at {timetag.format_iso(at)} is {behind:.3f} s in the past: receivers will "
                "count the bundle late and act on it at once"
            )
    packet = Packet(message, at=at, ahead=ahead)
    targets = resolve_peers((peer, *more_peers))  # @NAME -> address, now (not while parsing)
    progress = SendProgress()
    with running(interrupted_exit=True):
        try:
            send_to(
                targets,
                packet,
                app.clock,
                repeat,
                interval,
                progress,
                warn=app.warn,
                multicast_interface=iface,
                framing=framing,
                auth=app.auth,
            )
        finally:
            if repeat > 1 and progress.packets < repeat:
                app.note(f"send: stopped after {progress.packets} of {plural(repeat, 'packet')}")
        if progress.delivered == 0:
            # Exit 1, not 0: a script must not take "Message too long" for a success (#13).
            raise click.ClickException("nothing was sent (see the warning above)")
        if not progress.written:
            raise click.ClickException("could not send to every peer (see the warning above)")
        if progress.refused:
            raise click.ClickException(
                f"could not deliver {progress.refused} of "
                f"{plural(progress.datagrams, 'datagram')}: refused, nothing listens there (see "
                "the warning above)"
            )
