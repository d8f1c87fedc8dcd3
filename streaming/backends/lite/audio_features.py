"""Audio -> mouth: per-frame loudness and spectral shape, smoothed into jaw opening and lip width.

Per output frame we analyse 40 ms of audio (Hann window):
- loudness in dB relative to a running speech level (an asymmetric average of the voiced frames:
  up in ~0.3 s, down in ~1 s, held in silence, so it settles near the loud vowels), so quiet and
  loud speakers both use the full range of the jaw after a second or so;
- spectral centroid over 150-4000 Hz: front/wide vowels (i, e) put energy high, rounded ones
  (o, u) low, so the centroid, in octaves relative to the speaker's running average (voices
  differ), drives lip width (wide vs rounded);
- the share of energy above 3.5 kHz: sibilants (s, sh, f) are loud but near-closed, so it
  damps the opening.
Opening and width then go through attack/release smoothing so the jaw moves, not flickers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streaming.generator import SAMPLE_RATE

_NFFT = 1024
_FREQS = np.fft.rfftfreq(_NFFT, 1.0 / SAMPLE_RATE).astype(np.float32)
_VOICED = (_FREQS >= 150) & (_FREQS <= 4000)
_HIGH = _FREQS >= 3500


@dataclass(frozen=True)
class FrameFeatures:
    """Raw per-frame features, each float32 [F]."""

    db: np.ndarray
    """Energy in dBFS (a full-scale sine is about -3)."""
    centroid_hz: np.ndarray
    high_share: np.ndarray


def frame_features(audio: np.ndarray, starts: np.ndarray, length: int) -> FrameFeatures:
    """Features of `audio[s : s + length]` for each start s (windows past the ends read zeros).

    audio: float32 [T] mono; starts: int [F].
    """
    # frames: [F, length]
    pad = np.concatenate([audio.astype(np.float32, copy=False), np.zeros(length, np.float32)])
    idx = np.clip(starts[:, None] + np.arange(length)[None, :], 0, len(pad) - 1)
    frames = pad[idx] * np.hanning(length).astype(np.float32)[None, :]
    energy = (frames ** 2).sum(axis=1) / (np.hanning(length) ** 2).sum()
    db = 10.0 * np.log10(energy + 1e-10)
    spec = np.abs(np.fft.rfft(frames, n=_NFFT, axis=1)).astype(np.float32) ** 2  # [F, NFFT/2+1]
    voiced = spec[:, _VOICED]
    centroid = (voiced * _FREQS[_VOICED]).sum(axis=1) / (voiced.sum(axis=1) + 1e-12)
    high = spec[:, _HIGH].sum(axis=1) / (spec[:, 1:].sum(axis=1) + 1e-12)
    return FrameFeatures(db.astype(np.float32), centroid.astype(np.float32), high.astype(np.float32))


@dataclass
class MouthDriver:
    """Stateful per-session smoother: features in, (opening in [0, 1], width in [-1, 1]) out.

    One instance per face; call `step` with consecutive frames only (state carries across windows).
    """

    frame_seconds: float
    level_range_db: float = 20.0
    gate_dbfs: float = -50.0
    attack_ms: float = 30.0
    release_ms: float = 70.0
    level_db: float = -24.0
    """Running speech level, dBFS (starts at a typical level for normalised speech)."""
    opening: float = 0.0
    width: float = 0.0
    loudness: float = 0.0
    """Slow envelope of the opening (~250 ms) for head nods and sway gain."""
    centroid_ref: float = 9.7
    """Running average of log2(spectral centroid) over vowel-like frames (2^9.7 ~ 830 Hz)."""

    def _coef(self, ms: float) -> float:
        return float(1.0 - np.exp(-self.frame_seconds * 1000.0 / ms))

    def step(self, feats: FrameFeatures, speech: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance over F frames -> (opening [F], width [F], loudness envelope [F]) float32."""
        n = len(feats.db)
        op, wd, ld = (np.zeros(n, np.float32) for _ in range(3))
        a_up, a_down = self._coef(self.attack_ms), self._coef(self.release_ms)
        a_level_up, a_level_down = self._coef(300.0), self._coef(1000.0)
        a_width, a_loud, a_ref = self._coef(60.0), self._coef(250.0), self._coef(2000.0)
        for i in range(n):
            db = float(feats.db[i])
            voiced = speech and db > self.gate_dbfs
            target, wtarget = 0.0, 0.0
            if voiced:
                if db > self.level_db - 20.0:  # far below the level: pauses, not the speaker's voice
                    a = a_level_up if db > self.level_db else a_level_down
                    self.level_db = max(self.level_db + a * (db - self.level_db), self.gate_dbfs + 10.0)
                rel = db - self.level_db
                # Fully open 6 dB above the running level, closed `level_range_db` below it.
                target = float(np.clip((rel + self.level_range_db) / (self.level_range_db + 6.0), 0.0, 1.0)) ** 1.5
                target *= 1.0 - 0.6 * float(np.clip((feats.high_share[i] - 0.35) / 0.35, 0.0, 1.0))
                octave = float(np.log2(max(float(feats.centroid_hz[i]), 50.0)))
                if target > 0.4:  # vowels only: sibilants would drag the reference up
                    self.centroid_ref += a_ref * (octave - self.centroid_ref)
                wtarget = float(np.clip((octave - self.centroid_ref) / 0.8, -1.0, 1.0)) * min(1.0, 2 * target)
            self.opening += (a_up if target > self.opening else a_down) * (target - self.opening)
            self.width += a_width * (wtarget - self.width)
            self.loudness += a_loud * (self.opening - self.loudness)
            op[i], wd[i], ld[i] = self.opening, self.width, self.loudness
        return op, wd, ld
