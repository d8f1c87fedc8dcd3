"""Speech features with no look-ahead: SoulX-FlashTalk's streaming audio path.

FlashTalk's streaming script keeps the last 8 s of speech (starting as silence), appends each
chunk's new audio, re-runs the reference whole-clip feature path (-23 LUFS, wav2vec2, frames
interpolated to 25 fps) over those 8 s, and gives the window its last F frames; the DiT's +-2-frame
audio window is clamped at the newest frame. A window can therefore run as soon as its own audio
is in: no wav2vec2 look-ahead and no +2-frame reach, 13 frames (0.52 s) less latency than the
incremental extractor's defaults, at the cost of one wav2vec2 pass over the whole buffer per window
and of features that only see the past (the distilled model was trained for this).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import Wav2Vec2Model

from model.audio import whole_clip_embedding
from model.audio.windows import audio_windows

SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps


class RollingClipFeatures:
    """One speaker's rolling audio buffer and the windowed features of its newest frames.

    seconds: length of the buffer (FlashTalk's `cached_audio_duration`, 8). Rounded to whole
    video frames so the whole-clip path maps the buffer onto exactly `seconds * 25` frames.
    """

    def __init__(self, model: Wav2Vec2Model, seconds: float = 8.0, loudness: bool = True) -> None:
        frames = int(round(seconds * 25))
        if frames < 1:
            raise ValueError(f"the rolling feature buffer must hold at least one frame, got {seconds} s")
        self.model = model
        self.loudness = loudness
        self.frames = frames
        self._buffer = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)

    def push(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono float samples; the oldest fall out of the buffer."""
        x = np.asarray(samples, np.float32).reshape(-1)
        n = self._buffer.shape[0]
        if x.shape[0] >= n:
            self._buffer = x[-n:].copy()
        elif x.shape[0]:
            self._buffer = np.concatenate([self._buffer[x.shape[0]:], x])

    def window(self, frames: int) -> torch.Tensor:
        """[frames, 5, layers, hidden]: the audio windows of the newest `frames` frames (edge-clamped)."""
        if not 1 <= frames <= self.frames:
            raise ValueError(f"a window of {frames} frames does not fit a buffer of {self.frames} frames")
        with torch.no_grad():
            emb = whole_clip_embedding(self.model, self._buffer, loudness=self.loudness)
        return audio_windows(emb, emb.shape[0] - frames, frames)
