"""Wan 2.1 causal video VAE: `WanVAE(VAEConfig)` with batched encode / decode / decode_stream."""

from .config import WAN21_LATENT_MEAN, WAN21_LATENT_STD, VAEConfig
from .layers import CausalCache
from .loading import load_state_dict_file, load_wan_vae
from .pixels import frames_to_video, video_to_frames
from .wan_vae import WanVAE, check_vae_keys

__all__ = [
    "WAN21_LATENT_MEAN",
    "WAN21_LATENT_STD",
    "CausalCache",
    "VAEConfig",
    "WanVAE",
    "check_vae_keys",
    "frames_to_video",
    "load_state_dict_file",
    "load_wan_vae",
    "video_to_frames",
]
