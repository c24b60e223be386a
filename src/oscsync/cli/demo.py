"""``oscsync demo``: the README's main job."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from oscsync.cli.params import DurationType, overwrite_option, refuse_existing, skew_option
from oscsync.cli.runtime import AppContext, pass_app, running
from oscsync.terminal.wording import fit, plural, terminal_width


@click.command(
    epilog="""\b
Examples:
  oscsync demo                          # about 10 s, silent, WAV files of what each follower played
  oscsync demo --audio                  # hear it (needs a sound card and sounddevice)
  oscsync demo --duration 10 --offset 80ms --out demo-wavs
"""
)
@click.option(
    "--duration",
    "-d",
    type=DurationType(minimum=1.5, maximum=120),
    default=5.0,
    show_default=True,
    help="Seconds of ticks in each of the two runs.",
)
@click.option(
    "--offset",
    type=DurationType(minimum=0.001, maximum=5),
    default=0.05,
    show_default=True,
    help="Forward offset of the second run.",
)
@skew_option(0.15, "How far ahead follower B's clock is (s).")
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of the emulated links' random delays (the same draws each run; see netem --seed).",
)
@click.option("--audio", is_flag=True, help="Play the followers through the sound card.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the WAV renders [default: a new temporary directory].",
)
@overwrite_option("the WAV files in --out")
@pass_app
def demo(
    app: AppContext,
    duration: float,
    offset: float,
    skew: float,
    seed: int,
    audio: bool,
    out: Path | None,
    overwrite: bool,
) -> None:
    """Show forward synchronisation beating network jitter, on this machine, in ~10 s.

    A leader sends /tick at 240 bpm to two followers through an emulated Wi-Fi link (netem:
    20 ms ± 15 ms). Follower B's clock is set 150 ms ahead on purpose and follows the leader's
    clock with clock pings (--sync). Run 1 sends plain ticks, played on arrival (workshop
    example 2); run 2 timetags each tick OFFSET ahead (example 3). Then it tells you what changed.
    """
    from oscsync import audio as audio_module
    from oscsync.apps import demo as app_demo
    from oscsync.apps import lab
    from oscsync.audio import sounds
    from oscsync.clock import Clock

    link = app_demo.DEMO_LINK
    runs = app_demo.phases(duration, offset, skew, link, seed)
    names = ["A", f"B ({skew * 1e3:+g} ms, synced)"]
    try:
        paths = {
            audio_module.TICK: sounds.default_path("tick"),
            audio_module.ACCENT: sounds.default_path("tock"),
        }
    except audio_module.AudioError as exc:
        raise click.ClickException(str(exc)) from None
    if audio:
        # Checked before the intro, not after the first run has started (issue #13).
        reason = audio_module.probe_sounddevice()
        if reason is not None:
            raise click.ClickException(f"--audio cannot play here: {reason}")
    else:
        if out is None:
            out = Path(tempfile.mkdtemp(prefix="oscsync-demo-"))
        for run_name, _ in runs:  # the files make_player writes below
            for letter in "AB":
                refuse_existing(out / f"{run_name}-{letter}.wav", overwrite, "'--out'")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(
                f"cannot create {out}: {exc.strerror}", param_hint="'--out'"
            ) from None
    titles = {"plain": "plain ticks", "forward": f"forward sync {offset * 1e3:g} ms"}
    app.note(
        f"A leader sends /tick at {app_demo.DEMO_BPM:g} bpm to followers A and B, each through its"
        f" own emulated Wi-Fi link ({link.describe()}).\nB's clock is {skew * 1e3:g} ms ahead on "
        "purpose; B follows the leader's clock with clock pings. The first bar is a count-in."
    )
    summaries = []
    rendered: list[Path] = []
    app.keep_time()
    with running() as run:
        for name, spec in runs:
            app.note(f"run: {titles[name]} ({plural(spec.ticks, 'tick')}) ...")

            def make_player(index: int, clock: Clock, name: str = name) -> audio_module.Player:
                if audio:
                    choice = audio_module.parse_audio_choice("sounddevice")
                else:
                    assert out is not None
                    path = out / f"{name}-{'AB'[index]}.wav"
                    rendered.append(path)
                    choice = audio_module.parse_audio_choice(f"wav:{path}")
                try:
                    return audio_module.open_player(choice, clock, paths, notice=app.note)
                except audio_module.AudioError as exc:
                    raise click.ClickException(str(exc)) from None

            result = lab.run_session(spec, app.clock, make_player=make_player, on_warning=app.warn)
            summaries.append(app_demo.summarise(name, titles[name], result))
            for follower in result.followers:
                if follower.sync_text:
                    app.note(f"  B: {follower.sync_text}")
    width = terminal_width(sys.stdout)  # a narrow terminal: no row or sentence wraps mid-word
    if len(summaries) < 2:  # stopped by Ctrl-C or SIGTERM: a clean stop, nothing to compare
        if summaries:  # the partial result: the run that finished (issue #13)
            click.echo()
            click.echo(app_demo.table(summaries, names, width))
        app.note(f"demo: stopped after {len(summaries)} of 2 runs; nothing to compare")
        # A run with a defined end, cut short: 130 after Ctrl-C (issue #13).
        raise click.exceptions.Exit(run.exit_code)
    before, after = summaries
    click.echo()
    click.echo(app_demo.table(summaries, names, width))
    note = app_demo.SPREAD_NOTE
    click.echo(note if width is None or width >= 100 else fit(note.replace("\n", " "), width, ""))
    click.echo()
    click.echo(fit(app_demo.headline(before, after) + ".", width, indent=""))
    app.note(app.realtime_text())
    explained = (
        "Plain ticks sound when they arrive, so the network's jitter is heard as uneven beats.\n"
        f"Timetagged {offset * 1e3:g} ms ahead, each tick waits for its time at the follower; B "
        "translates the leader's\ntimetags onto its own clock, so both play together despite "
        f"B's {skew * 1e3:g} ms skew."
    )
    if width is not None and width < 100:  # one paragraph per sentence, wrapped to the terminal
        explained = fit(explained.replace("leader's\ntimetags", "leader's timetags"), width, "")
    click.echo(explained)
    if rendered:
        click.echo(f"What each follower played (WAV, 48 kHz): {out}/")
        for path in rendered:
            click.echo(f"  {path.name}")
