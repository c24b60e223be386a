"""The sequencer's pattern files: one voice per line, one step per symbol (issue #19).

::

    # a comment; blank lines are ignored too
    kick:  x... x... x... x...
    snare: .... o... .... o...
    hat:   ..o. ..o. ..o. ..o.
    bass:  36 . . 36 . . 39 . | 41 . . . 39 . 36 .

A line is ``NAME: STEPS``. ``NAME`` is a letter followed by letters, digits, ``_`` or ``-`` (it
becomes an OSC address, ``/seq/NAME``). In ``STEPS``, spaces and ``|`` are ignored (use them to
show beats and bars); every other symbol is one step:

``x``  a hit, accented (velocity :data:`ACCENT_VELOCITY`)
``o``  a hit, normal (velocity :data:`NORMAL_VELOCITY`)
``.``  a rest
``N``  a run of digits: a MIDI note 0-127 for a pitched voice (velocity :data:`NOTE_VELOCITY`);
       separate two notes with a space or ``|`` (``3636`` is one number, and too high)

Every voice has the same number of steps; the pattern loops over that many. A bad pattern raises
:class:`PatternError` with a one-line message that names the line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACCENT_VELOCITY = 1.0
NORMAL_VELOCITY = 0.6
NOTE_VELOCITY = 0.8

MAX_VOICES = 32
MAX_STEPS = 1024
"""Bounds: a pattern is read again on every change, and each step becomes one bundle."""

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_IGNORED = " \t|"


class PatternError(ValueError):
    """A pattern that cannot be played; the message names the line and column (1-based)."""

    def __init__(self, line: int, column: int, problem: str) -> None:
        super().__init__(f"line {line}, column {column}: {problem}")
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Hit:
    """One sounding step: its velocity (0-1] and, for a pitched voice, its MIDI note."""

    velocity: float
    note: int | None = None


@dataclass(frozen=True)
class Voice:
    name: str
    steps: tuple[Hit | None, ...]
    """One entry per step; None is a rest."""


@dataclass(frozen=True)
class Pattern:
    voices: tuple[Voice, ...]

    @property
    def length(self) -> int:
        """Steps before the pattern repeats."""
        return len(self.voices[0].steps)

    def hits(self, step: int) -> list[tuple[str, Hit]]:
        """The voices sounding at global step ``step`` (the pattern loops), in file order."""
        index = step % self.length
        return [(v.name, hit) for v in self.voices if (hit := v.steps[index]) is not None]


def parse(text: str) -> Pattern:
    """The pattern in ``text``; :class:`PatternError` names the line and column of a problem."""
    voices: list[Voice] = []
    names: set[str] = set()
    first_line = 0
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        colon = line.find(":")
        if colon < 0:
            raise PatternError(number, indent + 1, "expected 'NAME: STEPS' (no ':' on this line)")
        name = line[:colon].strip()
        if not NAME.fullmatch(name):
            raise PatternError(
                number,
                indent + 1,
                "a voice name is a letter then letters, digits, '_' or '-' (at most 32)",
            )
        if name in names:
            raise PatternError(number, indent + 1, f"voice {name!r} appears twice")
        if len(voices) >= MAX_VOICES:
            raise PatternError(number, 1, f"more than {MAX_VOICES} voices")
        steps = _parse_steps(line, colon + 1, number)
        if not steps:
            raise PatternError(number, len(line) + 1, f"voice {name!r} has no steps")
        if voices and len(steps) != len(voices[0].steps):
            expected = len(voices[0].steps)
            raise PatternError(
                number,
                _column_of_step(line, colon + 1, min(len(steps), expected)),
                f"voice {name!r} has {len(steps)} steps, but {voices[0].name!r} "
                f"(line {first_line}) has {expected}",
            )
        if not voices:
            first_line = number
        names.add(name)
        voices.append(Voice(name, tuple(steps)))
    if not voices:
        raise PatternError(max(1, len(lines)), 1, "the pattern is empty (no 'NAME: STEPS' line)")
    return Pattern(tuple(voices))


def _parse_steps(line: str, start: int, number: int) -> list[Hit | None]:
    steps: list[Hit | None] = []
    i = start
    while i < len(line):
        char = line[i]
        if char in _IGNORED:
            i += 1
            continue
        if len(steps) >= MAX_STEPS:
            raise PatternError(number, i + 1, f"more than {MAX_STEPS} steps")
        if char.isascii() and char.isdigit():
            end = i
            while end < len(line) and line[end].isascii() and line[end].isdigit():
                end += 1
            # At most 3 digits (leading zeros aside) are read as a number: int() of 5,000
            # digits raised ValueError (Python's digit limit), a traceback (issue 27, item 13).
            significant = line[i:end].lstrip("0")
            if len(significant) > 3 or int(significant or "0") > 127:
                shown = line[i:end] if end - i <= 8 else f"{line[i : i + 8]}... ({end - i} digits)"
                raise PatternError(number, i + 1, f"MIDI note {shown} is out of range 0-127")
            note = int(line[i:end])
            steps.append(Hit(NOTE_VELOCITY, note))
            i = end
            continue
        if char == "x":
            steps.append(Hit(ACCENT_VELOCITY))
        elif char == "o":
            steps.append(Hit(NORMAL_VELOCITY))
        elif char == ".":
            steps.append(None)
        else:
            raise PatternError(
                number,
                i + 1,
                f"unknown symbol {char!r} (x accent, o normal, . rest, 0-127 a MIDI note)",
            )
        i += 1
    return steps


def _column_of_step(line: str, start: int, index: int) -> int:
    """The 1-based column where step ``index`` starts (or just past the last one)."""
    count = 0
    i = start
    while i < len(line):
        if line[i] in _IGNORED:
            i += 1
            continue
        if count == index:
            return i + 1
        count += 1
        if line[i].isascii() and line[i].isdigit():
            while i < len(line) and line[i].isascii() and line[i].isdigit():
                i += 1
        else:
            i += 1
    return len(line.rstrip()) + 1


def symbol(hit: Hit | None) -> str:
    """The text of one step (the inverse of parsing it)."""
    if hit is None:
        return "."
    if hit.note is not None:
        return str(hit.note)
    return "x" if hit.velocity == ACCENT_VELOCITY else "o"


def format_pattern(pattern: Pattern, group: int = 4) -> str:
    """The text of ``pattern``, a ``|`` every ``group`` steps; :func:`parse` reads it back."""
    width = max(len(voice.name) for voice in pattern.voices) + 1
    lines = []
    for voice in pattern.voices:
        cells = [symbol(hit) for hit in voice.steps]
        groups = [" ".join(cells[i : i + group]) for i in range(0, len(cells), group)]
        lines.append(f"{voice.name + ':':<{width}} " + " | ".join(groups))
    return "\n".join(lines) + "\n"
