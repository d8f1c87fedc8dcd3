"""wav2vec2 speech features resampled to the video frame rate, split into the reference's stages.

Whole-clip path (the reference's `loudness_norm` + `get_embedding`):

    wave 16 kHz --loudness_normalize--> --normalize_input--> input_values [N]
      --conv_features--> [n_conv, C] (~50 Hz)      (CNN feature encoder)
      --interpolate_features--> [S, C]              (linear, align_corners, S = video frames)
      --encode_features--> [S, layers, hidden]      (feature projection + transformer encoder)

The stages are separate so an incremental (live) extractor can run the CNN on chunks, keep the
conv features, and run interpolation + encoder over a sliding window.
"""

from __future__ import annotations

import logging

import numpy as np
import pyloudnorm
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Model

from model.timebase import SAMPLE_RATE as SAMPLE_RATE  # re-exported: model.audio's public units
from model.timebase import VIDEO_FPS as VIDEO_FPS

log = logging.getLogger(__name__)

TARGET_LUFS = -23.0
_NORM_EPS = 1e-7  # the HF Wav2Vec2FeatureExtractor's variance epsilon

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(wave: ArrayLike) -> np.ndarray:
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform [samples], got shape {list(wave.shape)}")
    return wave


def num_video_frames(num_samples: int, sr: int = SAMPLE_RATE, fps: int = VIDEO_FPS) -> int:
    """Video frames S the reference makes for `num_samples` of audio: int(num_samples / sr * fps).

    Evaluated in floating point exactly like the reference, which for some exact multiples of
    sr/fps gives one frame less (e.g. 29 * 640 samples -> 28 frames), so parity holds.
    """
    return int(num_samples / sr * fps)


def loudness_normalize(wave: ArrayLike, sr: int = SAMPLE_RATE, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """Gain the clip to `target_lufs` integrated loudness (ITU-R BS.1770 via pyloudnorm).

    Returned unchanged (as float32) when the measured loudness has |L| > 100 (silence gives -inf),
    and when the clip is shorter than one 400 ms gating block (pyloudnorm cannot measure it).
    Returns float32 [samples].
    """
    x = _as_numpy(wave)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected a float waveform in [-1, 1], got {x.dtype}; scale integer PCM first")
    meter = pyloudnorm.Meter(sr)
    if x.shape[0] < meter.block_size * sr:
        log.debug("clip of %d samples is shorter than a loudness block; not normalised", x.shape[0])
        return x.astype(np.float32)
    loudness = meter.integrated_loudness(x)
    if abs(loudness) > 100:
        return x.astype(np.float32)
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return (gain * x.astype(np.float64)).astype(np.float32)


def normalize_input(wave: ArrayLike) -> torch.Tensor:
    """Zero-mean, unit-variance input of wav2vec2: (x - mean) / sqrt(var + 1e-7) over the clip.

    float32 numpy arithmetic, as the HF feature extractor does it. Returns float32 tensor [samples].
    """
    x = _as_numpy(wave).astype(np.float32)
    out = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def _model_device_dtype(model: Wav2Vec2Model) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


@torch.no_grad()
def conv_features(model: Wav2Vec2Model, input_values: torch.Tensor) -> torch.Tensor:
    """CNN feature encoder: [samples] -> [n_conv, C] (or [B, samples] -> [B, n_conv, C]), time-major.

    n_conv = frames of the conv stack (~50 Hz: receptive field 400 samples, hop 320 for the base model).
    """
    device, dtype = _model_device_dtype(model)
    x = input_values.to(device=device, dtype=dtype)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None]
    feats = model.feature_extractor(x).transpose(1, 2)  # [B, C, n] -> [B, n, C]
    return feats[0] if squeeze else feats


def interpolate_features(feats: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linear resampling along time with align_corners=True: [n, C] -> [S, C] (or batched [B, n, C]).

    The reference does this on the conv features, before the feature projection.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    x = feats[None] if feats.ndim == 2 else feats
    out = F.interpolate(x.transpose(1, 2), size=num_frames, mode="linear", align_corners=True).transpose(1, 2)
    return out[0] if feats.ndim == 2 else out


@torch.no_grad()
def encode_features(model: Wav2Vec2Model, feats: torch.Tensor) -> torch.Tensor:
    """Feature projection + transformer encoder; returns every layer's output stacked.

    feats: [S, C] conv features at the video rate (or [B, S, C]).
    Returns [S, layers, hidden] (or [B, S, layers, hidden]): the reference's hidden_states[1:],
    i.e. the output of each transformer layer (hidden_states[0], the encoder input, is dropped).
    For the stable-layer-norm variant the last entry is taken after the encoder's final LayerNorm,
    as transformers 4.x (the reference's) reports it.
    """
    device, dtype = _model_device_dtype(model)
    x = feats.to(device=device, dtype=dtype)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    hidden, _ = model.feature_projection(x)

    outputs: list[torch.Tensor] = []

    def record(_module, _inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(record) for layer in model.encoder.layers]
    try:
        enc = model.encoder(hidden)
    finally:
        for h in handles:
            h.remove()
    if len(outputs) != len(model.encoder.layers):
        raise RuntimeError(f"expected {len(model.encoder.layers)} layer outputs, recorded {len(outputs)}")
    if model.config.do_stable_layer_norm:
        outputs[-1] = enc[0] if isinstance(enc, tuple) else enc.last_hidden_state
    stacked = torch.stack(outputs, dim=2)  # [B, S, layers, hidden]
    return stacked[0] if squeeze else stacked


def whole_clip_embedding(model: Wav2Vec2Model, wave16k: ArrayLike, sr: int = SAMPLE_RATE, fps: int = VIDEO_FPS,
                         loudness: bool = True) -> torch.Tensor:
    """Per-video-frame speech features of a whole clip, as the reference pipeline computes them.

    wave16k: mono float waveform [samples] at `sr` (16 kHz). loudness: apply the reference's
    -23 LUFS normalisation first (its audio loader always does). Returns [S, layers, hidden] on the
    model's device with S = num_video_frames(samples).
    """
    x = _as_numpy(wave16k)
    s = num_video_frames(x.shape[0], sr, fps)
    if s < 1:
        raise ValueError(f"clip of {x.shape[0]} samples is shorter than one video frame at {fps} fps")
    if loudness:
        x = loudness_normalize(x, sr)
    feats = conv_features(model, normalize_input(x))
    return encode_features(model, interpolate_features(feats, s))
