"""SoulX-FlashHead-1.3B (Pro: Wan2.1 VAE; Lite: LTX-Video VAE): the 1.3B talking-head member of the
InfiniteTalk/FlashTalk family, served on one GPU.

    config.py      `FlashHeadConfig`: sizes from the model folder's config.json
    dit_loader.py  config + safetensors -> `model.dit.flashhead.FlashHeadDiT`
    loop.py        one 33-frame chunk: 4-step x0-renoise sampling with motion latents
"""

from .config import FlashHeadConfig
from .dit_loader import load_flashhead_dit

__all__ = ["FlashHeadConfig", "load_flashhead_dit"]
