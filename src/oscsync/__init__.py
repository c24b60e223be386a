"""oscsync: Open Sound Control with exact timetags, for networked music in time.

The public Python API is what this module lists (``__all__``); every other module is private
and may move without notice (see the "Python API" page of the docs). The layout under it, by
concept: ``osc/`` (timetags, encoding, address patterns), ``net/`` (UDP and TCP transports),
``sync/`` (following a peer's clock), ``discovery/`` (zeroconf ``@NAME``, OSCQuery), ``audio/``
(players), ``scheduler`` and ``clock``; ``apps/`` builds the objects below on them, and the
command line (``cli/``) uses the same objects a script does.

Names are imported when first used (``oscsync.Endpoint`` loads the network code; ``import
oscsync`` alone loads nothing), so ``oscsync --help`` stays quick.

>>> import oscsync
>>> tag = oscsync.from_unix(1_700_000_000.25)
>>> oscsync.to_unix(oscsync.add_seconds(tag, 0.5))
1700000000.75
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each public name and the module it lives in (the one place to change when a module moves).
_PUBLIC: dict[str, tuple[str, str]] = {
    # sending and receiving
    "Endpoint": ("oscsync.apps.endpoints", "Endpoint"),
    "Messages": ("oscsync.apps.endpoints", "Messages"),
    "Received": ("oscsync.osc.routing", "Received"),
    "Message": ("oscsync.osc.codec", "Message"),
    "HostPort": ("oscsync.net.hostport", "HostPort"),
    # time
    "now": ("oscsync.clock", "now_timetag"),
    "add_seconds": ("oscsync.osc.timetag", "add_seconds"),
    "from_unix": ("oscsync.osc.timetag", "from_unix"),
    "to_unix": ("oscsync.osc.timetag", "to_unix"),
    "IMMEDIATELY": ("oscsync.osc.timetag", "IMMEDIATELY"),
    "sleep_until": ("oscsync.scheduler", "sleep_until"),
    "sleep_until_async": ("oscsync.scheduler", "sleep_until_async"),
    "Scheduler": ("oscsync.scheduler", "Scheduler"),
    "Dispatch": ("oscsync.scheduler", "Dispatch"),
    "Grid": ("oscsync.apps.grid", "Grid"),
    "Tick": ("oscsync.apps.grid", "Tick"),
    "LinkGrid": ("oscsync.apps.link", "LinkGrid"),
    # clocks
    "Clock": ("oscsync.clock", "Clock"),
    "SystemClock": ("oscsync.clock", "SystemClock"),
    "SkewedClock": ("oscsync.clock", "SkewedClock"),
    "FakeClock": ("oscsync.clock", "FakeClock"),
    "ClockFollower": ("oscsync.sync.follow", "ClockFollower"),
    "SyncStatus": ("oscsync.sync.follow", "SyncStatus"),
    # sound
    "SoundPlayer": ("oscsync.apps.playing", "SoundPlayer"),
    "escape": ("oscsync.terminal.display", "escape"),
    # errors
    "AddressError": ("oscsync.net.hostport", "AddressError"),
    "TransportError": ("oscsync.net.udp", "TransportError"),
    "DiscoveryError": ("oscsync.discovery.mdns", "DiscoveryError"),
    "EncodeError": ("oscsync.osc.codec", "EncodeError"),
    "AudioError": ("oscsync.audio.player", "AudioError"),
    "LinkUnavailable": ("oscsync.sync.link", "LinkUnavailable"),
}

__all__ = [
    "IMMEDIATELY",
    "AddressError",
    "AudioError",
    "Clock",
    "ClockFollower",
    "DiscoveryError",
    "Dispatch",
    "EncodeError",
    "Endpoint",
    "FakeClock",
    "Grid",
    "HostPort",
    "LinkGrid",
    "LinkUnavailable",
    "Message",
    "Messages",
    "Received",
    "Scheduler",
    "SkewedClock",
    "SoundPlayer",
    "SyncStatus",
    "SystemClock",
    "Tick",
    "TransportError",
    "add_seconds",
    "escape",
    "from_unix",
    "now",
    "sleep_until",
    "sleep_until_async",
    "to_unix",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports
    from oscsync.apps.endpoints import Endpoint as Endpoint
    from oscsync.apps.endpoints import Messages as Messages
    from oscsync.apps.grid import Grid as Grid
    from oscsync.apps.grid import Tick as Tick
    from oscsync.apps.link import LinkGrid as LinkGrid
    from oscsync.apps.playing import SoundPlayer as SoundPlayer
    from oscsync.audio.player import AudioError as AudioError
    from oscsync.clock import Clock as Clock
    from oscsync.clock import FakeClock as FakeClock
    from oscsync.clock import SkewedClock as SkewedClock
    from oscsync.clock import SystemClock as SystemClock
    from oscsync.clock import now_timetag as now
    from oscsync.discovery.mdns import DiscoveryError as DiscoveryError
    from oscsync.net.hostport import AddressError as AddressError
    from oscsync.net.hostport import HostPort as HostPort
    from oscsync.net.udp import TransportError as TransportError
    from oscsync.osc.codec import EncodeError as EncodeError
    from oscsync.osc.codec import Message as Message
    from oscsync.osc.routing import Received as Received
    from oscsync.osc.timetag import IMMEDIATELY as IMMEDIATELY
    from oscsync.osc.timetag import add_seconds as add_seconds
    from oscsync.osc.timetag import from_unix as from_unix
    from oscsync.osc.timetag import to_unix as to_unix
    from oscsync.scheduler import Dispatch as Dispatch
    from oscsync.scheduler import Scheduler as Scheduler
    from oscsync.scheduler import sleep_until as sleep_until
    from oscsync.scheduler import sleep_until_async as sleep_until_async
    from oscsync.sync.follow import ClockFollower as ClockFollower
    from oscsync.sync.follow import SyncStatus as SyncStatus
    from oscsync.sync.link import LinkUnavailable as LinkUnavailable
    from oscsync.terminal.display import escape as escape


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'oscsync' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
