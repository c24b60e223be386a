"""``--map`` rules (oscsync.osc.rewrite): what they build from a message, and every bad rule
refused with one line."""

from __future__ import annotations

import pytest

from oscsync.osc import codec
from oscsync.osc.rewrite import (
    MAX_RULES,
    RewriteError,
    Rewriter,
    Rule,
    RuleError,
    parse_rule,
)


def tick(*args: object, types: str | None = None) -> codec.Message:
    return codec.Message("/tick", tuple(args), types or "".join(map(codec.infer_type, args)), 7)


def test_scsynth_s_new_from_a_tick_with_the_beat_in_a_control() -> None:
    rule = parse_rule("/tick=/s_new s:tick i:-1 i:0 i:0 s:beat i:$1")
    out = rule.rewrite(tick(3))
    assert out == codec.Message("/s_new", ("tick", -1, 0, 0, "beat", 3), "siiisi", 7)
    # What the rule built is what the encoder sends, byte for byte.
    assert codec.decode_message(codec.encode_message(out.address, out.args, out.types)) == (
        out._replace(timetag=None)
    )


def test_pass_on_rename_and_every_kind_of_template_argument() -> None:
    assert parse_rule("/tick").rewrite(tick(1)) == tick(1)
    assert parse_rule("/tick=/beat").rewrite(tick(1, "x")) == codec.Message(
        "/beat", (1, "x"), "is", 7
    )
    rule = parse_rule('/tick=/a h:5 f:0.5 d:-2 s:"two words" s:$$1 T F N $2 $* f:$1 s:$1')
    out = rule.rewrite(tick(2, "x"))
    assert out.types == "hfdssTFNsisfs"
    assert out.args == (5, 0.5, -2.0, "two words", "$1", True, False, None, "x", 2, "x", 2.0, "2")


def test_pure_data_floats_become_ints_by_rounding_and_strings_stay_strings() -> None:
    rule = parse_rule("/tick=/beat i:$1 h:$1 s:$2")
    assert rule.rewrite(tick(2.0, "bar", types="fs")).args == (2, 2, "bar")
    assert rule.rewrite(tick(2.6, "bar", types="fs")).args == (3, 3, "bar")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (tick(), "map-missing-arg"),  # $1 of a message without arguments
        (tick("three"), "map-type"),  # a string where an int is wanted
        (tick(b"\x00", types="b"), "map-type"),
        (tick(float("inf"), types="f"), "map-range"),
        (tick(2**40), "map-range"),  # an int64 into an int32
    ],
)
def test_a_message_a_rule_cannot_fill_is_refused_with_a_reason(
    message: codec.Message, reason: str
) -> None:
    with pytest.raises(RewriteError) as error:
        parse_rule("/tick=/beat i:$1").rewrite(message)
    assert error.value.reason == reason


def test_the_first_matching_rule_wins_patterns_match_and_the_rest_is_not_sent() -> None:
    rewriter = Rewriter(
        [parse_rule("/seq/kick=/drum i:36"), parse_rule("/seq/*=/drum i:0"), parse_rule("/tick")]
    )
    kick = codec.Message("/seq/kick", (), "", None)
    hat = codec.Message("/seq/hat", (), "", None)
    assert rewriter.rewrite(kick) == codec.Message("/drum", (36,), "i", None)
    assert rewriter.rewrite(hat) == codec.Message("/drum", (0,), "i", None)
    assert rewriter.rewrite(tick(1)) == tick(1)
    assert rewriter.rewrite(codec.Message("/chat", ("hi",), "s", None)) is None
    # An incoming pattern reaches the plain address it matches (OSC 1.0 dispatch).
    assert rewriter.rewrite(codec.Message("/t?ck", (1,), "i", None)) == codec.Message(
        "/t?ck", (1,), "i", None
    )


def test_an_incoming_pattern_is_compiled_once_per_message_not_once_per_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flood of /x/* through 64 rules compiled the pattern 64 times a message (125 µs)."""
    from oscsync.osc import rewrite

    compiled: list[str] = []

    class Counting(rewrite.AddressPattern):
        def __init__(self, pattern: str) -> None:
            compiled.append(pattern)
            super().__init__(pattern)

    rules = [parse_rule(f"/synth/{k}/gate=/s_new i:$1") for k in range(MAX_RULES - 1)]
    rewriter = Rewriter([*rules, parse_rule("/last")])
    monkeypatch.setattr(rewrite, "AddressPattern", Counting)
    assert rewriter.rewrite(codec.Message("/x/*", (1,), "i", None)) is None
    assert rewriter.rewrite(codec.Message("/l?st", (1,), "i", None)) == codec.Message(
        "/l?st", (1,), "i", None
    )
    assert compiled == ["/x/*", "/l?st"]


def test_without_rules_every_type_passes_as_it_came() -> None:
    # Issue 28: the encoder sends every type now, liblo's S and c and arrays included.
    for message in (
        tick(1),
        codec.Message("/a", ("sym", "A"), "Sc", None),
        codec.Message("/a", (1, [2, [3.0]], "s"), "i[i[f]]s", None),
    ):
        assert Rewriter().rewrite(message) == message
        codec.encode_message(message.address, message.args, message.types)  # and it is sendable


def test_an_argument_after_an_array_is_taken_with_its_own_type() -> None:
    received = codec.Message("/a", (1, [2, 3], "x"), "i[ii]s", None)
    rules = Rewriter([parse_rule("/a=/b $2 $3 s:$3")])
    assert rules.rewrite(received) == codec.Message("/b", ([2, 3], "x", "x"), "[ii]ss", None)
    with pytest.raises(RewriteError) as error:
        Rewriter([parse_rule("/a=/b i:$2")]).rewrite(received)
    assert error.value.reason == "map-type"


def test_a_rule_may_send_on_to_a_pattern_as_the_encoder_does() -> None:
    # The encoder writes ',' in an address ({a,b} patterns, issue 28): a rule may name one.
    rule = parse_rule("/tick=/{kick,snare} $1")
    out = Rewriter([rule]).rewrite(tick(1))
    assert out is not None and out.address == "/{kick,snare}"
    assert codec.decode(codec.encode_message(out.address, out.args, out.types))[0].address == (
        "/{kick,snare}"
    )


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ("tick", "pattern 'tick' must start with '/'"),
        ("/tick=", "give an address after '='"),
        ("/tick=beat", "address 'beat' must start with '/'"),
        ("/tick=/a#b", "may not hold '#'"),
        ("/ti[ck=/a", "unclosed '[' or '{'"),
        ("/t{a,b=/a", "unclosed '[' or '{'"),
        ("/tick=/a q:1", "'q:1' is not a template argument"),
        ("/tick=/a i", "'i' is not a template argument"),
        ("/tick=/a i:x", "'i:x': 'x' is not an int"),
        ("/tick=/a f:nan", "give a finite number"),
        ("/tick=/a f:1e400", "give a finite number"),
        ("/tick=/a f:1e39", "1e39 does not fit type 'f'"),
        ("/tick=/a i:2147483648", "2147483648 does not fit type 'i'"),
        ("/tick=/a h:" + "9" * 900, "is not an int"),  # bounded before int() reads it
        ("/tick=/a $0", "argument numbers go from $1 to $999"),
        ("/tick=/a i:$1000", "argument numbers go from $1 to $999"),
        ("/tick=/a s:$x", "write $$ for a literal '$'"),
        ('/tick=/a s:"open', "No closing quotation"),
        ("/tick=/a s:\x1b[2J", "may not hold control characters"),
        ("/tick\x00=/a", "may not hold control characters"),
        ("/tick=/a " + "i:1 " * 65, "at most 64 arguments"),
        ("/" + "a" * 2000, "at most 1024 characters"),
    ],
)
def test_a_bad_rule_is_one_line_saying_what_is_wrong(rule: str, said: str) -> None:
    with pytest.raises(RuleError) as error:
        parse_rule(rule)
    message = str(error.value)
    assert said in message
    assert "\n" not in message and "\x1b" not in message


def test_too_many_rules_and_a_pattern_mapped_twice_are_refused() -> None:
    with pytest.raises(RuleError, match="at most 64 --map rules"):
        Rewriter([parse_rule(f"/a{n}") for n in range(MAX_RULES + 1)])
    with pytest.raises(RuleError, match="/tick is mapped twice"):
        Rewriter([parse_rule("/tick=/a"), parse_rule("/tick=/b")])


def test_a_rule_keeps_its_text_for_messages() -> None:
    assert parse_rule("/tick=/beat").text == "/tick=/beat"
    assert isinstance(parse_rule("/tick"), Rule)
