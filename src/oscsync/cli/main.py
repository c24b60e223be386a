"""The ``oscsync`` command: a group whose subcommands are imported only when used.

Start-up stays fast (no numpy, no sounddevice, no matplotlib until a command needs them): the
group knows each subcommand by ``module:attribute`` and imports it on demand (click's "lazy
subcommands" pattern; ``tests/test_cli_help.py`` runs ``--help`` on every one of them).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from oscsync import __version__
from oscsync.cli.runtime import AppContext

# name -> "module:attribute"; each helper adds its line. Order here is the order in --help.
COMMANDS: dict[str, str] = {
    "send": "oscsync.cli.send:send",
    "dump": "oscsync.cli.dump:dump",
    "timetag": "oscsync.cli.timetag:timetag",
    "chat": "oscsync.cli.chat:chat",
    "metronome": "oscsync.cli.metronome:metronome",
    "clock": "oscsync.cli.clock:clock",
    "netem": "oscsync.cli.netem:netem",
    "stats": "oscsync.cli.stats:stats",
    "demo": "oscsync.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is asked for."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy) + sorted(set(super().list_commands(ctx)) - set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


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
@click.option("-q", "--quiet", is_flag=True, help="Print only data and errors, no notices.")
@click.option(
    "--clock-skew",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Pretend this machine's clock is SECONDS ahead (negative: behind), for experiments.",
)
@click.option(
    "--clock-drift",
    type=float,
    default=0.0,
    metavar="PPM",
    help="Pretend this machine's clock runs fast by PPM parts per million, for experiments.",
)
@click.pass_context
def cli(ctx: click.Context, quiet: bool, clock_skew: float, clock_drift: float) -> None:
    """Send, receive and schedule Open Sound Control with exact timetags.

    Listeners bind to 127.0.0.1 unless you say otherwise (--listen 0.0.0.0:9001 to accept OSC
    from other machines). Timetags are shown in liblo's hex notation (NTP seconds since 1900).
    """
    ctx.obj = AppContext.create(quiet=quiet, clock_skew=clock_skew, clock_drift_ppm=clock_drift)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="oscsync", windows_expand_args=False)


if __name__ == "__main__":  # pragma: no cover
    main()
