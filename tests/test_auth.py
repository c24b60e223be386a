"""Signed bundles (issue #27 item 2): the MAC, the wire, replays, keys; no sockets here."""

from __future__ import annotations

import itertools
import os
import struct
import threading
from pathlib import Path

import pytest

from oscsync.clock import FakeClock
from oscsync.net.core import ReceiveCore
from oscsync.osc import auth, codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.sync.ping import encode_ping

KEY = auth.Key(b"0123456789abcdef-shared", "test")
OTHER = auth.Key(b"fedcba9876543210-other!", "test")
LEADER = ("192.168.1.20", 9001)
ELSEWHERE = ("192.168.1.66", 4000)


def _tick_bundle(stamp: int, beat: int = 1) -> bytes:
    return codec.encode_bundle(stamp, [codec.encode_message("/tick", [beat], "i")])


STAMP = tt.from_unix(1_700_000_000.5)


def test_a_signed_bundle_is_the_bundle_plus_one_element_of_sixty_bytes() -> None:
    signer = auth.Signer(KEY, session=b"S" * 8)
    bundle = _tick_bundle(STAMP)
    signed = signer.sign(bundle)
    assert signed[: len(bundle)] == bundle
    assert len(signed) - len(bundle) == auth.ELEMENT_SIZE == 60
    # The extra element is an ordinary OSC message: what a receiver without a key decodes.
    messages = codec.decode(signed)
    assert [m.address for m in messages] == ["/tick", auth.ADDRESS]
    (payload,) = messages[1].args
    assert messages[1].types == "b" and len(payload) == 32
    assert payload[:8] == b"S" * 8 and struct.unpack(">Q", payload[8:16]) == (1,)
    # MAC: HMAC-SHA-256 over label, the bundle up to the element, session and counter, 16 bytes.
    assert payload[16:] == KEY.mac(bundle, payload[:8], payload[8:16])
    assert struct.unpack(">Q", codec.decode(signer.sign(bundle))[1].args[0][8:16]) == (2,)


def test_a_genuine_bundle_opens_to_the_bundle_it_signed() -> None:
    bundle = _tick_bundle(STAMP)
    opened = auth.Verifier(KEY).open(auth.Signer(KEY).sign(bundle), LEADER)
    assert opened == (bundle, True)


def test_unsigned_data_passes_unchecked() -> None:
    bundle = _tick_bundle(STAMP)
    assert auth.Verifier(KEY).open(bundle, LEADER) == (bundle, False)
    assert auth.Verifier(KEY).open(b"", LEADER) == (b"", False)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:],  # the timetag
        lambda data: data[:-20] + bytes([data[-20] ^ 1]) + data[-19:],  # the counter
        lambda data: data[:-1] + bytes([data[-1] ^ 0x80]),  # the MAC
        lambda data: auth.Signer(OTHER).sign(data[: -auth.ELEMENT_SIZE]),  # another key
    ],
    ids=["timetag", "counter", "mac", "other-key"],
)
def test_a_changed_byte_or_another_key_is_a_bad_signature(tamper: object) -> None:
    signed = auth.Signer(KEY).sign(_tick_bundle(STAMP))
    verifier = auth.Verifier(KEY)
    assert verifier.open(tamper(signed), LEADER) == "bad-signature"  # type: ignore[operator]
    assert verifier.refused["bad-signature"] == 1 and verifier.accepted == 0


def test_a_replay_is_refused_from_any_address_but_reordering_is_not() -> None:
    signer, verifier = auth.Signer(KEY), auth.Verifier(KEY)
    packets = [signer.sign(_tick_bundle(tt.add_seconds(STAMP, k))) for k in range(5)]
    for index in (0, 2, 1, 4, 3):  # a jittery link delivers them out of order: all taken
        assert verifier.open(packets[index], LEADER)[1] is True  # type: ignore[index]
    assert verifier.open(packets[2], LEADER) == "replayed"
    assert verifier.open(packets[2], ELSEWHERE) == "replayed"  # copied to another address
    assert verifier.refused["replayed"] == 2


def test_a_counter_older_than_the_window_is_refused() -> None:
    signer, verifier = auth.Signer(KEY), auth.Verifier(KEY, window=8)
    first = signer.sign(_tick_bundle(STAMP))
    for _ in range(8):
        verifier.open(signer.sign(_tick_bundle(STAMP)), LEADER)
    assert verifier.open(first, LEADER) == "replayed"  # never seen, but 8 behind the highest


def test_a_counter_that_jumps_far_ahead_is_taken_and_the_window_follows_it() -> None:
    signer, verifier = auth.Signer(KEY), auth.Verifier(KEY, window=8)
    assert verifier.open(signer.sign(_tick_bundle(STAMP)), LEADER)[1] is True  # type: ignore[index]
    signer._counter = itertools.count(2**62)  # a sender with the key, buggy or hostile
    jumped = signer.sign(_tick_bundle(STAMP))
    assert verifier.open(jumped, LEADER)[1] is True  # type: ignore[index]
    assert verifier.open(jumped, LEADER) == "replayed"
    assert verifier.open(signer.sign(_tick_bundle(STAMP)), LEADER)[1] is True  # type: ignore[index]


def test_an_old_session_replayed_as_the_leader_is_refused_by_its_timetag() -> None:
    old_run, new_run = auth.Signer(KEY), auth.Signer(KEY)
    recorded = old_run.sign(_tick_bundle(STAMP))  # an earlier run, recorded by someone
    verifier = auth.Verifier(KEY)
    later = tt.add_seconds(STAMP, 3600)
    assert verifier.open(new_run.sign(_tick_bundle(later)), LEADER)[1] is True  # type: ignore[index]
    assert verifier.open(recorded, LEADER) == "replayed"
    # A sender that restarts writes later timetags under its new session: taken.
    restarted = auth.Signer(KEY)
    assert verifier.open(restarted.sign(_tick_bundle(tt.add_seconds(later, 1))), LEADER)[1]  # type: ignore[index]


def test_replay_state_is_bounded() -> None:
    verifier = auth.Verifier(KEY, max_sessions=4, max_sources=4)
    for k in range(50):
        verifier.open(auth.Signer(KEY).sign(_tick_bundle(STAMP)), ("10.0.0.1", k))
    assert len(verifier._sessions) == 4 and len(verifier._newest) == 4


def test_a_message_is_signed_in_a_bundle_timetagged_immediately() -> None:
    ping = encode_ping(1, STAMP)
    signed = auth.Signer(KEY).sign_message(ping)
    body, ok = auth.Verifier(KEY).open(signed, LEADER)  # type: ignore[misc]
    assert ok and codec.decode(body) == [codec.decode_message(ping, tt.IMMEDIATELY)]
    assert auth.PacketAuth(KEY).sign_bundles(ping) == ping  # a plain message stays plain
    with pytest.raises(ValueError, match="bundle"):
        auth.Signer(KEY).sign(ping)


def _core(verifier: auth.Verifier | None) -> tuple[ReceiveCore, list[Received], list[str]]:
    warnings: list[str] = []
    core = ReceiveCore(FakeClock(), on_warning=warnings.append, verifier=verifier)
    got: list[Received] = []
    core.handler = got.append
    return core, got, warnings


def test_the_receive_core_marks_checked_messages_and_drops_forged_ones() -> None:
    core, got, warnings = _core(auth.Verifier(KEY))
    signer = auth.Signer(KEY)
    signed = signer.sign(_tick_bundle(STAMP))
    core.feed(signed, LEADER)
    core.feed(_tick_bundle(STAMP), LEADER)  # unsigned: delivered, not authenticated
    core.feed(auth.Signer(OTHER).sign(_tick_bundle(STAMP)), ("192.168.1.66\x1b", 4000))
    core.feed(signed, ELSEWHERE)  # a replay
    assert [(r.address, r.authenticated) for r in got] == [("/tick", True), ("/tick", False)]
    assert core.stats.drops["bad-signature"] == 1 and core.stats.drops["replayed"] == 1
    assert len(warnings) == 2
    assert "another key, or a forgery" in warnings[0] and "\x1b" not in warnings[0]
    assert "a replay" in warnings[1]


def test_a_verifier_that_fails_drops_and_counts_the_datagram_and_the_core_goes_on() -> None:
    """Whatever a verifier raises on hostile bytes is a drop by reason, not the end of the
    receive thread that called feed()."""

    class Failing(auth.Verifier):
        def open(self, data: bytes, source: object = None) -> tuple[bytes, bool] | str:
            if source == ELSEWHERE:
                raise ValueError("bad\x1b[2J bytes")
            return super().open(data, source)

    core, got, warnings = _core(Failing(KEY))
    signer = auth.Signer(KEY)
    core.feed(signer.sign(_tick_bundle(STAMP, 1)), ELSEWHERE)
    core.feed(signer.sign(_tick_bundle(STAMP, 2)), LEADER)
    assert [(r.args, r.authenticated) for r in got] == [((2,), True)]
    assert core.stats.drops == {"unverifiable": 1}
    assert len(warnings) == 1 and "could not be checked" in warnings[0]
    assert "\x1b" not in warnings[0]


def test_without_a_key_the_signature_element_reaches_no_application() -> None:
    core, got, _ = _core(None)
    core.feed(auth.Signer(KEY).sign(_tick_bundle(STAMP)), LEADER)
    assert [(r.address, r.authenticated) for r in got] == [("/tick", False)]


def test_key_text_loses_its_surrounding_whitespace_and_must_be_long_enough() -> None:
    assert auth.Key.from_text("  0123456789abcdef\n", "x").secret == b"0123456789abcdef"
    with pytest.raises(auth.AuthError, match="at least 16"):
        auth.Key.from_text("short\n", "OSCSYNC_KEY")
    assert "secret" not in repr(auth.Key.from_text("0123456789abcdef", "x")).split("origin")[1]
    assert "0123456789abcdef" not in repr(auth.Key.from_text("0123456789abcdef", "x"))


def test_load_key_from_file_or_environment_but_not_both(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("0123456789abcdef0123\n")
    path.chmod(0o600)
    key, warning = auth.load_key(path, {})
    assert key is not None and key.secret == b"0123456789abcdef0123" and warning is None
    key, _ = auth.load_key(None, {"OSCSYNC_KEY": "from-the-environment!"})
    assert key is not None and key.origin == "OSCSYNC_KEY"
    assert auth.load_key(None, {}) == (None, None)
    with pytest.raises(auth.AuthError, match="give one"):
        auth.load_key(path, {"OSCSYNC_KEY": "from-the-environment!"})
    with pytest.raises(auth.AuthError, match="cannot read"):
        auth.load_key(tmp_path / "missing", {})
    big = tmp_path / "big"
    big.write_bytes(b"x" * (auth.MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(auth.AuthError, match="not a key file"):
        auth.load_key(big, {})


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX file modes")
def test_a_key_file_others_can_read_is_used_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("0123456789abcdef0123\n")
    path.chmod(0o644)
    key, warning = auth.load_key(path, {})
    assert key is not None and warning is not None and "chmod 600" in warning


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_as_key_file_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key"
    os.mkfifo(path)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            auth.load_key(path, {})
        except BaseException as exc:  # reported to the test's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(5.0)
    if loader.is_alive():  # blocked opening the pipe: give it a writer, so it ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        loader.join(5.0)
        pytest.fail("loading the key waited for a writer on the named pipe")
    assert isinstance(outcome[0], auth.AuthError) and "not a regular file" in str(outcome[0])
