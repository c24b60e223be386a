"""Playing a sound at a given instant: the :class:`Player` protocol and its backends.

One concept per module (issue #12):

* :mod:`~oscsync.audio.player` — the protocol, stats, ``TICK``/``ACCENT``, :class:`AudioError`;
* :mod:`~oscsync.audio.wav` — WAV files (read, write, resample, an appending writer);
* :mod:`~oscsync.audio.onsets` — finding onsets in a recording;
* :mod:`~oscsync.audio.dll` — the delay-locked loop that maps a sound card's frames to time;
* players: :mod:`~oscsync.audio.portaudio` (``sounddevice``), :mod:`~oscsync.audio.playsound`,
  :mod:`~oscsync.audio.none`, :mod:`~oscsync.audio.render` (``wav:FILE``);
* :mod:`~oscsync.audio.devices` — listing and choosing PortAudio output devices;
* :mod:`~oscsync.audio.registry` — the ``--audio`` choices, generated from one table.

The names below are what the rest of oscsync imports from ``oscsync.audio``. Nothing here
imports numpy or sounddevice: the sounddevice player imports them when it starts.

May import the rows below it: ``clock``, ``terminal``, ``osc``, ``stats``, ``threads``,
``install``; not ``net`` or ``scheduler`` beside it (docs/architecture.md, "The layers").
"""

from __future__ import annotations

from oscsync.audio.devices import DeviceNotFound
from oscsync.audio.dll import DelayLockedLoop
from oscsync.audio.none import NonePlayer
from oscsync.audio.onsets import find_onsets
from oscsync.audio.player import (
    ACCENT,
    DEFAULT_RATE,
    MAX_PENDING,
    TICK,
    AudioError,
    Player,
    PlayerStats,
    playout_of,
)
from oscsync.audio.playsound import PLAYSOUND_CAVEAT, PlaysoundPlayer, probe_playsound
from oscsync.audio.portaudio import PORTAUDIO_HINT, SoundDevicePlayer, probe_sounddevice
from oscsync.audio.registry import (
    AUDIO_KINDS,
    BACKENDS,
    AudioChoice,
    PlayerOptions,
    open_player,
    parse_audio_choice,
    player_summary,
)
from oscsync.audio.render import WavRenderer
from oscsync.audio.wav import Sound, WavWriter, read_wav, resample, write_wav

__all__ = [
    "ACCENT",
    "AUDIO_KINDS",
    "BACKENDS",
    "DEFAULT_RATE",
    "MAX_PENDING",
    "PLAYSOUND_CAVEAT",
    "PORTAUDIO_HINT",
    "TICK",
    "AudioChoice",
    "AudioError",
    "DelayLockedLoop",
    "DeviceNotFound",
    "NonePlayer",
    "Player",
    "PlayerOptions",
    "PlayerStats",
    "PlaysoundPlayer",
    "Sound",
    "SoundDevicePlayer",
    "WavRenderer",
    "WavWriter",
    "find_onsets",
    "open_player",
    "parse_audio_choice",
    "player_summary",
    "playout_of",
    "probe_playsound",
    "probe_sounddevice",
    "read_wav",
    "resample",
    "write_wav",
]
