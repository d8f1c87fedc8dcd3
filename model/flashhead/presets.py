"""FlashHead's presets (reference `flash_head/configs/infer_params.yaml` and `inference.py`).

Both models: 512x512, 33-frame chunks, 2 motion latents, 4 steps [1000, 750, 500, 250] at shift 5
with x0 re-noising and no guidance, colour correction 1.0, features of the last 8 s of audio. The
motion latents are (2 - 1) * stride_t + 1 video frames: 5 on Pro (Wan VAE, stride 4) -> 28 new
frames per chunk; 9 on Lite (LTX VAE, stride 8) -> 24.
"""

from __future__ import annotations

from model.sampling import FLASHTALK_2STEP, FLASHTALK_4STEP

from .loop import ChunkSettings
from .release import LITE, PRO

PRESETS: dict[str, ChunkSettings] = {
    PRO: ChunkSettings(frame_num=33, motion_latents=2, sampler=FLASHTALK_4STEP, colour_strength=1.0),
    LITE: ChunkSettings(frame_num=33, motion_latents=2, sampler=FLASHTALK_4STEP, colour_strength=1.0),
}
SIZE = (512, 512)
"""(height, width) of both models."""
ROLLING_SECONDS = 8.0
"""`cached_audio_duration`: seconds of audio re-encoded for every chunk."""
SAMPLERS = {4: FLASHTALK_4STEP, 2: FLASHTALK_2STEP}
"""Step counts the distilled models run (the reference's table: 4 -> [1000, 750, 500, 250], 2 -> [1000, 500])."""
