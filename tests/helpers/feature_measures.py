"""The statistics that the live-feature tests bound, measured on any wav2vec2 (tests and bench share them).

Each function measures one thing a test in tests/streaming/test_speech_features*.py asserts a bound
on, so the bench (tests/bounds/feature_bounds_sweep.py) can measure it over a family of random models and
the tests can assert it over a few of them with the bound the sweep supports.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import Wav2Vec2Model

from model.audio import conv_features, loudness_normalize, normalize_input, whole_clip_embedding
from streaming.features import SLOT, FeatureSettings, IncrementalConvStack, IncrementalFeatureExtractor

from .w2v_family import live_cosines, live_frames, mean_p5
from .w2v_models import frame_aligned, frame_cosines

LOOKAHEADS = (0, 4, 8, 16)


def lookahead_curve(model: Wav2Vec2Model, clips: list[np.ndarray]) -> dict[int, list[torch.Tensor]]:
    """Per look-ahead (others at default): per-clip cosines live vs whole clip (first 6 s of each clip)."""
    return {la: live_cosines(model, clips, FeatureSettings(lookahead_frames=la)) for la in LOOKAHEADS}


def lookahead_figures(curve: dict[int, list[torch.Tensor]]) -> dict[str, float]:
    """What test_more_lookahead_is_not_worse bounds: the largest drop of a clip's mean (and of the pooled
    p5) from one look-ahead to the next longer one, and the gain of the longest over none."""
    means = [[float(c.mean()) for c in curve[la]] for la in LOOKAHEADS]
    p5 = [mean_p5(curve[la])[1] for la in LOOKAHEADS]
    return {
        "worst_clip_mean_drop": max(a - b for s, lo in zip(means, means[1:], strict=False)
                                    for a, b in zip(s, lo, strict=True)),
        "worst_p5_drop": max(a - b for a, b in zip(p5, p5[1:], strict=False)),
        "gain_longest_vs_none": float(np.mean(means[-1]) - np.mean(means[0])),
    }


def cached_minus_recompute(model: Wav2Vec2Model, clips: list[np.ndarray]) -> float:
    """Mean cosine of the cached-context encoder minus the recomputing one (first 5 s, 100 ms pushes)."""
    means = {}
    for encoder in ("cached", "recompute"):
        means[encoder] = float(torch.cat(live_cosines(model, clips, FeatureSettings(encoder=encoder), 5.0)).mean())
    return means["cached"] - means["recompute"]


def silent_lookahead_cosines(model: Wav2Vec2Model, clips: list[np.ndarray], seconds: float = 6.0) -> list[torch.Tensor]:
    """A broken path: every block encoded with silence for its look-ahead (`provisional(zeros)` at each
    block end), as when padding stood in for the future. The stream itself gets the real audio."""
    s = FeatureSettings()
    b, la = s.block_frames, s.lookahead_frames
    out = []
    for x in clips:
        x = frame_aligned(x, seconds)
        ex, rows = IncrementalFeatureExtractor(model, s), []
        for end in range(b, x.shape[0] // SLOT + 1, b):
            ex.push(x[(end - b) * SLOT:end * SLOT])
            ahead = ex.provisional(np.zeros(la * SLOT, np.float32))
            first = end - b - ex.frames_emitted
            rows.append(ahead[first:first + b])
        got = torch.cat(rows)
        ref = whole_clip_embedding(model, x)[: got.shape[0]]
        out.append(frame_cosines(got, ref))
    return out


def broken_paths(model: Wav2Vec2Model, clips: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """(mean, p5) of feature paths that are wrong and must fall below the closeness bound."""
    late = []
    for x in clips:
        x = frame_aligned(x, 6.0)
        live, ref = live_frames(model, x, FeatureSettings()), whole_clip_embedding(model, x)
        late.append(frame_cosines(live[1:], ref[:-1]))  # every frame one frame (40 ms) late
    return {
        "no_left_context": mean_p5(live_cosines(model, clips, FeatureSettings(left_context_frames=0))),
        "silent_lookahead": mean_p5(silent_lookahead_cosines(model, clips)),
        "one_frame_late": mean_p5(late),
    }


def _conv_stream(stack: IncrementalConvStack, x: np.ndarray, size: int = 320) -> torch.Tensor:
    return torch.cat([stack.push(x[i:i + size]) for i in range(0, x.shape[0], size)] + [stack.flush()])


def running_stats_convergence(model: Wav2Vec2Model, x: np.ndarray) -> tuple[float, float]:
    """Conv features with running statistics vs the whole clip's: (mean cosine of the first 5 conv
    frames, of the last second). The end must match the whole clip; the start really is estimated."""
    ref = conv_features(model, normalize_input(loudness_normalize(x)))
    got = _conv_stream(IncrementalConvStack(model, stats_horizon_s=None), x)
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
    return float(cos[:5].mean()), float(cos[-50:].mean())


def leading_silence_errors(model: Wav2Vec2Model, x: np.ndarray) -> dict[float, float]:
    """Max relative error of the conv features of x after 3 s of leading silence vs x alone, with the
    sound gate (quiet_rms 1e-3) and without it (0: every slot counts)."""
    alone = _conv_stream(IncrementalConvStack(model, warmup_slots=8), x)
    lead = 3 * 16000
    padded = np.concatenate([np.zeros(lead, np.float32), x])
    errors = {}
    for quiet_rms in (1e-3, 0.0):
        after = _conv_stream(IncrementalConvStack(model, warmup_slots=8, quiet_rms=quiet_rms), padded)[lead // 320:]
        errors[quiet_rms] = float((after - alone).abs().max() / alone.abs().max())
    return errors


def bf16_cosine(model: Wav2Vec2Model, x: np.ndarray) -> float:
    """Mean cosine of the live features with the model in bfloat16 vs float32 (oneDNN off: see the test)."""
    ref = live_frames(model, x, FeatureSettings(), piece=320)
    low = type(model)(model.config)
    low.load_state_dict(model.state_dict())
    low = low.to(torch.bfloat16).eval()
    with torch.backends.mkldnn.flags(enabled=False):
        got = live_frames(low, x, FeatureSettings(), piece=320)
    return float(frame_cosines(got, ref).mean())


def loudness_gain_effect(model: Wav2Vec2Model, x: np.ndarray) -> float:
    """Max |live with the loudness gain - without| relative to the features' max (an epsilon: tiny, > 0)."""
    on = live_frames(model, x, FeatureSettings(loudness=True), piece=640)
    off = live_frames(model, x, FeatureSettings(loudness=False), piece=640)
    return float((on - off).abs().max() / off.abs().max())
