"""A Link session in one process, on a FakeClock: the timeline arithmetic of Link, no network.

Link's clock here is the fake clock's monotonic time in microseconds, shifted by ``offset`` and
running ``ppm`` fast (as CLOCK_MONOTONIC_RAW does against CLOCK_MONOTONIC under NTP). The
timeline is a list of segments (from a Link time, a beat, a tempo); a tempo set at a time keeps
the beat continuous there, as Link does. ``peer_sets_tempo`` is another musician's app doing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from oscsync.clock import FakeClock
from oscsync.sync.link import LinkTimeline


@dataclass
class Segment:
    micros: float
    beat: float
    bpm: float


class FakeLink:
    def __init__(
        self,
        clock: FakeClock,
        bpm: float = 120.0,
        *,
        offset: float = 5_000.0,
        ppm: float = 0.0,
        beat: float = 0.0,
        peers: int = 1,
    ) -> None:
        self.clock = clock
        self.offset = offset
        self.ppm = ppm
        self.reads = 0
        self.segments = [Segment(self.micros(), beat, bpm)]
        self.peers = peers
        self.playing = False
        self.play_micros = 0
        self.enabled = False
        self.start_stop = False

    def micros(self) -> int:
        self.reads += 1
        return round((self.clock.monotonic() * 1e6 + self.offset) * (1 + self.ppm * 1e-6))

    def _segment(self, micros: float) -> Segment:
        current = self.segments[0]
        for segment in self.segments:
            if segment.micros <= micros:
                current = segment
        return current

    def beat_at(self, micros: float) -> float:
        segment = self._segment(micros)
        return segment.beat + (micros - segment.micros) * segment.bpm / 60e6

    def micros_at_beat(self, beat: float) -> float:
        current = self.segments[0]
        for segment in self.segments:
            if segment.beat <= beat:
                current = segment
        return current.micros + (beat - current.beat) * 60e6 / current.bpm

    def timeline(self, quantum: float) -> LinkTimeline:
        now = self.micros()
        segment = self._segment(now)
        return LinkTimeline(
            micros_origin=now,
            beat=self.beat_at(now),
            micros_per_beat=60e6 / segment.bpm,
            tempo=segment.bpm,
            quantum=quantum,
            peers=self.peers,
            playing=self.playing,
            play_micros=self.play_micros,
        )

    def set_tempo(self, bpm: float, micros: int) -> None:
        self.segments.append(Segment(micros, self.beat_at(micros), bpm))

    def peer_sets_tempo(self, bpm: float) -> None:
        self.set_tempo(bpm, self.micros())

    def set_playing(self, playing: bool, micros: int, quantum: float) -> None:
        self.playing = playing
        self.play_micros = micros

    def enable(self, start_stop: bool) -> None:
        self.enabled = True
        self.start_stop = start_stop

    def close(self) -> None:
        self.enabled = False
