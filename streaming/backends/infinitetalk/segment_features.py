"""Generated speech: speech features of whole segments, as the reference computes them offline.

The engine attaches the known audio of the segments a window plays (`streaming/segment_clips.py`).
Each clip goes once through the reference's whole-clip path (`model.audio.whole_clip_embedding`: the
clip's loudness, its input normalisation, the CNN, 25 fps interpolation, the encoder attending over
the whole clip) and its rows replace the live features of the frames it covers. A clip still growing
(the segment was not all in when the window ran) is computed again once more of it is known; a
complete one is computed once. Frames outside every clip (before a segment, after its end, the
silence padding a window) keep the live features.

Alignment: clip row k stands for the clip's samples [k*spf, (k+1)*spf); frame f plays session samples
[f*spf, (f+1)*spf), so frame f takes row round((f*spf - start) / spf), the row whose audio overlaps it
most (a segment starting mid-frame is off by at most half a frame, 20 ms); frames whose row would be
before 0 or past the clip's last whole frame keep the live features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import Wav2Vec2Model

from model.audio import whole_clip_embedding
from model.timebase import SAMPLES_PER_FRAME
from streaming.segment_clips import SegmentClip


@dataclass
class _Rows:
    known: int  # samples the rows were computed from
    complete: bool
    rows: torch.Tensor  # [S, layers, hidden]


def clip_row_index(frames: torch.Tensor, clip: SegmentClip, rows: int, spf: int = SAMPLES_PER_FRAME) -> torch.Tensor:
    """Per frame index, the clip's row it takes (-1: outside the clip)."""
    k = torch.div(frames * spf - clip.start + spf // 2, spf, rounding_mode="floor")
    return torch.where((k >= 0) & (k < rows), k, torch.full_like(k, -1))


class SegmentFeatures:
    """One session's whole-clip rows of the clips its windows play (only those of the last window kept)."""

    def __init__(self, wav2vec2: Wav2Vec2Model, loudness: bool = True) -> None:
        self.model = wav2vec2
        self.loudness = loudness
        self._cache: dict[tuple[int, int], _Rows] = {}
        self.computed = 0  # whole-clip passes run (for tests and benches)

    def rows(self, clips: Sequence[SegmentClip]) -> list[tuple[SegmentClip, torch.Tensor]]:
        """The rows of each clip, computed when new or grown; clips of earlier windows are forgotten."""
        out, cache = [], {}
        for clip in clips:
            if clip.samples.size < SAMPLES_PER_FRAME:
                continue  # shorter than one frame: no row of its own
            have = self._cache.get(clip.key)
            if have is None or (not have.complete and have.known != clip.samples.size):
                with torch.no_grad():
                    emb = whole_clip_embedding(self.model, clip.samples, loudness=self.loudness)
                have = _Rows(clip.samples.size, clip.complete, emb)
                self.computed += 1
            cache[clip.key] = have
            out.append((clip, have.rows))
        self._cache = cache
        return out

    @staticmethod
    def overlay(rows: torch.Tensor, frames: torch.Tensor, clip_rows: list[tuple[SegmentClip, torch.Tensor]]
                ) -> torch.Tensor:
        """rows [..., layers, hidden] for the frame indices `frames` (same leading shape): a copy with
        the rows of frames inside a clip replaced by the clip's."""
        out = rows.clone()
        for clip, emb in clip_rows:
            k = clip_row_index(frames, clip, emb.shape[0]).to(emb.device)
            inside = k >= 0
            if bool(inside.any()):
                out[inside.to(out.device)] = emb[k[inside]].to(out)
        return out
