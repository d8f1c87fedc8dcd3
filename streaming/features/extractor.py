"""Live wav2vec2 speech features: per-video-frame embeddings [n, layers, hidden] as 16 kHz audio arrives.

    samples --IncrementalConvStack--> conv frames (~50 Hz, each sample through the CNN once)
      --every 2nd frame--> one token per video frame (25 fps)
      --encoder per block of `block_frames` tokens, once `lookahead_frames` more are in--> embeddings

The encoder sees the block, its look-ahead and `left_context_frames` earlier tokens: by default
as cached per-layer keys/values (each token is encoded once; cached_encoder.py), or re-encoded
for every block (`encoder="recompute"`, (context + block + look-ahead) / block times the work).

Token f is conv frame 2f: for a clip of exactly 640 * S samples the whole-clip interpolation
positions f * (N - 1) / (S - 1) are exactly 2f (N = 2S - 1 conv frames), so this is the
streaming-consistent form of the reference's resampling. For other lengths the reference
stretches the grid by up to one conv frame (20 ms) at the clip's end; live audio has no end to
stretch to, so that deviation is accepted. After `flush()` the frame count equals the reference's
`num_video_frames(samples)`, including its float quirk (e.g. 29 * 640 samples -> 28 frames).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from transformers import Wav2Vec2Model

from model.audio import encode_features, num_video_frames

from .cached_encoder import CachedContextEncoder
from .conv_stack import SLOT, IncrementalConvStack
from .norm_stats import NormStats
from .settings import FeatureSettings

log = logging.getLogger(__name__)


def _as_samples(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"push() takes float samples in [-1, 1], got {x.dtype}; scale integer PCM first")
    if x.ndim != 1:
        raise ValueError(f"push() takes mono samples [n] at 16 kHz, got shape {list(x.shape)}")
    return x.astype(np.float32, copy=False)


class IncrementalFeatureExtractor:
    """Per-video-frame wav2vec2 embeddings of a live 16 kHz mono stream (one speaker).

    Not thread-safe: call from one thread (the engine's worker). Works on the model's device and
    dtype (build it after moving the model there); returned tensors are [n, layers, hidden] on
    that device in that dtype.
    fixed_stats: normalisation statistics to use instead of live estimates (tests).
    silence: a shared `SilenceEmbeddings` cache (e.g. one per worker); made on first use if None.
    """

    def __init__(self, model: Wav2Vec2Model, settings: FeatureSettings | None = None,
                 fixed_stats: NormStats | None = None, silence: SilenceEmbeddings | None = None) -> None:
        self.model = model
        self.settings = settings or FeatureSettings()
        s = self.settings
        self._conv = IncrementalConvStack(model, s.stats_horizon_s, s.loudness, s.loudness_window_s,
                                          s.target_lufs, fixed_stats, s.stats_warmup_frames, s.quiet_rms,
                                          s.pause_frames, (s.block_frames, s.lookahead_frames))
        self._cached = CachedContextEncoder(model, s.left_context_frames) if s.encoder == "cached" else None
        self._silence = silence
        self.layers = model.config.num_hidden_layers
        self.hidden = model.config.hidden_size
        self.reset()

    # ---- what the engine plans with -----------------------------------------------------------

    @property
    def lookahead_frames(self) -> int:
        """Frames of audio after a block the extractor must have before it emits the block."""
        return self.settings.lookahead_frames

    @property
    def max_delay_frames(self) -> int:
        """Most frames a frame waits after its own 40 ms of audio is in (look-ahead + block - 1)."""
        return self.settings.max_delay_frames

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    @property
    def samples_seen(self) -> int:
        return self._conv.samples_seen

    def samples_needed(self, frames: int) -> int:
        """Samples that must have been pushed (no flush) before the first `frames` frames are emitted."""
        if frames <= 0:
            return 0
        b = self.settings.block_frames
        end = -(-frames // b) * b
        need = SLOT * (end + self.settings.lookahead_frames)
        return need + 1 if num_video_frames(need) < end else need

    # ---- streaming ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new stream (statistics, buffers and counters); the silence cache is kept."""
        self._conv.reset()
        if self._cached is not None:
            self._cached.reset()
        self._conv_frames = 0
        self._tokens = torch.zeros(0, self._conv.channels, device=self._conv.device, dtype=self._conv.dtype)
        self._token0 = 0  # stream index of self._tokens[0]
        self._emitted = 0
        self._finished = False

    @property
    def _tokens_total(self) -> int:
        return self._token0 + self._tokens.shape[0]

    def push(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Feed 16 kHz mono float samples (any length); returns the newly finished frames [n, layers, hidden]."""
        if self._finished:
            raise RuntimeError("push() after flush(): call reset() to start a new stream")
        self._add_conv_frames(self._conv.push(_as_samples(samples)))
        b, la = self.settings.block_frames, self.settings.lookahead_frames
        limit = num_video_frames(self.samples_seen)
        ends = []
        end = self._emitted + b
        while end + la <= self._tokens_total and end <= limit:
            ends.append(end)
            end += b
        return self._emit(ends, window_end=lambda e: e + la)

    def provisional(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """What `push(samples)` then `flush()` would return, leaving this stream untouched.

        For a window that must run before its look-ahead has arrived: its last frames are encoded
        with `samples` (e.g. zeros) standing in for the future, while the stream itself waits for
        the real audio, so later frames are not computed from the stand-in.
        """
        memo = {id(self.model): self.model, id(self._silence): self._silence}
        twin = copy.deepcopy(self, memo)
        return torch.cat([twin.push(samples), twin.flush()])

    def flush(self) -> torch.Tensor:
        """End of input: emit the remaining frames up to the reference's frame count for all samples seen."""
        if self._finished:
            return self._empty()
        self._finished = True
        self._add_conv_frames(self._conv.flush())
        total = num_video_frames(self.samples_seen)
        b, la = self.settings.block_frames, self.settings.lookahead_frames
        ends = list(range(self._emitted + b, total, b)) + ([total] if total > self._emitted else [])
        return self._emit(ends, window_end=lambda e: min(e + la, total))

    # ---- internals ------------------------------------------------------------------------------

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, self.layers, self.hidden, device=self._conv.device, dtype=self._conv.dtype)

    def _add_conv_frames(self, frames: torch.Tensor) -> None:
        # frames: [m, C] conv frames with stream indices conv_frames .. conv_frames + m - 1; keep the even ones
        new = frames[self._conv_frames % 2::2]
        self._conv_frames += frames.shape[0]
        if new.shape[0]:
            self._tokens = torch.cat([self._tokens, new])

    def _emit(self, ends: list[int], window_end) -> torch.Tensor:
        """Run the encoder for the blocks ending at `ends` (in order), batching equal-length windows."""
        if not ends:
            return self._empty()
        ctx = self.settings.left_context_frames
        jobs = []  # (first token, last token + 1, first kept row, rows)
        start = self._emitted
        for end in ends:
            t0 = max(0, start - ctx)
            jobs.append((t0, window_end(end), start - t0, end - start))
            start = end
        if self._cached is not None:
            return self._emit_cached(jobs, ends)
        results: dict[int, torch.Tensor] = {}
        by_len: dict[int, list[int]] = {}
        for i, (t0, t1, _, _) in enumerate(jobs):
            by_len.setdefault(t1 - t0, []).append(i)
        for idx in by_len.values():
            batch = torch.stack([self._tokens[jobs[i][0] - self._token0:jobs[i][1] - self._token0] for i in idx])
            out = encode_features(self.model, batch)  # [n, W, layers, hidden]
            for k, i in enumerate(idx):
                _, _, r0, n = jobs[i]
                results[i] = out[k, r0:r0 + n]
        self._advance(ends[-1])
        return torch.cat([results[i] for i in range(len(jobs))])

    def _emit_cached(self, jobs: list[tuple[int, int, int, int]], ends: list[int]) -> torch.Tensor:
        """Blocks in order through the cached-context encoder (each token encoded once)."""
        out = []
        for (t0, t1, r0, n) in jobs:
            first = t0 + r0 - self._token0
            block = self._tokens[first:first + n]
            out.append(self._cached.encode_block(block, self._tokens[first + n:t1 - self._token0]))
        self._advance(ends[-1])
        return torch.cat(out)

    def _advance(self, emitted: int) -> None:
        self._emitted = emitted
        keep_from = max(0, emitted - self.settings.left_context_frames)
        if keep_from > self._token0:
            self._tokens = self._tokens[keep_from - self._token0:]
            self._token0 = keep_from

    def silence_embedding(self, frames: int) -> torch.Tensor:
        """Embeddings [frames, layers, hidden] of digital silence through this extractor's settings, cached."""
        if self._silence is None:
            self._silence = SilenceEmbeddings(self.model, self.settings)
        return self._silence(frames)


class SilenceEmbeddings:
    """What a fresh extractor makes of `frames` frames of zeros (pushed, then flushed), computed once per length.

    Used for idle windows. Share one per worker (per model and settings) across sessions.
    """

    def __init__(self, model: Wav2Vec2Model, settings: FeatureSettings | None = None) -> None:
        self.model, self.settings = model, settings or FeatureSettings()
        self._cache: dict[int, torch.Tensor] = {}

    def __call__(self, frames: int) -> torch.Tensor:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if frames not in self._cache:
            ex = IncrementalFeatureExtractor(self.model, self.settings)
            first = ex.push(np.zeros(frames * SLOT, np.float32))
            self._cache[frames] = torch.cat([first, ex.flush()])
            log.debug("silence embedding for %d frames computed", frames)
        return self._cache[frames]
