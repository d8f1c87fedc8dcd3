"""The wav2vec2 CNN feature encoder run over a stream, each sample through each conv layer once.

Each conv layer keeps the tail of its input that its next outputs still need (kernel - stride
frames, or more when a chunk ends mid-stride), so chunked outputs equal one pass over the whole
signal. The clip-wide normalisations (loudness gain, input mean/variance, and for "group" models
the first layer's per-channel GroupNorm) use statistics that are updated once per video-frame
slot (640 samples): every conv0 frame that is complete at the end of slot k is normalised with
the statistics of everything up to the end of slot k. That makes the output independent of how
the audio was chunked, at the price of buffering up to one slot (40 ms), which the video frame
needs anyway. See norm_stats.py for the algebra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Model

from model.audio import SAMPLE_RATE, TARGET_LUFS, VIDEO_FPS

from .loudness import RunningLoudness
from .norm_stats import INPUT_EPS, GatedMoments, NormStats, SoundGate, first_sound_slot

log = logging.getLogger(__name__)

SLOT = SAMPLE_RATE // VIDEO_FPS  # 640 samples: one video frame of audio


class _StreamingLayer:
    """One conv layer (any stateless-in-time module) over a stream: keeps its pending input tail."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], kernel: int, stride: int, out_channels: int) -> None:
        self.fn, self.kernel, self.stride, self.out_channels = fn, kernel, stride, out_channels
        self.tail: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # x: [C_in, n] new input frames -> [C_out, m] new output frames
        buf = x if self.tail is None else torch.cat([self.tail, x], dim=-1)
        length = buf.shape[-1]
        m = (length - self.kernel) // self.stride + 1 if length >= self.kernel else 0
        self.tail = buf[:, m * self.stride:]
        if m == 0:
            return buf.new_zeros(self.out_channels, 0)
        return self.fn(buf[None, :, : (m - 1) * self.stride + self.kernel])[0]


class IncrementalConvStack:
    """Raw 16 kHz audio in (any chunk sizes), the encoder's conv features out ([m, C], ~50 Hz, time-major).

    stats_horizon_s: memory of the running statistics (None: the whole session).
    loudness: estimate the reference's -23 LUFS gain live (it only moves an epsilon; see norm_stats).
    fixed_stats: use these statistics instead of estimating them (tests of the caching alone).
    warmup_slots: from the first slot with sound, up to this many slots wait for each other and
        share the statistics of all of them, so the first words are not normalised by 40 ms alone.
    blocks: (block_frames, lookahead_frames) of the consumer: caps the warm-up at what the blocks
        reading those slots wait for anyway (see warmup_len), so it never delays them.
    quiet_rms, pause_slots: slots quieter than quiet_rms update the statistics only as the first
        pause_slots of a pause after sound (see SoundGate); idle audio never does.
    """

    def __init__(self, model: Wav2Vec2Model, stats_horizon_s: float | None = None, loudness: bool = True,
                 loudness_window_s: float | None = None, target_lufs: float = TARGET_LUFS,
                 fixed_stats: NormStats | None = None, warmup_slots: int = 1, quiet_rms: float = 1e-3,
                 pause_slots: int = 25, blocks: tuple[int, int] | None = None) -> None:
        cfg = model.config
        if cfg.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm {cfg.feat_extract_norm!r} in the wav2vec2 config.json is not supported")
        self.group = cfg.feat_extract_norm == "group"
        if self.group and fixed_stats is not None and fixed_stats.conv_mean is None:
            raise ValueError("fixed_stats lacks conv_mean/conv_var, which a group-norm model needs; "
                             "build them with whole_clip_norm_stats(model, wave)")
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.layers_cfg = list(zip(cfg.conv_kernel, cfg.conv_stride, cfg.conv_dim, strict=True))
        self.channels = cfg.conv_dim[-1]
        self.target_lufs, self.loudness, self.fixed = target_lufs, loudness, fixed_stats
        if warmup_slots < 1:
            raise ValueError(f"warmup_slots must be >= 1, got {warmup_slots}")
        self.warmup_slots, self.blocks = warmup_slots, blocks
        convs = model.feature_extractor.conv_layers
        k0, s0, c0 = self.layers_cfg[0]
        if self.group:
            first = convs[0]
            self._w0 = first.conv.weight.detach().to(torch.float32)
            gn = first.layer_norm
            self._gn_eps = float(gn.eps)
            self._gamma = gn.weight.detach().to(torch.float32)[:, None]
            self._beta = gn.bias.detach().to(torch.float32)[:, None]
            self._act0 = first.activation
            raw = _StreamingLayer(lambda b: F.conv1d(b, self._w0, stride=s0), k0, s0, c0)
        else:
            raw = _StreamingLayer(self._typed(convs[0]), k0, s0, c0)
        self._first = raw
        self._rest = [_StreamingLayer(self._typed(layer), k, s, c)
                      for layer, (k, s, c) in zip(convs[1:], self.layers_cfg[1:], strict=True)]
        horizon = None if stats_horizon_s is None else stats_horizon_s * SAMPLE_RATE
        self._gate = SoundGate(quiet_rms, pause_slots)
        self._in_moments = GatedMoments(1, horizon)
        self._conv_moments = GatedMoments(c0, None if horizon is None else horizon / s0, self.device)
        self._meter = RunningLoudness(SAMPLE_RATE, loudness_window_s)
        self.reset()

    def _typed(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda b: fn(b.to(self.dtype))

    def reset(self) -> None:
        """Forget the stream: buffers, statistics, loudness."""
        self._pending = np.zeros(0, np.float32)
        self._samples_done = 0  # samples already handed to conv0
        self._slots_done = 0
        for layer in [self._first, *self._rest]:
            layer.tail = None
        self._gate.reset()
        self._in_moments.reset()
        self._conv_moments.reset()
        self._meter.reset()
        self.frames_out = 0

    def warmup_len(self, first: int) -> int:
        """Slots sharing the statistics when the first sound is at slot `first`.

        A block ending (exclusive) at e needs slots up to e + lookahead - 1; the first block that
        reads slot `first` ends at the smallest e (a multiple of the block, >= one block) with
        e + lookahead > first, so holding slots up to e + lookahead - 1 delays nothing.
        """
        if self.blocks is None:
            return self.warmup_slots
        b, la = self.blocks
        e = max(b, ((first - la) // b + 1) * b)
        return max(1, min(self.warmup_slots, e + la - first))

    @property
    def first_sound(self) -> int | None:
        """Stream slot index of the first slot with sound among those pushed, or None."""
        if self._gate.first_sound is not None or self.fixed is not None:
            return self._gate.first_sound
        j = first_sound_slot(self._pending, SLOT, self._gate.quiet_rms)
        return None if j is None else self._slots_done + j

    @property
    def samples_seen(self) -> int:
        return self._samples_done + self._pending.shape[0]

    @torch.no_grad()
    def push(self, samples: np.ndarray) -> torch.Tensor:
        """Feed 16 kHz mono float samples [n]; returns the conv frames completed by whole slots [m, C]."""
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        n = self._pending.shape[0] // SLOT
        first = self.first_sound
        if first is not None and self._slots_done + n < first + self.warmup_len(first):
            n = max(0, first - self._slots_done)  # warm-up under way: run only the slots before it
        if n == 0:
            return torch.zeros(0, self.channels, device=self.device, dtype=self.dtype)
        x, self._pending = self._pending[: n * SLOT], self._pending[n * SLOT:]
        return self._run(x, SLOT)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """End of input: run what is pending (a warm-up not yet complete, the last partial slot) through."""
        x, self._pending = self._pending, np.zeros(0, np.float32)
        if x.shape[0] == 0:
            return torch.zeros(0, self.channels, device=self.device, dtype=self.dtype)
        return self._run(x, SLOT)

    def _input_stats(self, xs: np.ndarray, counts: bool) -> tuple[float, float, float]:
        """Update the input statistics with one slot of samples; returns (gain, in_mean, in_var)."""
        if self.fixed is not None:
            return self.fixed.gain, self.fixed.in_mean, self.fixed.in_var
        if self.loudness:
            self._meter.push(xs)
        self._in_moments.update(torch.from_numpy(xs)[None], counts)
        gain = self._meter.gain(self.target_lufs) if self.loudness else 1.0
        return gain, float(self._in_moments.mean[0]), float(self._in_moments.var[0])

    def _stats_index(self, i: int, n: int) -> int:
        """Which slot's statistics slot i of this run uses: its own, or in the warm-up those of its last slot."""
        first = self._gate.first_sound
        if first is None or not first <= self._slots_done + i < first + self.warmup_len(first):
            return i
        return min(first + self.warmup_len(first) - 1 - self._slots_done, n - 1)

    def _run(self, x: np.ndarray, slot: int) -> torch.Tensor:
        # x: [K * slot] samples (the last slot may be partial at flush) -> [m, C] final conv frames
        starts = range(0, x.shape[0], slot)
        counts = [self._gate.counts(x[i:i + slot]) for i in starts]
        stats = [self._input_stats(x[i:i + slot], c) for i, c in zip(starts, counts, strict=True)]
        if self.group:
            first = self._group_first(torch.from_numpy(x).to(self.device), stats, counts, slot)
        else:
            parts = []
            for i, a in enumerate(starts):
                g, m, v = stats[self._stats_index(i, len(stats))]
                parts.append((x[a:a + slot] - m) / np.sqrt(v + INPUT_EPS / g**2))
            first = self._first(torch.from_numpy(np.concatenate(parts).astype(np.float32)).to(self.device)[None])
        self._samples_done += x.shape[0]
        self._slots_done += len(stats)
        h = first.to(self.dtype)
        for layer in self._rest:
            h = layer(h)
        self.frames_out += h.shape[-1]
        return h.transpose(0, 1)

    def _group_first(self, x: torch.Tensor, stats: list[tuple[float, float, float]], counts: list[bool],
                     slot: int) -> torch.Tensor:
        """conv0 + running GroupNorm + activation for whole slots: [n] samples -> [C0, frames] float32."""
        k0, s0, _ = self.layers_cfg[0]
        r = self._first(x[None])  # [C0, n0] raw conv0 on raw samples, float32, no bias

        def frames_done(samples: int) -> int:
            return (samples - k0) // s0 + 1 if samples >= k0 else 0

        groups, scales = [], []  # per slot: its conv0 frames; (mean, 1/std) after the slot
        offset = used = frames_done(self._samples_done)
        for i, (g, _, v) in enumerate(stats):
            n = frames_done(min(self._samples_done + (i + 1) * slot, self._samples_done + x.shape[0]))
            groups.append(r[:, used - offset:n - offset])
            used = n
            if self.fixed is not None:
                mean, var = self.fixed.conv_mean.to(self.device), self.fixed.conv_var.to(self.device)
            else:
                self._conv_moments.update(groups[-1], counts[i])
                mean, var = self._conv_moments.mean, self._conv_moments.var
            scales.append((mean[:, None], torch.rsqrt(var + self._gn_eps * (v + INPUT_EPS / g**2))[:, None]))
        out = []
        for i, rg in enumerate(groups):
            mean, inv = scales[self._stats_index(i, len(groups))]
            out.append(((rg.double() - mean) * inv).float())
        h = torch.cat(out, dim=-1) * self._gamma + self._beta
        return self._act0(h)
