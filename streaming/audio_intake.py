"""A session's audio in, on its transport side: whatever the client sends -> 16 kHz chunks for the model side.

It converts (`AudioConverter`, one per speaker: resampler state must not mix speakers), stamps each
chunk with its arrival on the session clock, flushes the resamplers at the end of input, and keeps
the speech buffers bounded. The buffers themselves are on the model side (`SpeechBuffers`), so the
bound is kept here by counting: samples sent minus samples the model side reports consumed. The
count only ever over-states what is buffered (reports lag, never lead), so a client is refused
here, at once and whole, before a buffer over there could overflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from .audio_fifo import overflow
from .audio_input import AudioConverter, PcmFormat
from .link import AudioChunk


@dataclass
class IntakeCounters:
    samples_in: int = 0
    audio_overflows: int = 0


class AudioIntake:
    """See the module docstring. `send` takes each chunk to the model side; `accepting()` is False
    once the session closes (audio is then ignored)."""

    def __init__(self, speakers: int, capacity: int, send: Callable[[AudioChunk], None],
                 accepting: Callable[[], bool], clock: Callable[[], float]) -> None:
        self.speakers = speakers
        self.capacity = capacity
        self.counters = IntakeCounters()
        self._send = send
        self._accepting = accepting
        self._clock = clock
        self._converters = [AudioConverter() for _ in range(speakers)]
        self._sent = [0] * speakers  # samples sent to the model side, per speaker
        self._consumed = [0] * speakers  # of those, samples it has reported gone from its buffers

    def check_speaker(self, speaker: int) -> None:
        if not 0 <= speaker < self.speakers:
            raise ValueError(f"speaker {speaker} out of range: this session has {self.speakers} speaker(s)")

    def position(self, speaker: int = 0) -> int:
        """Samples of `speaker` sent to the model side so far: where the next audio will start."""
        return self._sent[speaker]

    def buffered(self, speaker: int) -> int:
        """Samples of `speaker` sent and not yet consumed (at least what the model side holds)."""
        return self._sent[speaker] - self._consumed[speaker]

    def buffered_samples(self) -> int:
        """The fullest speaker's buffer."""
        return max(self.buffered(s) for s in range(self.speakers))

    def push_audio(self, samples: np.ndarray, speaker: int = 0, arrival: float | None = None) -> None:
        """Queue 16 kHz mono float32 speech. Raises AudioOverflow when the client sends too fast."""
        self.check_speaker(speaker)
        if not self._accepting():
            return
        samples = np.asarray(samples, np.float32).reshape(-1)
        held = self.buffered(speaker)
        if samples.size > self.capacity - held:
            self.counters.audio_overflows += 1
            raise overflow(held, self.capacity)
        self._sent[speaker] += samples.size
        self.counters.samples_in += samples.size
        self._send(AudioChunk(speaker, samples, self._clock() if arrival is None else arrival))

    def convert_pcm(self, data: bytes, fmt: PcmFormat, speaker: int = 0) -> np.ndarray:
        """Raw interleaved PCM (any supported rate/channels/format) -> 16 kHz mono float32 for `push_audio`."""
        self.check_speaker(speaker)
        return self._converters[speaker].convert_pcm(data, fmt)

    def convert_frame(self, frame: av.AudioFrame, speaker: int = 0) -> np.ndarray:
        """A decoded audio frame (e.g. from a WebRTC track) -> 16 kHz mono float32 for `push_audio`."""
        self.check_speaker(speaker)
        return self._converters[speaker].convert_frame(frame)

    def end_input(self) -> tuple[AudioChunk, ...]:
        """Flush the resamplers; returns their last samples as chunks for the model side."""
        flushed = [(speaker, conv.flush()) for speaker, conv in enumerate(self._converters)]
        if not self._accepting():
            return ()
        tails = tuple(AudioChunk(s, tail, self._clock()) for s, tail in flushed if tail.size)
        for chunk in tails:  # all or nothing, so the count stays true
            held = self.buffered(chunk.speaker)
            if chunk.samples.size > self.capacity - held:
                raise overflow(held, self.capacity)
        for chunk in tails:
            self._sent[chunk.speaker] += chunk.samples.size
        return tails

    def consumed(self, consumed: tuple[int, ...]) -> None:
        """The model side's report (cumulative per speaker); stale reports change nothing."""
        for s, n in enumerate(consumed):
            self._consumed[s] = max(self._consumed[s], n)

    def interrupted(self) -> None:
        """An interrupt drops everything buffered: count it gone now, before the model side says so."""
        self._consumed = list(self._sent)
