"""The ``oscsync`` command: a group whose subcommands are imported only when used.

Start-up stays fast (no numpy, no sounddevice, no matplotlib until a command needs them): the
group knows each subcommand by ``module:attribute`` and imports it on demand (click's "lazy
subcommands" pattern; ``tests/test_cli_help.py`` runs ``--help`` on every one of them).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from oscsync import __version__
from oscsync.cli.params import NumberRange

F = TypeVar("F", bound=Callable[..., Any])

REALTIME_MODES = ("auto", "on", "off")
"""``--realtime``'s choices: :data:`oscsync.realtime.MODES`, written here so that ``--help``
imports nothing (tests/test_realtime.py holds them equal)."""

# name -> ("module:attribute", short help). Order here is the order in --help. The short help is
# written here too so that `oscsync --help` imports no subcommand (tests/test_cli_help.py checks
# it matches each command's docstring).
COMMANDS: dict[str, tuple[str, str]] = {
    "send": (
        "oscsync.cli.send:send",
        "Send one OSC message (optionally in a timetagged bundle) to HOST:PORT.",
    ),
    "dump": ("oscsync.cli.dump:dump", "Print every OSC message that arrives, as it arrives."),
    "record": (
        "oscsync.cli.record:record",
        "Record every OSC datagram that arrives, byte-exact with its arrival time, to FILE.",
    ),
    "replay": (
        "oscsync.cli.replay:replay",
        "Send a recording or a pcap capture again, with its timing, to one or more peers.",
    ),
    "timetag": ("oscsync.cli.timetag:timetag", "OSC timetags: print them, watch them arrive."),
    "chat": (
        "oscsync.cli.chat:chat",
        "Chat over OSC: each line you type is sent as /chat, each /chat received is printed.",
    ),
    "metronome": (
        "oscsync.cli.metronome:metronome",
        "A networked metronome: send /tick on a grid, play received ticks at their timetag.",
    ),
    "sequence": (
        "oscsync.cli.sequence:sequence",
        "A networked step sequencer: send a pattern file on the clock's grid, play it on time.",
    ),
    "bridge": (
        "oscsync.cli.bridge:bridge",
        "Follow a leader's clock and forward its OSC to an application that cannot.",
    ),
    "link": (
        "oscsync.cli.link:link",
        "Join the Ableton Link session on this network and show it: peers, tempo, beat, phase.",
    ),
    "audio": (
        "oscsync.cli.audio:audio",
        "Sound cards: list the output devices that --audio sounddevice can play on.",
    ),
    "clock": (
        "oscsync.cli.clock:clock",
        "Measure how far a peer's clock is from this one (and the round trip to it).",
    ),
    "netem": (
        "oscsync.cli.netem:netem",
        "Relay UDP from --listen to --forward with delay, jitter, loss and duplicates.",
    ),
    "stats": (
        "oscsync.cli.stats:stats",
        "Summarise tick logs: inter-onset std, max |onset − grid|, arrived/played late %, lost.",
    ),
    "peers": (
        "oscsync.cli.peers:peers",
        "List OSC services on the network (zeroconf), or advertise one for a Pure Data patch.",
    ),
    "demo": (
        "oscsync.cli.demo:demo",
        "Show forward synchronisation beating network jitter, on this machine, in ~10 s.",
    ),
}


def _global_option_hint(group: click.Group, ctx: click.Context, name: str) -> str | None:
    """Where a global option goes, when it was written after the subcommand (issue #13).

    ``ctx`` is the subcommand's context (its command path names the command to show).
    """
    for param in group.params:
        if isinstance(param, click.Option) and name in param.opts + param.secondary_opts:
            example = name if param.is_flag else f"{name} {param.make_metavar(ctx)}"
            command = ctx.command_path.partition(" ")[2] or "COMMAND"
            return (
                f"{name} is an option of oscsync itself: write it before the command, "
                f"e.g. oscsync {example} {command} ..."
            )
    return None


def _experiment_option(
    name: str, bound: float, example: str, metavar: str, help: str
) -> Callable[[F], F]:
    """A global option that pretends the clock is off: finite, within ±``bound``, 0 by default."""
    return click.option(
        name,
        type=NumberRange(-bound, bound, example=example),
        default=0.0,
        metavar=metavar,
        help=help,
    )


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is asked for."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy) + sorted(set(super().list_commands(ctx)) - set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attribute = self.lazy[cmd_name][0].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            hint = _global_option_hint(self, exc.ctx or ctx, exc.option_name)
            if hint is None:
                raise
            raise click.UsageError(hint, exc.ctx) from None
        except BrokenPipeError:
            # stdout went away (`oscsync timetag now | head -1`): the reader has what it wanted,
            # so end quietly with 0, as `dump | head` does (click's own handling exits 1).
            from oscsync.cli.runtime import leave_without_stdout

            leave_without_stdout(stopped_cleanly=True)
            ctx.exit(0)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own version imports every subcommand to read its short help.
        rows = [(name, short_help) for name, (_, short_help) in self.lazy.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  oscsync dump                                  # print what arrives on 127.0.0.1:9001
  oscsync send 127.0.0.1:9001 /chat hello      # send one message
  oscsync send 127.0.0.1:9001 /tick 1 --in 0.25  # ... in a bundle 250 ms ahead
  oscsync timetag now --format all             # the time as an OSC timetag
""",
)
@click.version_option(__version__, "-V", "--version", prog_name="oscsync")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only data, warnings and errors: no notices, no live status line.",
)
@_experiment_option(
    "--clock-skew",
    # A day either way is already absurd for an experiment; NaN and inf would break every clock.
    86400,
    "0.15",
    "SECONDS",
    "Pretend this machine's clock is SECONDS ahead (negative: behind), for experiments.",
)
@_experiment_option(
    "--clock-drift",
    100_000,
    "50",
    "PPM",
    "Pretend this machine's clock runs fast by PPM parts per million, for experiments.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="OSCSYNC_KEY_FILE",
    metavar="FILE",
    help="Sign clock pings, pongs and timetagged bundles with the shared key in FILE, and "
    "follow only a clock that signs with it (also OSCSYNC_KEY_FILE, or the key itself in "
    "OSCSYNC_KEY). The same key on every machine. There is no --key KEY: a command line is "
    "visible to every user of the machine (ps).",
)
@click.option(
    "--realtime",
    type=click.Choice(REALTIME_MODES),
    default="auto",
    show_default=True,
    envvar="OSCSYNC_REALTIME",
    help="Real-time priority for the threads that keep time (timer, receive): auto asks and "
    "falls back quietly, on fails when refused and says how to get it, off does not ask. "
    "Commands that keep time say at start which it was, and their summaries repeat it.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    quiet: bool,
    clock_skew: float,
    clock_drift: float,
    key_file: Path | None,
    realtime: str,
) -> None:
    """Send, receive and schedule Open Sound Control with exact timetags.

    Listeners bind to 127.0.0.1 unless you say otherwise (--listen 0.0.0.0:9001 to accept OSC
    from other machines). Timetags are shown in liblo's hex notation (NTP seconds since 1900).
    The options below go before the command: oscsync -q dump, oscsync --clock-skew 0.15 dump.
    """
    from oscsync.cli.runtime import AppContext, color_wanted  # here: --help needs none of it

    # A caller may hand in its own context (tests: `CliRunner().invoke(cli, args,
    # obj=AppContext(clock=FakeClock()))`): its clock is the one this run reads and waits on.
    given = ctx.obj.clock if isinstance(ctx.obj, AppContext) else None
    policy = ctx.obj.realtime if isinstance(ctx.obj, AppContext) else None
    ctx.obj = AppContext.create(
        quiet=quiet,
        clock_skew=clock_skew,
        clock_drift_ppm=clock_drift,
        base_clock=given,
        key_file=key_file,  # read by each command once click has parsed it (runtime.pass_app)
        environ=os.environ,
        realtime=policy or realtime,
    )
    if not color_wanted():
        ctx.color = False  # every click.echo strips styles (NO_COLOR, no-color.org)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="oscsync", windows_expand_args=False)


if __name__ == "__main__":  # pragma: no cover
    main()
