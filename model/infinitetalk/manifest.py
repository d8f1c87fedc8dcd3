"""sha256 manifest of every file an InfiniteTalk load reads, so a changed or truncated file is refused at
start with its name, instead of loading garbage or failing deep inside a loader.

The manifest (`weights.sha256.json`, see model.weights.checksums) sits in the weights folder. It is
recorded after the first successful load; files that later join the load (a new LoRA) are added
after their first successful load too. Files recorded earlier are verified before anything loads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from model.weights import MANIFEST_NAME
from model.weights.checksums import build_manifest, read_manifest, verify_files, write_manifest

from .bundle import CLIP_CONFIG, VAE_CONFIG, ModelFiles

log = logging.getLogger(__name__)

VERIFY_MODES = ("full", "size", "off")


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _dit_files(entry: Path) -> list[Path]:
    if entry.is_dir():
        return [p for p in _folder_files(entry) if p.suffix in (".safetensors", ".json")]
    if entry.name.endswith(".index.json"):
        weight_map = json.loads(entry.read_text()).get("weight_map", {})
        return [entry, *sorted({entry.parent / name for name in weight_map.values()})]
    return [entry]


def _text_encoder_files(folder: Path) -> list[Path]:
    from model.text.encoder import find_tokenizer, find_weights

    tok = Path(find_tokenizer(folder))
    tokenizer = _folder_files(tok)
    if tok == folder:  # the tokenizer files sit among the model files: take only them
        tokenizer = [p for p in tokenizer if p.name.startswith(("tokenizer", "special_tokens", "spiece"))]
    return [Path(find_weights(folder)), *tokenizer]


def weight_files(files: ModelFiles) -> list[Path]:
    """Every file the load reads (DiT shards via their index, sidecar configs, the wav2vec2 folder...)."""
    out: list[Path] = []
    for entry in files.dit:
        out += _dit_files(entry)
    if files.dit_config is not None:
        out.append(files.dit_config)
    for model_file, sidecar in ((files.vae, VAE_CONFIG), (files.clip, CLIP_CONFIG)):
        out.append(model_file)
        if (model_file.parent / sidecar).is_file():
            out.append(model_file.parent / sidecar)
    out += _folder_files(files.wav2vec2)
    out += [p for p in (files.adapter, files.prompt_embeddings) if p is not None]
    if files.text_encoder is not None:
        out += _text_encoder_files(files.text_encoder)
    out += [p for p, _ in files.loras]
    seen: dict[Path, None] = {}
    for p in out:
        if p.name != MANIFEST_NAME:
            seen.setdefault(p.resolve(), None)
    return list(seen)


def verify_weights(files: ModelFiles, manifest: Path, mode: str = "full") -> list[Path]:
    """Check the files the manifest knows (sizes; sha256 too when mode is "full") and raise
    WeightLoadError naming each bad one. Returns the files it does not know yet (to record later)."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify mode {mode!r}: use one of {', '.join(VERIFY_MODES)}")
    paths = weight_files(files)
    if mode == "off" or not manifest.is_file():
        return paths
    recorded = read_manifest(manifest)["files"]
    base = manifest.parent.resolve()
    known = [p for p in paths if _name(p, base) in recorded]
    verify_files(known, manifest, full=mode == "full")
    return [p for p in paths if _name(p, base) not in recorded]


def record_weights(manifest: Path, new_files: list[Path]) -> None:
    """Add `new_files` to the manifest (creating it); a read-only folder only costs a warning."""
    if not new_files:
        return
    try:
        if manifest.is_file():
            merged = read_manifest(manifest)
            merged["files"].update(build_manifest(new_files, manifest.parent)["files"])
            tmp = manifest.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(manifest)
            log.info("added %d weight file(s) to %s", len(new_files), manifest)
        else:
            write_manifest(new_files, manifest)
    except OSError as exc:
        log.warning("could not record the weights manifest %s (%s): changed files will not be detected", manifest, exc)


def _name(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path, base)
