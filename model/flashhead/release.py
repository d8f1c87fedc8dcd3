"""The SoulX-FlashHead-1_3B release layout: which files a Pro or Lite run needs, found or all listed.

    SoulX-FlashHead-1_3B/                 (the --weights folder)
      Model_Pro/   config.json, diffusion_pytorch_model*.safetensors (or its .index.json)
      Model_Lite/  the same for the Lite model
      VAE_Wan/     Wan2.1_VAE.pth (Pro)
      VAE_LTX/     config.json, diffusion_pytorch_model*.safetensors (Lite: LTX-Video 0.9.0 VAE, diffusers folder)
    wav2vec2-base-960h/                   (transformers folder) inside the weights folder or next to it,
                                          or one wav2vec2*.safetensors file there (ComfyUI style, no config)

Tiny test models add a `vae_config.json` beside the Wan VAE (its sizes); the real Wan VAE needs none, and an
LTX VAE folder always states its sizes in its config.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from model.audio.loader import CONFIG_FILE, PREPROCESSOR_FILE, WEIGHT_FILES

logger = logging.getLogger(__name__)

PRO, LITE = "flashhead-pro", "flashhead-lite"
KINDS = (PRO, LITE)
MODEL_DIRS = {PRO: "Model_Pro", LITE: "Model_Lite"}
VAE_DIRS = {PRO: "VAE_Wan", LITE: "VAE_LTX"}
WAN_VAE_NAMES = ("Wan2.1_VAE.pth", "Wan2.1_VAE.safetensors")
WAV2VEC_DIR = "wav2vec2-base-960h"
VAE_SIDECAR = "vae_config.json"
KIND_LABELS = {PRO: "SoulX-FlashHead-1.3B Pro (Wan2.1 VAE)", LITE: "SoulX-FlashHead-1.3B Lite (LTX-Video VAE)"}


class FlashHeadFilesError(FileNotFoundError):
    """Files of a FlashHead run are missing or do not belong together; the message lists every one."""


@dataclass(frozen=True)
class FlashHeadFiles:
    """kind: PRO or LITE. model_dir: the DiT's from_pretrained folder. vae: the Wan VAE file (Pro) or
    the LTX VAE folder (Lite). wav2vec2: the transformers folder."""

    kind: str
    model_dir: Path
    vae: Path
    wav2vec2: Path

    def describe(self) -> str:
        return f"{KIND_LABELS[self.kind]}: DiT {self.model_dir}, VAE {self.vae}, wav2vec2 {self.wav2vec2}"


def detect_flashhead_kind(root: Path) -> str | None:
    """PRO or LITE for a folder in the release layout (Pro when both models are there), else None."""
    if not root.is_dir():
        return None
    if (root / MODEL_DIRS[PRO]).is_dir():
        return PRO
    if (root / MODEL_DIRS[LITE]).is_dir():
        return LITE
    if root.name.lower().startswith("soulx-flashhead"):
        return PRO  # named like the release but empty: the Pro files are listed as missing
    return None


def _dit_files(folder: Path) -> list[Path]:
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    return [index] if index.is_file() else sorted(folder.glob("diffusion_pytorch_model*.safetensors"))


def _model_missing(folder: Path) -> list[str]:
    missing = [] if (folder / "config.json").is_file() else [str(folder / "config.json")]
    if not _dit_files(folder):
        missing.append(f"{folder}/diffusion_pytorch_model*.safetensors (or its .safetensors.index.json)")
    return missing


def _wav2vec2(root: Path) -> tuple[Path, list[str]]:
    candidates = [root / WAV2VEC_DIR, root.parent / WAV2VEC_DIR]
    if not any(c.is_dir() for c in candidates):  # ComfyUI style: one wav2vec2*.safetensors file, no config
        single = sorted(root.glob("wav2vec2*.safetensors")) or sorted(root.parent.glob("wav2vec2*.safetensors"))
        if single:
            return single[0], []
    folder = next((c for c in candidates if c.is_dir()), candidates[0])
    missing = [str(folder / f) for f in (CONFIG_FILE, PREPROCESSOR_FILE) if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append(f"{folder}/{' or '.join(WEIGHT_FILES[:2])}")
    if not folder.is_dir():
        missing = [f"{candidates[0]}/ or {candidates[1]}/ (facebook/wav2vec2-base-960h: {CONFIG_FILE}, "
                   f"{PREPROCESSOR_FILE}, model weights)"]
    return folder, missing


def _vae(root: Path, kind: str) -> tuple[Path, list[str]]:
    folder = root / VAE_DIRS[kind]
    if kind == PRO:
        found = next((folder / n for n in WAN_VAE_NAMES if (folder / n).is_file()), None)
        return (found, []) if found else (folder / WAN_VAE_NAMES[0], [f"{folder / WAN_VAE_NAMES[0]} (Pro's Wan2.1 VAE)"])
    return folder, [f"{m} (Lite's LTX-Video VAE)" for m in _model_missing(folder)]


def _mismatch(root: Path, kind: str) -> list[str]:
    """A VAE of the other model beside this one's folder only: one clear error instead of a load failure."""
    other = LITE if kind == PRO else PRO
    if (root / VAE_DIRS[other]).is_dir() and not (root / VAE_DIRS[kind]).is_dir():
        return [f"{root / VAE_DIRS[other]}/ is the VAE of {KIND_LABELS[other]}; {KIND_LABELS[kind]} needs "
                f"{root / VAE_DIRS[kind]}/ (or choose --preset {other})"]
    return []


def discover_flashhead(root: str | Path, kind: str) -> FlashHeadFiles:
    """The files of a `kind` run under `root`; FlashHeadFilesError listing every missing one."""
    if kind not in KINDS:
        raise ValueError(f"unknown FlashHead kind {kind!r}: {', '.join(KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise FlashHeadFilesError(f"weights folder {root} does not exist")
    model_dir = root / MODEL_DIRS[kind]
    vae, vae_missing = _vae(root, kind)
    wav2vec2, wav_missing = _wav2vec2(root)
    mismatch = _mismatch(root, kind)
    problems = mismatch + _model_missing(model_dir) + ([] if mismatch else vae_missing) + wav_missing
    if problems:
        raise FlashHeadFilesError(
            f"{KIND_LABELS[kind]} in {root} is incomplete; missing:\n" + "\n".join(f"  - {p}" for p in problems))
    files = FlashHeadFiles(kind, model_dir, vae, wav2vec2)
    logger.info("%s", files.describe())
    return files
