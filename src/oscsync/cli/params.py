"""Option types shared by every command: addresses, durations, CIDR blocks and timetags.

Each ``convert`` fails with one sentence, which click prints as ``Invalid value for ...`` with exit
code 2.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from oscsync.net.framing import FRAMINGS
from oscsync.net.hostport import AddressError, HostPort, parse_hostport, parse_network
from oscsync.osc import timetag
from oscsync.outfile import holds_data, open_output


class ParsedType(click.ParamType):  # type: ignore[type-arg]
    """A value one method reads from the text (:meth:`parse`); what it raises for bad input
    (:meth:`errors`) becomes click's one-line ``Invalid value`` (exit 2). Values that are already
    of a ``parsed`` type (defaults, a second conversion) pass through."""

    metavar = ""
    parsed: tuple[type, ...] = ()

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.metavar

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def errors(self) -> tuple[type[Exception], ...]:
        """What :meth:`parse` raises for bad input (a method: some are imported only then)."""
        return (ValueError,)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.parsed):
            return value
        try:
            return self.parse(str(value))
        except self.errors() as exc:
            self.fail(str(exc), param, ctx)


class HostPortType(click.ParamType):  # type: ignore[type-arg]
    """``[HOST:]PORT`` (bare port allowed when ``default_host`` is set) or ``[V6]:PORT``.

    With ``names=True`` it also takes ``@NAME``, a peer advertised with zeroconf. That becomes a
    :class:`PeerName`, not an address: the command resolves it when it runs
    (:func:`oscsync.cli.peers.resolve_peers`), so parsing never waits on the network (--help,
    the docs' parse check).
    """

    name = "hostport"

    def __init__(
        self,
        default_host: str | None = "127.0.0.1",
        allow_port_zero: bool = False,
        names: bool = False,
        udp_only: str | None = None,
    ):
        self.default_host = default_host
        self.allow_port_zero = allow_port_zero
        self.names = names
        self.udp_only = udp_only
        """Why this option takes no ``tcp://`` address (said in the error), or None."""

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        if self.names:
            return "HOST:PORT|@NAME"
        return "[HOST:]PORT" if self.default_host else "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (HostPort, PeerName)):
            return value
        if self.names and str(value).startswith("@"):
            from oscsync.discovery.mdns import DiscoveryError, check_name

            try:
                return PeerName(check_name(str(value)[1:]))
            except DiscoveryError as exc:
                self.fail(str(exc), param, ctx)
        try:
            parsed = parse_hostport(
                str(value), default_host=self.default_host, allow_port_zero=self.allow_port_zero
            )
        except AddressError as exc:
            message = str(exc)
            if self.names and message.startswith("cannot resolve host"):
                # Issue 30: a laptop's NAME.local that this machine cannot resolve.
                message += (
                    "; `oscsync peers` lists the OSC services on the network, and a peer "
                    "advertised as NAME is reached as @NAME (or give its IP address)"
                )
            self.fail(message, param, ctx)
        if parsed.is_tcp and self.udp_only:
            self.fail(f"{value!r}: {self.udp_only}; write it without tcp://", param, ctx)
        return parsed


@dataclass(frozen=True)
class PeerName:
    """``@NAME`` on the command line: a zeroconf-advertised peer, resolved when the command runs."""

    name: str

    def __str__(self) -> str:
        return f"@{self.name}"


LISTEN = HostPortType(default_host="127.0.0.1", allow_port_zero=True)
PEER = HostPortType(default_host=None, names=True)
UDP_RELAY = "netem relays UDP datagrams only"
RELAY_LISTEN = HostPortType(default_host="127.0.0.1", allow_port_zero=True, udp_only=UDP_RELAY)
RELAY_PEER = HostPortType(default_host=None, names=True, udp_only=UDP_RELAY)

_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0, "m": 60.0}
_DURATION_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zµ]*)\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``0.5``, ``500ms``, ``250us``, ``2s`` or ``1min``."""
    match = _DURATION_RE.match(text)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"{text!r} is not a duration (e.g. 0.5, 500ms, 250us, 2s)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):  # 1e400: inf, which no clock or timetag can take
        raise ValueError(f"{text!r} is too large to be a duration")
    return seconds


class DurationType(click.ParamType):  # type: ignore[type-arg]
    """Seconds, with an optional unit: ``0.25``, ``250ms``, ``100us``, ``2s``."""

    name = "duration"

    def __init__(self, minimum: float | None = 0.0, maximum: float | None = None):
        self.minimum = minimum
        self.maximum = maximum

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SECONDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if self.minimum is not None and seconds < self.minimum:
            self.fail(f"{value} is below the minimum of {self.minimum:g} s", param, ctx)
        if self.maximum is not None and seconds > self.maximum:
            self.fail(
                f"{value} is above the maximum of {self.maximum:g} s{self._unit_hint(value)}",
                param,
                ctx,
            )
        return seconds

    def _unit_hint(self, value: Any) -> str:
        """``--delay 20``: " (did you mean 20ms?)" when milliseconds would fit (issue 30)."""
        match = _DURATION_RE.match(str(value))
        if match is None or match.group(2) or self.maximum is None:
            return ""
        milliseconds = float(match.group(1)) * 1e-3
        if self.minimum is not None and milliseconds < self.minimum:
            return ""
        return f" (did you mean {match.group(1)}ms?)" if milliseconds <= self.maximum else ""


DURATION = DurationType()


class NetworkType(ParsedType):
    """An address or CIDR block, e.g. ``127.0.0.1`` or ``192.168.1.0/24``."""

    name = "cidr"
    metavar = "CIDR"
    parsed = (ipaddress.IPv4Network, ipaddress.IPv6Network)

    def parse(self, text: str) -> Any:
        return parse_network(text)  # AddressError is a ValueError


NETWORK = NetworkType()


_TIME_OF_DAY_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d{1,9})?))?Z$")


def next_time_of_day(text: str, now_unix: float) -> int | None:
    """``20:30Z`` or ``20:30:15.5Z``: the next such moment (UTC) after ``now_unix``, as a timetag.

    A time of day keeps a help example or a workshop plan valid on any day (issue #13: a dated
    example had slipped into the past). None when ``text`` is not a time of day.
    """
    match = _TIME_OF_DAY_RE.match(text.strip())
    if not match:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    seconds = Fraction(match.group(3) or "0")
    if hours > 23 or minutes > 59 or seconds >= 60:
        raise timetag.TimetagError(f"{text!r} is not a time of day (HH:MM[:SS]Z, UTC)")
    of_day = hours * 3600 + minutes * 60 + seconds
    midnight = int(now_unix // 86400) * 86400
    moment = midnight + of_day
    if moment <= Fraction(now_unix):
        moment += 86400
    return timetag.from_unix(moment)


class TimetagType(click.ParamType):  # type: ignore[type-arg]
    """A timetag: liblo hex, Unix seconds, ISO-8601 (UTC unless zoned), a time of day
    (``20:30Z``: the next one) or ``immediately``."""

    name = "timetag"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "TIMETAG|ISO|HH:MMZ"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return next_time_of_day(str(value), _now(ctx)) or timetag.parse(str(value))
        except timetag.TimetagError as exc:
            self.fail(str(exc), param, ctx)


def _now(ctx: click.Context | None) -> float:
    """The command's clock (``--clock-skew`` included) when there is one, else the system's."""
    clock = getattr(ctx.find_root().obj if ctx is not None else None, "clock", None)
    if clock is None:
        from oscsync.clock import SystemClock

        clock = SystemClock()
    return float(clock.now())


TIMETAG = TimetagType()

F = TypeVar("F", bound=Callable[..., Any])


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options (or arguments) as one decorator; --help lists them as written."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def collect(name: str, build: Callable[..., Any]) -> Callable[[F], F]:
    """Hand the command one value, ``build(**values)``, as keyword ``name``, in place of the
    values of the parameters that ``build`` takes (matched by name; absent ones keep their
    defaults). Put it right above ``def``: e.g. netem's seven link options become one
    ``ImpairmentSpec``, so the commands that share them do not each list and rebuild them."""
    names = list(inspect.signature(build).parameters)

    def apply(function: F) -> F:
        @functools.wraps(function)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in names if key in kwargs}
            return function(*args, **kwargs, **{name: build(**values)})

        return cast(F, command)

    return apply


def listen_option(default: str = "127.0.0.1:9001", help_extra: str = "") -> Callable[[F], F]:
    return click.option(
        "--listen",
        "-l",
        type=LISTEN,
        default=default,
        show_default=True,
        help="Address to listen on; port 0 picks a free one. 0.0.0.0:PORT accepts other machines."
        + help_extra,
    )


def framing_option() -> Callable[[F], F]:
    """``--framing slip|size``: how packets to ``tcp://`` peers are framed (issue #16)."""
    return click.option(
        "--framing",
        type=click.Choice(FRAMINGS),
        default="slip",
        show_default=True,
        help="How OSC packets are framed on TCP connections to tcp:// peers: slip (OSC 1.1) or "
        "size (a 4-byte length, OSC 1.0). A peer written tcp+size:// (scsynth), osc.tcp:// "
        "(liblo: size) or tcp+slip:// keeps its own. Receivers detect either.",
    )


def log_option(help_text: str) -> Callable[[F], F]:
    """``--log FILE.jsonl``: the listeners' event log (metronome and sequence)."""
    return click.option(
        "--log",
        "log_path",
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE.jsonl",
        help=help_text,
    )


def overwrite_option(what: str = "the files it writes") -> Callable[[F], F]:
    """``--overwrite``: every command that writes a file the user names has it (issue 27, item
    12: ``--log``, ``wav:``, ``--csv``, ``--json-out`` replaced an existing file silently while
    ``record`` refused)."""
    return click.option(
        "--overwrite",
        is_flag=True,
        help=f"Replace {what} if they exist (without it, an existing file is never replaced).",
    )


def refuse_existing(path: Path | None, overwrite: bool, param_hint: str) -> None:
    """The one rule for files a command writes: an existing file with something in it is not
    replaced unless ``--overwrite`` (a usage error naming the option). An empty file, a named
    pipe or ``/dev/null`` is written without asking."""
    if path is not None and not overwrite and holds_data(path):
        raise click.BadParameter(
            f"{path} already exists (never replaced by accident: choose another name or add "
            "--overwrite)",
            param_hint=param_hint,
        )


def open_new_output(path: Path, overwrite: bool, param_hint: str, *, binary: bool = False) -> Any:
    """``path`` checked by :func:`refuse_existing` and opened with
    :func:`~oscsync.outfile.open_output`; a file that cannot be opened (a named pipe nobody
    reads, a missing directory) is one ``Error:`` line, exit 1."""
    refuse_existing(path, overwrite, param_hint)
    try:
        return open_output(path, binary=binary)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None


def allow_option(help_extra: str = "") -> Callable[[F], F]:
    """``--allow CIDR``: every command whose sockets receive has it (#20 item 6)."""
    return click.option(
        "--allow",
        type=NETWORK,
        multiple=True,
        help="Accept datagrams only from this address or CIDR block (repeatable)." + help_extra,
    )


def room_option() -> Callable[[F], F]:
    """``--room``: a leader shows its followers (``metronome send``, ``sequence send``)."""
    return click.option(
        "--room",
        is_flag=True,
        help="Show this leader's room: how many followers report, how many are locked, their "
        "clocks' ± (on a terminal, on the live line; piped, one JSON object every 2 s). Sends "
        "the room's sync messages to every peer, not only to multicast groups (docs/room.md).",
    )


def peers_option(help: str) -> Callable[[F], F]:
    """``--peer HOST:PORT``, required and repeatable, collected as ``peers``."""
    return click.option(
        "--peer",
        "-p",
        "peers",
        type=PEER,
        multiple=True,
        required=True,
        metavar="HOST:PORT|@NAME",
        help=help,
    )


def skew_option(default: float, help: str) -> Callable[[F], F]:
    """``--skew SECONDS``: how far a simulated follower's clock is ahead (lab commands)."""
    return click.option(
        "--skew",
        # Finite and within an hour: NaN, inf or 1e300 would reach the skewed clock's timetags.
        type=DurationType(minimum=-3600, maximum=3600),
        default=default,
        show_default=True,
        help=help,
    )


def iface_option() -> Callable[[F], F]:
    return click.option(
        "--iface",
        metavar="ADDRESS",
        default=None,
        help="Local interface address for multicast (e.g. 127.0.0.1 for loopback-only groups).",
    )


class NumberRange(click.FloatRange):
    """A finite number within bounds, with a plain message when the word is not a number at all.

    click's own says ``'fast' is not a valid float range`` (issue #13), and its FloatRange lets
    ``nan`` through (every comparison is False) and ``inf`` where there is no maximum.
    """

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        *,
        example: str,
        min_open: bool = False,
    ) -> None:
        super().__init__(min=min, max=max, min_open=min_open)
        self.example = example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                self.fail(f"{value!r} is not a number (e.g. {self.example})", param, ctx)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


def bpm_range(minimum: float, maximum: float) -> NumberRange:
    return NumberRange(minimum, maximum, example="120 for two beats a second")


def bpm_option(maximum: float, default: float, help: str) -> Callable[[F], F]:
    """``--bpm``: metronome's ticks, sequence's beats (from 1 bpm up to ``maximum``)."""
    return click.option(
        "--bpm", type=bpm_range(1, maximum), default=default, show_default=True, help=help
    )


def beats_per_bar_option(default: int, help: str) -> Callable[[F], F]:
    """``--beats-per-bar``/``-b``: metronome's accent, sequence's bar line."""
    return click.option(
        "--beats-per-bar",
        "-b",
        type=click.IntRange(min=1, max=64),
        default=default,
        show_default=True,
        help=help,
    )


class PercentType(ParsedType):
    """A percentage, ``1%`` or ``1`` (both mean one in a hundred), returned as a fraction 0..1."""

    name = "percent"
    metavar = "PERCENT"
    parsed = (float,)

    def parse(self, text: str) -> Any:
        try:
            percent = float(text.strip().removesuffix("%").strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a percentage (e.g. 1%, 0.5%, 10)") from None
        if not 0 <= percent <= 100:
            raise ValueError(f"{text} is not between 0% and 100%")
        return percent / 100


PERCENT = PercentType()


class DiscoveryType(ParsedType):
    """A value one of :mod:`oscsync.discovery.mdns`'s checks reads, named by ``check`` (the module
    is imported when a value is given: ~90 ms that ``oscsync --help`` does not need)."""

    def __init__(self, name: str, metavar: str, check: str) -> None:
        self.name = name
        self.metavar = metavar
        self.check = check

    def parse(self, text: str) -> Any:
        from oscsync.discovery import mdns

        return getattr(mdns, self.check)(text)

    def errors(self) -> tuple[type[Exception], ...]:
        from oscsync.discovery.mdns import DiscoveryError

        return (DiscoveryError,)


SERVICE_NAME = DiscoveryType("name", "NAME", "check_name")
"""A DNS-SD instance name for ``--advertise`` (one DNS label: up to 63 bytes, no dots)."""

INTERFACE = DiscoveryType("interface", "auto|all|loopback|ADDRESS", "check_interface")
"""Where mDNS runs: ``auto``, ``all``, ``loopback`` or an interface's IPv4 address."""


MDNS_INTERFACE_ENV = "OSCSYNC_MDNS_INTERFACE"
"""Read by every ``--interface`` and by ``@NAME`` resolution (``mdns.INTERFACE_ENV``)."""


def interface_option(default: str = "auto", help: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--interface",
        type=INTERFACE,
        default=default,
        envvar=MDNS_INTERFACE_ENV,
        show_envvar=True,
        show_default=True,
        help=help
        or "Network interface for zeroconf (mDNS). auto: loopback when listening on 127.0.0.1, "
        "else every interface.",
    )


def advertise_option() -> Callable[[F], F]:
    """``--advertise NAME`` and ``--interface``, for every listening command (issue 17)."""
    return options(
        click.option(
            "--advertise",
            type=SERVICE_NAME,
            default=None,
            help="Announce this listener on the local network (zeroconf) as NAME, so partners "
            "can use @NAME instead of an address. Nothing is announced without it.",
        ),
        interface_option(),
    )


# -- output options (issue #12 item 6) ---------------------------------------------------------
# One convention: --jsonl is a stream (one JSON object per line, as things happen), --json is one
# JSON object at the end, and a file is --NAME-out PATH (or a named option such as --log FILE).


def renamed_option(old: str, new: str, dest: str, **kwargs: Any) -> Callable[[F], F]:
    """The old spelling ``old`` of an option now called ``new``: hidden from --help, still
    accepted, with one warning; the command reads it as ``dest`` and merges it with ``new``."""

    def warn(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False):
            text = f"{old} is now {new} (the old spelling will go away)"
            # AppContext (cli.runtime) imports the transport: not at start-up (test_cli_help).
            from oscsync.cli.runtime import AppContext

            app = ctx.find_object(AppContext)
            if app is not None:
                app.warn(text)
            else:  # pragma: no cover - every command runs under the group's context
                click.echo(f"warning: {text}", err=True)
        return value

    return click.option(old, dest, hidden=True, callback=warn, **kwargs)
