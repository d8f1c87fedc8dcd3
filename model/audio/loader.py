"""Load the wav2vec2 speech encoder (chinese-wav2vec2-base for InfiniteTalk, wav2vec2-base-960h for
FlashHead) from a local HF folder, or from one ComfyUI-style weights file (`single_file.py`).

Expected folder (as published on the hub, downloaded by the user beforehand):
    config.json                   model architecture (12 layers x 768 for chinese-wav2vec2-base)
    model.safetensors | pytorch_model.bin
    preprocessor_config.json      feature-extractor settings (we check do_normalize / sampling_rate)
Never contacts a hub: everything is `local_files_only`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Wav2Vec2Model
from transformers.utils import logging as transformers_logging

from model.timebase import SAMPLE_RATE

from .single_file import load_wav2vec2_file

log = logging.getLogger(__name__)
transformers_logging.disable_progress_bar()  # no per-load progress bars in a server log

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")

# Parameters that exist in the HF class but are only used for pre-training masks.
_UNUSED_IN_EVAL = ("masked_spec_embed",)


class Wav2Vec2LoadError(RuntimeError):
    """The wav2vec2 folder is missing, incomplete or does not match the model class."""


@dataclass(frozen=True)
class Wav2Vec2Preprocessing:
    """What the HF feature extractor would do before the model (from preprocessor_config.json)."""

    sampling_rate: int = SAMPLE_RATE
    do_normalize: bool = True


def check_wav2vec2_folder(folder: str | Path) -> Path:
    """Return the folder (or single weights file, see `single_file`) as a Path, or raise Wav2Vec2LoadError
    naming what is missing."""
    path = Path(folder)
    if path.is_file():
        return path
    if not path.is_dir():
        raise Wav2Vec2LoadError(
            f"wav2vec2 folder {path} does not exist; download chinese-wav2vec2-base (HF format: "
            f"{CONFIG_FILE}, model.safetensors or pytorch_model.bin, {PREPROCESSOR_FILE}) and pass its path")
    missing = [f for f in (CONFIG_FILE, PREPROCESSOR_FILE) if not (path / f).is_file()]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[:2]))
    if missing:
        raise Wav2Vec2LoadError(f"wav2vec2 folder {path} is incomplete: missing {', '.join(missing)}")
    return path


def read_preprocessing(folder: str | Path) -> Wav2Vec2Preprocessing:
    """Read and sanity-check preprocessor_config.json (16 kHz, zero-mean/unit-variance input); a single
    weights file has none and gets wav2vec2's defaults (16 kHz, normalised)."""
    if check_wav2vec2_folder(folder).is_file():
        return Wav2Vec2Preprocessing()
    path = Path(folder) / PREPROCESSOR_FILE
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise Wav2Vec2LoadError(f"{path} is not valid JSON: {e}") from e
    pre = Wav2Vec2Preprocessing(int(cfg.get("sampling_rate", SAMPLE_RATE)), bool(cfg.get("do_normalize", True)))
    if pre.sampling_rate != SAMPLE_RATE:
        raise Wav2Vec2LoadError(f"{path}: sampling_rate {pre.sampling_rate}, but this pipeline feeds 16 kHz audio")
    return pre


def load_wav2vec2(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  attn_implementation: str = "sdpa") -> Wav2Vec2Model:
    """Load `transformers.Wav2Vec2Model` from a local folder, in eval mode, without gradients.

    attn_implementation: "sdpa" (default, fastest) or "eager"; both match the reference (eager)
    to ~2e-6. Raises Wav2Vec2LoadError when a file is missing or weights are missing / mis-shaped.
    """
    path = check_wav2vec2_folder(folder)
    if path.is_file():  # ComfyUI's one .safetensors with no config: the architecture comes from the weights
        try:
            return load_wav2vec2_file(path, device=device, dtype=dtype)
        except (OSError, ValueError) as e:
            raise Wav2Vec2LoadError(f"could not load wav2vec2 from {path}: {e}") from e
    read_preprocessing(path)
    try:
        model, info = Wav2Vec2Model.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True, attn_implementation=attn_implementation)
    except (OSError, ValueError) as e:
        raise Wav2Vec2LoadError(f"could not load wav2vec2 from {path}: {e}") from e
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(_UNUSED_IN_EVAL))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise Wav2Vec2LoadError(
            f"weights in {path} do not fit its {CONFIG_FILE}: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, mismatched shapes {mismatched[:8]}; "
            "is this a wav2vec2 checkpoint in HF format?")
    unexpected = sorted(info.get("unexpected_keys", ()))
    if unexpected:
        log.info("wav2vec2 %s: ignoring %d unused weights (e.g. %s)", path, len(unexpected), unexpected[0])
    cfg = model.config
    log.info("wav2vec2 loaded from %s: %d layers x %d, dtype %s", path, cfg.num_hidden_layers, cfg.hidden_size, dtype)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
