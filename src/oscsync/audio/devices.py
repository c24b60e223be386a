"""Sound cards as PortAudio sees them: list the output devices, find one by name or index.

Every host API PortAudio was built with shows up here: JACK, ALSA, PulseAudio/PipeWire (through
their ALSA plugin or JACK), CoreAudio, WASAPI, ... ``--device`` takes an index from the list or any
part of a device's name (case-insensitive); a name that matches nothing, or several devices, is a
one-line error that says how to list them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oscsync.audio.player import AudioError, first_line
from oscsync.audio.portaudio import load_sounddevice

LIST_HINT = "oscsync audio devices lists them"


class DeviceNotFound(AudioError):
    """``--device`` names no output device, or several (a bad option, not a broken machine)."""


@dataclass(frozen=True)
class OutputDevice:
    """One device that can play: PortAudio's index, name, host API and defaults."""

    index: int
    name: str
    host_api: str
    channels: int
    default_rate: float
    default_latency_s: float
    is_default: bool

    def line(self) -> str:
        mark = "*" if self.is_default else " "
        return (
            f"{mark} {self.index:>3}  {self.name}  ({self.host_api}, {self.channels} out, "
            f"{self.default_rate:g} Hz, {self.default_latency_s * 1000:.1f} ms)"
        )


def output_devices(sd: Any = None) -> list[OutputDevice]:
    """Every device with at least one output channel; AudioError if PortAudio cannot be had."""
    if sd is None:
        sd = load_sounddevice()
    try:
        devices = list(sd.query_devices())
        apis = list(sd.query_hostapis())
        default = sd.default.device[1]
    except Exception as exc:  # PortAudioError
        raise AudioError(f"cannot list audio devices: {first_line(exc)}") from None
    found = []
    for index, info in enumerate(devices):
        channels = int(info.get("max_output_channels", 0))
        if channels <= 0:
            continue
        api = apis[info["hostapi"]]["name"] if 0 <= info.get("hostapi", -1) < len(apis) else "?"
        found.append(
            OutputDevice(
                index=index,
                name=str(info.get("name", "")),
                host_api=str(api),
                channels=channels,
                default_rate=float(info.get("default_samplerate", 0.0)),
                default_latency_s=float(info.get("default_low_output_latency", 0.0)),
                is_default=index == default,
            )
        )
    return found


def resolve_device(text: str, devices: list[OutputDevice]) -> int:
    """The index of the output device ``text`` names (an index, or part of a name)."""
    wanted = text.strip()
    if not devices:
        raise DeviceNotFound("no audio output device found")
    if wanted.isdigit():
        index = int(wanted)
        if any(device.index == index for device in devices):
            return index
        raise DeviceNotFound(f"no audio output device has index {index} ({LIST_HINT})")
    exact = [device for device in devices if device.name.lower() == wanted.lower()]
    if len(exact) == 1:
        return exact[0].index
    matches = [device for device in devices if wanted.lower() in device.name.lower()]
    if len(matches) == 1:
        return matches[0].index
    if not matches:
        raise DeviceNotFound(f"no audio output device matches {wanted!r} ({LIST_HINT})")
    names = ", ".join(f"{device.index}: {device.name}" for device in matches[:5])
    raise DeviceNotFound(f"{wanted!r} matches several output devices ({names}); give its index")
