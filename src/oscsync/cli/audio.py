"""The ``oscsync audio devices`` command: its options and what it prints (the devices:
:mod:`oscsync.audio.devices`)."""

from __future__ import annotations

import click

from oscsync.cli.runtime import AppContext, pass_app


@click.group(
    epilog="""\b
Examples:
  oscsync audio devices                                   # what --device can name
  oscsync metronome listen --audio sounddevice --device 0 # play on device 0
"""
)
def audio() -> None:
    """Sound cards: list the output devices that --audio sounddevice can play on."""


@audio.command(
    epilog="""\b
Examples:
  oscsync audio devices
"""
)
@pass_app
def devices(app: AppContext) -> None:
    """List output devices: index, name, host API, channels, default rate and latency.

    * marks the system's default. Give --device an index or part of a name (metronome listen,
    metronome pair). Every host API PortAudio was built with is listed (JACK, ALSA,
    PulseAudio/PipeWire, CoreAudio, WASAPI, ...).
    """
    from oscsync.audio import AudioError  # here: the CLI starts without the audio stack
    from oscsync.audio.devices import output_devices

    try:
        found = output_devices()
    except AudioError as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException("no audio output device found")
    for device in found:
        click.echo(device.line())
