"""A participant's mistakes get a message that says what to do; nothing fails silently (#13)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess

import pytest
from click.testing import CliRunner

from conftest import LineReader, free_udp_port, oscsync_command
from oscsync.cli.main import cli
from oscsync.osc import codec


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dump", "--clock-skew", "0.1"], "e.g. oscsync --clock-skew SECONDS dump"),
        (["dump", "-q"], "e.g. oscsync -q dump"),
        (
            ["metronome", "listen", "--clock-drift", "5"],
            "oscsync --clock-drift PPM metronome listen",
        ),
    ],
)
def test_a_global_option_after_the_subcommand_says_where_it_goes(
    args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "is an option of oscsync itself: write it before the command" in result.output
    assert expected in result.output


def test_a_forgotten_port_says_add_a_port() -> None:
    result = CliRunner().invoke(cli, ["send", "127.0.0.1", "/chat", "hi"])
    assert result.exit_code == 2
    assert "'127.0.0.1' has no port: add a port, e.g. 127.0.0.1:9000" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["metronome", "send", "--peer", "127.0.0.1:9", "--bpm", "fast"],
        ["timetag", "sweep", "--bpm", "fast"],
        ["sequence", "send", "beat.txt", "--peer", "127.0.0.1:9", "--bpm", "fast"],
    ],
)
def test_a_bpm_that_is_not_a_number_gets_a_plain_message(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Invalid value for '--bpm': 'fast' is not a number (e.g. 120" in result.output


def test_send_exits_1_when_nothing_was_sent() -> None:
    too_long = "a" * 70_000  # over UDP's 65,507-byte payload: "Message too long"
    result = CliRunner().invoke(cli, ["send", "127.0.0.1:9", "/chat", too_long])
    assert result.exit_code == 1
    assert "Message too long" in result.output
    assert "Error: nothing was sent" in result.output


def test_send_warns_when_at_is_in_the_past() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["send", f"127.0.0.1:{port}", "/go", "--at", "2026-11-24T20:30:00Z"]
        )
    assert result.exit_code == 0
    assert "warning: --at 2026-11-24T20:30:00" in result.output
    assert "s in the past" in result.output


def test_send_at_a_future_time_does_not_warn() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["send", f"127.0.0.1:{port}", "/go", "--at", "2035-01-01T00:00:00Z"]
        )
    assert result.exit_code == 0
    assert "warning" not in result.output


def test_chat_talking_to_itself_warns() -> None:
    port = free_udp_port()
    done = subprocess.run(
        oscsync_command(
            "chat", "--listen", str(port), "--peer", f"127.0.0.1:{port}", "--linger", "0.2"
        ),
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0
    assert f"--peer 127.0.0.1:{port} is this chat's own --listen address" in done.stderr


def test_allow_that_can_never_match_warns_the_classic_forgot_listen_0000() -> None:
    result = CliRunner().invoke(
        cli,
        ["dump", "--listen", "127.0.0.1:0", "--allow", "192.168.1.0/24", "--duration", "0"],
    )
    assert result.exit_code == 0
    assert "warning: --allow 192.168.1.0/24 can never match" in result.output
    assert "--listen 0.0.0.0:" in result.output


def test_clock_interrupted_prints_what_it_had() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_peer:
        silent_peer.bind(("127.0.0.1", 0))
        silent_peer.settimeout(20)
        port = silent_peer.getsockname()[1]
        proc = subprocess.Popen(
            oscsync_command("clock", "--peer", f"127.0.0.1:{port}", "--count", "1000"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            silent_peer.recv(1024)  # the first ping: clock is measuring
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130
    assert out.startswith(f"peer 127.0.0.1:{port}: 0 of ")
    assert "clock: interrupted after" in err
    assert "Traceback" not in err


def test_listen_sync_interrupted_before_any_sender_says_so_plainly() -> None:
    port = free_udp_port()
    proc = subprocess.Popen(
        oscsync_command(
            "metronome", "listen", "--sync", "--audio", "none", "--listen", f"127.0.0.1:{port}"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stdout is not None
    try:
        errors = LineReader(proc.stderr)
        errors.wait_for(lambda line: "listening on" in line, timeout=20)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
        lines = errors.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert code == 0
    assert "clock sync: no ticks arrived, so there was no sender's clock to follow" in lines


def test_help_examples_cannot_rot_a_time_of_day_is_the_next_one() -> None:
    from oscsync.cli.params import next_time_of_day
    from oscsync.osc import timetag

    now = 1_764_000_000.0  # 2025-11-24T16:00:00Z
    assert timetag.to_unix(next_time_of_day("20:30Z", now) or 0) == now + 4.5 * 3600
    assert timetag.to_unix(next_time_of_day("15:00Z", now) or 0) == now + 23 * 3600  # tomorrow
    assert next_time_of_day("2026-11-24T20:30:00Z", now) is None  # a date: ISO, not this form
    send_help = CliRunner().invoke(cli, ["send", "--help"]).output
    assert "--at 20:30Z" in send_help and not re.search(r"--at \d{4}-", send_help)


def test_demo_audio_checks_the_audio_backend_before_printing_its_intro(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from oscsync import audio

    monkeypatch.setattr(audio, "probe_sounddevice", lambda: "no audio output device (none)")
    result = CliRunner().invoke(cli, ["demo", "--audio"])
    assert result.exit_code == 1
    assert result.output == "Error: --audio cannot play here: no audio output device (none)\n"


@pytest.mark.parametrize("mistyped", ["--inn", "-in", "--inn=0.25"])
def test_a_mistyped_send_option_is_refused_with_the_option_meant(mistyped: str) -> None:
    """Issue 30 item 1: `--inn 0.25` used to go out as OSC data, `-in` gave a --repeat error."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        port = receiver.getsockname()[1]
        result = CliRunner().invoke(cli, ["send", f"127.0.0.1:{port}", "/chat", "hi", mistyped])
        with pytest.raises(BlockingIOError):
            receiver.recv(2048)  # nothing was sent
    assert result.exit_code == 2
    assert "did you mean --in?" in result.output
    assert "write -- before the arguments" in result.output


def test_after_a_double_dash_and_as_negative_numbers_such_words_are_data() -> None:
    words = ["-1", "-0.5", "-1e3", "-inf", "-0x1f"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        where = f"127.0.0.1:{receiver.getsockname()[1]}"
        numbers = CliRunner().invoke(cli, ["send", where, "/x", *words, "-n", "1"])
        assert numbers.exit_code == 0, numbers.output
        (message,) = codec.decode(receiver.recv(2048))
        quoted = CliRunner().invoke(cli, ["send", where, "/chat", "--", "hi", "--inn", "0.25"])
        assert quoted.exit_code == 0, quoted.output
        (chat,) = codec.decode(receiver.recv(2048))
    assert message.args == (-1, -0.5, -1000.0, "-inf", "-0x1f")
    assert chat.args == ("hi", "--inn", 0.25)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["netem", "--delay", "20", "--forward", "127.0.0.1:9"],
            "Invalid value for '--delay': 20 is above the maximum of 10 s (did you mean 20ms?)",
        ),
        (
            ["metronome", "send", "--peer", "127.0.0.1:9", "--offset", "100"],
            "Invalid value for '--offset': 100 is above the maximum of 60 s (did you mean 100ms?)",
        ),
        (
            ["metronome", "send", "--peer", ":9001"],
            "':9001': the host part is empty: write 127.0.0.1:9001 for this machine",
        ),
        (
            ["dump", "--listen", ":9001"],
            "':9001': the host part is empty: write 9001 for 127.0.0.1:9001 (the default), or "
            "0.0.0.0:9001 for every interface",
        ),
        (
            ["send", "my-laptop.invalid:9000", "/x"],
            "; `oscsync peers` lists the OSC services on the network, and a peer advertised as "
            "NAME is reached as @NAME (or give its IP address)",
        ),
    ],
    ids=["delay-in-ms", "offset-in-ms", "peer-without-host", "listen-without-host", "unresolved"],
)
def test_where_a_participant_is_stuck_the_error_says_what_to_write(
    args: list[str], expected: str
) -> None:
    """Issue 30 item 8."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())  # click may wrap the line


@pytest.mark.parametrize(
    "args",
    [
        ["netem", "--delay", "20000000", "--forward", "127.0.0.1:9"],  # no unit fits either
        ["metronome", "send", "--peer", "127.0.0.1:9", "--offset", "100s"],  # a unit was given
    ],
)
def test_no_unit_hint_where_milliseconds_would_not_help(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "above the maximum" in result.output
    assert "did you mean" not in result.output


# -- issue 30 item 7: "nothing is listening", said the same way everywhere ---------------------


def test_one_udp_send_to_a_closed_port_is_an_error_not_silence() -> None:
    port = free_udp_port()
    result = CliRunner().invoke(cli, ["send", f"127.0.0.1:{port}", "/chat", "hi"])
    assert result.exit_code == 1
    assert result.output == (
        f"warning: nothing is listening at 127.0.0.1:{port} (ICMP port unreachable)\n"
        "Error: could not deliver 1 of 1 datagram: refused, nothing listens there (see the "
        "warning above)\n"
    )


def test_repeated_udp_sends_to_a_closed_port_count_every_refusal() -> None:
    port = free_udp_port()
    args = ["send", f"127.0.0.1:{port}", "/x", "-n", "3", "--interval", "0.01"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "could not deliver 3 of 3 datagrams" in result.output
    assert "still sending" not in result.output  # send stops: it does not keep sending


def test_one_tcp_send_to_a_closed_port_does_not_promise_to_try_again() -> None:
    with socket.socket() as closed:  # a port that refuses: bound, not listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = CliRunner().invoke(cli, ["send", f"tcp://127.0.0.1:{port}", "/chat", "hi"])
    assert result.exit_code == 1
    assert result.output == (
        f"warning: cannot connect to tcp://127.0.0.1:{port}: Connection refused\n"
        "Error: could not send to every peer (see the warning above)\n"
    )


def test_a_stream_to_a_closed_port_warns_once_keeps_going_and_counts() -> None:
    port = free_udp_port()
    args = ["metronome", "send", "--peer", f"127.0.0.1:{port}", "--count", "3", "--bpm", "600"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert result.output.count("(ICMP port unreachable); still sending") == 1
    assert re.search(
        r"metronome: sent 3 ticks.*; refused [1-3] \(nothing listened\)", result.output
    )


def test_refusals_with_room_say_they_count_sync_messages_too() -> None:
    """``--room`` sends 100 sync messages a second to the peer: "sent 2 ticks; refused 108
    (nothing listened)" read as 108 refused ticks. Which datagram a refusal was for is not
    known (the kernel reports it on the next send to that peer): the line says over what."""
    port = free_udp_port()
    args = ["metronome", "send", "--peer", f"127.0.0.1:{port}", "--count", "2", "--bpm", "300"]
    result = CliRunner().invoke(cli, [*args, "--room"])
    assert result.exit_code == 0, result.output
    found = re.search(
        r"metronome: sent 2 ticks.*; refused (\d+) \(nothing listened\) "
        r"over 2 ticks and (\d+) sync messages sent",
        result.output,
    )
    assert found is not None, result.output
    assert int(found[1]) >= 1 and int(found[2]) >= 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # inf: a traceback (Fraction(inf)) instead of a usage error
        (["send", "127.0.0.1:9", "/x", "--in", "1e400ms"], "'1e400ms' is too large"),
        (["dump", "--duration", "1e400"], "'1e400' is too large"),
        # 5e9 s is over 68 years: the timetag wrapped (1e12 s ahead was sent as in the past)
        (["send", "127.0.0.1:9", "/x", "--in", "5e9"], "above the maximum of 1e+09 s"),
        # time.sleep(1e300): OverflowError
        (["send", "127.0.0.1:9", "/x", "-n", "2", "--interval", "1e300"], "above the maximum"),
    ],
    ids=["in-inf", "duration-inf", "in-over-68-years", "interval-huge"],
)
def test_a_duration_no_clock_or_timetag_can_hold_is_a_usage_error(
    args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "args",
    [
        # click's FloatRange lets nan through its bounds: ValueError / NaN-to-ratio tracebacks
        ["metronome", "send", "--peer", "127.0.0.1:9", "--count", "1", "--bpm", "nan"],
        ["link", "--duration", "0.1", "--bpm", "nan"],
        ["sequence", "send", "beat.txt", "--peer", "127.0.0.1:9", "--swing", "nan"],
        # and inf where there is no maximum: ZeroDivisionError
        ["stats", "ticks.jsonl", "--bpm", "inf"],
    ],
    ids=["metronome-bpm", "link-bpm", "sequence-swing", "stats-bpm"],
)
def test_a_number_that_is_not_finite_is_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "is not a finite number" in result.output
