"""The FlashHead model's sizes from its `config.json` (diffusers `from_pretrained` folder
`Model_Pro/` or `Model_Lite/`) or a parity set's `dit_config.json`.

The reference constructor (`WanModelAudioProject`) takes Wan's sizes plus `vae_stride`; it
hard-wires the audio adapter for the 1.3B model (12 wav2vec2 layers x 768 channels, 512
intermediate, 32 tokens, window 5, output 1536 = the model width). Here those are configuration: an
optional "audio" object (keys blocks, channels, intermediate_dim, context_tokens) overrides them, as
the tiny parity sets do; a release config has none and gets the hard-wired values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.dit import DiTConfig

logger = logging.getLogger(__name__)

_WAN_SIZES = ("dim", "in_dim", "ffn_dim", "out_dim", "text_dim", "freq_dim", "eps", "num_heads", "num_layers")
_REQUIRED = (*_WAN_SIZES, "vae_stride", "patch_size")
# Reference hard-wired audio adapter sizes (`WanModelAudioProject.__init__`, `AudioProjModel` defaults).
_AUDIO_DEFAULTS = {"blocks": 12, "channels": 768, "intermediate_dim": 512, "context_tokens": 32}
_AUDIO_WINDOW = 5
# Keys a parity set's dit_config.json adds for its loop (read by the tests, not the model).
_SET_KEYS = {"audio", "lat", "frame_num", "motion_latents", "seed", "reference", "has_image_input"}


@dataclass(frozen=True)
class FlashHeadConfig:
    """dit: the network's sizes. vae_stride: (t, h, w) compression of the VAE the model was trained with."""

    dit: DiTConfig
    vae_stride: tuple[int, int, int]

    @property
    def latent_channels(self) -> int:
        return self.dit.out_dim

    def latent_frames(self, video_frames: int) -> int:
        """Latent frames of a window of `video_frames` frames: (F - 1) / stride_t + 1."""
        st = self.vae_stride[0]
        if (video_frames - 1) % st:
            raise ValueError(f"a window of {video_frames} frames is not 1 + a multiple of the VAE's {st}")
        return (video_frames - 1) // st + 1

    def motion_frames(self, motion_latents: int) -> int:
        """Video frames re-encoded into `motion_latents` latent frames: (n - 1) * stride_t + 1
        (the reference's `motion_frames_num`: 5 on the Wan VAE, 9 on the LTX VAE for 2 latents)."""
        return (motion_latents - 1) * self.vae_stride[0] + 1

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        sh, sw = self.vae_stride[1:]
        if height % sh or width % sw:
            raise ValueError(f"{height}x{width} is not a multiple of the VAE's spatial stride {sh}x{sw}")
        return height // sh, width // sw

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> FlashHeadConfig:
        """From the reference constructor's keyword arguments (see the module docstring)."""
        missing = [k for k in _REQUIRED if k not in kwargs]
        if missing:
            raise ValueError(f"FlashHead config lacks {', '.join(missing)} (a WanModelAudioProject config.json has them)")
        if kwargs.get("has_image_input", False):
            raise ValueError("has_image_input=true: FlashHead checkpoints have no CLIP image input; this is another model")
        unknown = sorted(k for k in kwargs if not k.startswith("_") and k not in (*_REQUIRED, *_SET_KEYS))
        if unknown:
            logger.warning("FlashHead config keys %s are not WanModelAudioProject sizes; ignored", unknown)
        audio = {**_AUDIO_DEFAULTS, **kwargs.get("audio", {})}
        stride = tuple(int(s) for s in kwargs["vae_stride"])
        if len(stride) != 3:
            raise ValueError(f"vae_stride must have 3 entries (t, h, w), got {kwargs['vae_stride']}")
        dit = DiTConfig(
            **{k: kwargs[k] for k in _WAN_SIZES},
            patch_size=tuple(int(p) for p in kwargs["patch_size"]),
            vae_scale=stride[0],
            audio_window=_AUDIO_WINDOW,
            audio_layers=int(audio["blocks"]),
            audio_width=int(audio["channels"]),
            intermediate_dim=int(audio["intermediate_dim"]),
            context_tokens=int(audio["context_tokens"]),
            output_dim=int(kwargs["dim"]),
            norm_output_audio=True,
        )
        return cls(dit=dit, vae_stride=stride)

    @classmethod
    def from_file(cls, path: str | Path) -> FlashHeadConfig:
        """From a config.json file, or a folder holding one."""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        try:
            kwargs = json.loads(p.read_text())
        except OSError as exc:
            raise FileNotFoundError(f"FlashHead config not found: {p}") from exc
        except ValueError as exc:
            raise ValueError(f"{p} is not valid JSON: {exc}") from exc
        if not isinstance(kwargs, dict):
            raise ValueError(f"{p} must hold a JSON object of model sizes")
        return cls.from_kwargs(kwargs)
