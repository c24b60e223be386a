"""The players ``--audio`` can choose, in one table: the choices, the help and the metavar are made
from it, so adding a backend is one :class:`Backend` entry here (issue #12: it took six edits in
two files).

``auto`` picks sounddevice when PortAudio and an output device are present and otherwise says why
in one line and plays nothing; a missing PortAudio never becomes a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oscsync.audio import playsound as playsound_backend
from oscsync.audio import portaudio
from oscsync.audio.devices import output_devices, resolve_device
from oscsync.audio.none import NonePlayer
from oscsync.audio.player import AudioError, Player
from oscsync.audio.render import WavRenderer
from oscsync.clock import Clock


@dataclass(frozen=True)
class AudioChoice:
    """What ``--audio`` asked for: a kind, and for ``wav`` the file."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path is not None else self.kind


@dataclass(frozen=True)
class PlayerOptions:
    """The options a backend may use (each ignores the ones that mean nothing to it)."""

    device: str | None = None
    """``--device``: an index or part of a name (sounddevice)."""
    latency_compensation: float | None = None
    """``--latency-compensation``: None = auto, 0 = off, else seconds (sounddevice)."""
    placement: str = "dll"
    warn: Callable[[str], None] | None = None
    on_error: Callable[[str], None] | None = None
    """Called once with one line when the player fails while running (a WAV that cannot be
    written): the caller should stop and report it."""


@dataclass(frozen=True)
class Backend:
    """One ``--audio`` choice: how to make its player, and whether it can run here."""

    name: str
    help: str
    make: Callable[[AudioChoice, Clock, PlayerOptions], Player]
    probe: Callable[[], str | None] | None = None
    """None if the backend can play here, else one line saying why not."""
    argument: str | None = None
    """``wav`` takes ``wav:FILE``: the name of what follows the colon."""

    @property
    def metavar(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


def _sounddevice(choice: AudioChoice, clock: Clock, options: PlayerOptions) -> Player:
    device: int | None = None
    if options.device is not None:
        device = resolve_device(options.device, output_devices())
    return portaudio.SoundDevicePlayer(
        clock,
        device=device,
        latency_compensation=options.latency_compensation,
        placement=options.placement,
    )


def _playsound(choice: AudioChoice, clock: Clock, options: PlayerOptions) -> Player:
    return playsound_backend.PlaysoundPlayer(clock, on_warning=options.warn)


def _wav(choice: AudioChoice, clock: Clock, options: PlayerOptions) -> Player:
    assert choice.path is not None
    return WavRenderer(choice.path, clock, on_error=options.on_error)


def _none(choice: AudioChoice, clock: Clock, options: PlayerOptions) -> Player:
    return NonePlayer()


def _probe_sounddevice() -> str | None:
    return portaudio.probe_sounddevice()  # looked up at call time: tests replace it


def _probe_playsound() -> str | None:
    return playsound_backend.probe_playsound()


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend("auto", "auto: sounddevice if a sound card is there, else none.", _none),
        Backend(
            "sounddevice",
            "sounddevice: sample-placed on the sound card (--device, --latency-compensation).",
            _sounddevice,
            _probe_sounddevice,
        ),
        Backend(
            "playsound",
            "playsound: the workshop's player, tens of ms late and jittery.",
            _playsound,
            _probe_playsound,
        ),
        Backend("none", "none: no sound.", _none),
        Backend(
            "wav",
            "wav:FILE renders the session into a WAV file (each sound at its exact frame).",
            _wav,
            argument="FILE",
        ),
    )
}
AUDIO_KINDS = tuple(name for name, backend in BACKENDS.items() if backend.argument is None)


def audio_metavar() -> str:
    """``auto|sounddevice|playsound|none|wav:FILE``."""
    return "|".join(backend.metavar for backend in BACKENDS.values())


def audio_help() -> str:
    """One sentence per backend, for ``--audio``'s help."""
    return " ".join(backend.help for backend in BACKENDS.values())


def parse_audio_choice(text: str) -> AudioChoice:
    """``auto``, ``sounddevice``, ``playsound``, ``none`` or ``wav:FILE``."""
    value = text.strip()
    name, colon, argument = value.partition(":")
    backend = BACKENDS.get(name.lower())
    if backend is not None and backend.argument is not None and colon:
        if not argument:
            raise AudioError(
                f"{backend.name}: needs a file name, e.g. {backend.name}:out.{backend.name}"
            )
        return AudioChoice(backend.name, Path(argument))
    if backend is not None and backend.argument is None and not colon:
        return AudioChoice(backend.name)
    raise AudioError(f"{text!r} is not one of {', '.join(b.metavar for b in BACKENDS.values())}")


def open_player(
    choice: AudioChoice,
    clock: Clock,
    sounds: Mapping[str, str | Path],
    *,
    notice: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
    options: PlayerOptions | None = None,
) -> Player:
    """A started player with ``sounds`` (key -> file) loaded; AudioError if it cannot be had.

    ``auto`` never raises for a missing sound card: it calls ``notice`` with one line saying why
    there will be no sound and returns a :class:`NonePlayer` (with ``--device`` given, the device
    is wanted: auto then behaves like ``sounddevice``).
    """
    options = options or PlayerOptions(warn=warn)
    if options.warn is None and warn is not None:
        options = PlayerOptions(
            options.device, options.latency_compensation, options.placement, warn, options.on_error
        )
    if choice.kind == "auto":
        if options.device is not None:
            return open_player(
                AudioChoice("sounddevice"), clock, sounds, notice=notice, options=options
            )
        reason = _probe_sounddevice()
        if reason is None:
            try:
                player = _sounddevice(choice, clock, options)
                return _loaded_and_started(player, sounds)
            except AudioError as exc:
                reason = str(exc)
        notice(f"audio: {reason}; playing no sound (--audio none)")
        return _loaded_and_started(NonePlayer(), sounds)
    backend = BACKENDS[choice.kind]
    if backend.probe is not None:
        reason = backend.probe()
        if reason is not None:
            raise AudioError(reason)
    return _loaded_and_started(backend.make(choice, clock, options), sounds)


def _loaded_and_started(player: Player, sounds: Mapping[str, str | Path]) -> Player:
    for key, path in sounds.items():
        player.load(path, key)
    player.start()
    return player


def player_summary(player: Player) -> dict[str, Any]:
    """What a player adds to the listener's summary line (xruns for a sound card, ...)."""
    summary = getattr(player, "summary", None)
    return dict(summary()) if callable(summary) else {}
