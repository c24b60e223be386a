"""The pattern file format (issue #19): parsing, errors naming line and column, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oscsync.files import pattern
from oscsync.files.pattern import (
    ACCENT_VELOCITY,
    NORMAL_VELOCITY,
    NOTE_VELOCITY,
    Hit,
    Pattern,
    PatternError,
    Voice,
    format_pattern,
    parse,
)

ISSUE_EXAMPLE = """\
kick:  x... x... x... x...
snare: .... o... .... o...
hat:   ..o. ..o. ..o. ..o.
bass:  36 . . 36 . . 39 . | 41 . . . 39 . 36 .
"""


def test_the_issue_example_parses_to_four_voices_of_16_steps() -> None:
    parsed = parse(ISSUE_EXAMPLE)
    assert [v.name for v in parsed.voices] == ["kick", "snare", "hat", "bass"]
    assert parsed.length == 16
    assert parsed.voices[0].steps[0] == Hit(ACCENT_VELOCITY)
    assert parsed.voices[0].steps[1] is None
    assert parsed.voices[1].steps[4] == Hit(NORMAL_VELOCITY)
    assert parsed.voices[3].steps[3] == Hit(NOTE_VELOCITY, 36)
    assert parsed.voices[3].steps[8] == Hit(NOTE_VELOCITY, 41)
    assert parsed.hits(4) == [("kick", Hit(1.0)), ("snare", Hit(0.6))]
    assert parsed.hits(16 + 4) == parsed.hits(4)  # loops on its length


def test_comments_blank_lines_spaces_and_bars_are_ignored() -> None:
    assert parse("# groove\n\n  kick: x|.|o  .\n") == parse("kick:x.o.")


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("kick: x..q\n", 1, 10, "unknown symbol 'q'"),
        ("kick: x...\nsnare: o..\n", 2, 11, "has 3 steps"),
        ("kick: x...\nsnare: o.....\n", 2, 12, "has 6 steps"),
        ("", 1, 1, "empty"),
        ("# only a comment\n\n", 2, 1, "empty"),
        ("kick x...\n", 1, 1, "no ':'"),
        ("9kick: x...\n", 1, 1, "voice name"),
        ("kick: x...\nkick: o...\n", 2, 1, "twice"),
        ("kick:\n", 1, 6, "no steps"),
        ("bass: 36 128\n", 1, 10, "out of range"),
        # Issue 27, item 13: int() of 5,000 digits raised ValueError (a traceback at start).
        ("bass: 36 " + "1" * 5000 + "\n", 1, 10, "MIDI note 11111111... (5000 digits) is out"),
        ("bass: 0127 00128\n", 1, 12, "MIDI note 00128 is out of range"),
    ],
)
def test_a_bad_pattern_is_one_line_naming_line_and_column(
    text: str, line: int, column: int, words: str
) -> None:
    with pytest.raises(PatternError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"line {line}, column {column}: ")
    assert words in message
    assert (caught.value.line, caught.value.column) == (line, column)


def test_a_pattern_too_long_is_refused() -> None:
    with pytest.raises(PatternError, match="more than"):
        parse("kick: " + "x" * (pattern.MAX_STEPS + 1))


hits = st.one_of(
    st.none(),
    st.sampled_from([Hit(ACCENT_VELOCITY), Hit(NORMAL_VELOCITY)]),
    st.integers(0, 127).map(lambda note: Hit(NOTE_VELOCITY, note)),
)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,11}", fullmatch=True)


@st.composite
def patterns(draw: st.DrawFn) -> Pattern:
    length = draw(st.integers(1, 40))
    voice_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    return Pattern(
        tuple(
            Voice(name, tuple(draw(st.lists(hits, min_size=length, max_size=length))))
            for name in voice_names
        )
    )


@given(patterns(), st.integers(1, 8))
def test_any_valid_grid_round_trips(grid: Pattern, group: int) -> None:
    assert parse(format_pattern(grid, group)) == grid
