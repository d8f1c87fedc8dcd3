"""InfiniteTalk / MultiTalk Wan2.1 I2V diffusion transformer with the audio adapter.

    from model.dit import DiTConfig, InfiniteTalkDiT
    model = InfiniteTalkDiT(DiTConfig.tiny())
    out = model(x, t, context, clip_fea, y, audio, ref_target_masks)   # see InfiniteTalkDiT.forward
"""

from .config import DiTConfig
from .transformer import InfiniteTalkDiT

__all__ = ["DiTConfig", "InfiniteTalkDiT"]
