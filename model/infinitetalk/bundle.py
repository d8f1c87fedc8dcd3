"""Find and load every file InfiniteTalk (or SoulX-FlashTalk) needs, from the folder layouts they ship in.

    WEIGHTS/
      Wan2.1-I2V-14B-480P/                 the base model release
        config.json
        diffusion_pytorch_model-0000N-of-0000M.safetensors + diffusion_pytorch_model.safetensors.index.json
        Wan2.1_VAE.pth                     (or .safetensors)
        models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth   (or .safetensors, or clip_vision_h.safetensors)
        models_t5_umt5-xxl-enc-bf16.pth + google/umt5-xxl/        (optional: the text encoder)
      chinese-wav2vec2-base/               (Hugging Face folder)
      InfiniteTalk/single/infinitetalk.safetensors               (the audio adapter; multi/ for 2 speakers)
      prompt_embeddings.safetensors        (optional: precomputed text, see `python -m model.text`)

SoulX-FlashTalk-14B is one folder with the same file names and the adapter merged into the DiT
(see `kinds.py`); wav2vec2 sits next to it or inside it. `detect_weights_kind` tells them apart.
Everything missing is reported at once, with the names expected, before anything is loaded.
A JSON file can name the paths explicitly instead (`ModelFiles.from_json`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.audio.loader import check_wav2vec2_folder, load_wav2vec2
from model.clip_vision import CLIPVisionConfig, load_clip_vision
from model.dit import DiTConfig, InfiniteTalkDiT
from model.dit.parallel_serve import ParallelPlan, lead
from model.text import DEFAULT_NEGATIVE_PROMPT, UMT5TextEncoder, load_prompt_embeddings
from model.vae import VAEConfig, WanVAE, load_wan_vae
from model.weights import LoraSpec, WeightLoadError, infer_dit_config, load_module
from model.weights.sources import read_shapes

from .kinds import (
    ADAPTER_PATHS,
    BASE_DIR,
    FLASHTALK,
    FLASHTALK_DIR,
    FLASHTALK_PROMPT,
    INFINITETALK,
    KIND_LABELS,
    KINDS,
    MissingWeightsError,
    UnknownWeightsError,
    detect_weights_kind,
)
from .pipeline import InfiniteTalkPipeline, TextConditioning
from .speed import SpeedOptions, apply_speed_options, finish_loaded_dit, prepare_dit_for_loading

log = logging.getLogger(__name__)

__all__ = ["ADAPTER_PATHS", "BASE_DIR", "CLIP_CONFIG", "CLIP_NAMES", "InfiniteTalkBundle", "MissingWeightsError",
           "ModelFiles", "PROMPT_FILE", "T5_NAMES", "VAE_CONFIG", "VAE_NAMES", "WAV2VEC_DIR", "load_bundle"]

VAE_NAMES = ("Wan2.1_VAE.safetensors", "Wan2.1_VAE.pth")
CLIP_NAMES = (
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.safetensors",
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    "clip_vision_h.safetensors",  # ComfyUI's copy (transformers layout, renamed on load)
)
T5_NAMES = ("models_t5_umt5-xxl-enc-bf16.pth", "umt5_xxl_fp16.safetensors", "models_t5_umt5-xxl-enc-bf16.safetensors")
WAV2VEC_DIR = "chinese-wav2vec2-base"
PROMPT_FILE = "prompt_embeddings.safetensors"
# Optional sidecars for non-standard sizes (tiny test models): kwargs of the configs.
VAE_CONFIG, CLIP_CONFIG = "vae_config.json", "clip_config.json"


@dataclass(frozen=True)
class ModelFiles:
    """Paths of everything the model needs. `dit` lists base files/index/folder; the adapter goes last.

    kind: "infinitetalk" or "flashtalk" (which release the files are; it picks the default preset).
    """

    dit: tuple[Path, ...]
    dit_config: Path | None  # None: sizes inferred from the weights' shapes (Wan's 128-wide heads)
    vae: Path
    clip: Path
    wav2vec2: Path
    adapter: Path | None = None
    text_encoder: Path | None = None
    prompt_embeddings: Path | None = None
    loras: tuple[tuple[Path, float], ...] = field(default_factory=tuple)
    kind: str = INFINITETALK

    @classmethod
    def discover(cls, root: str | Path, multi_speaker: bool = False) -> ModelFiles:
        """Find the files in either release layout (module docstring); raise listing all that is missing."""
        root = Path(root)
        try:
            kind, unknown = detect_weights_kind(root), None
        except UnknownWeightsError as exc:  # list what the InfiniteTalk layout lacks, then describe both
            kind, unknown = INFINITETALK, exc
        if kind == FLASHTALK:
            base = root / FLASHTALK_DIR if (root / FLASHTALK_DIR).is_dir() else root
            wav_dirs = [root / WAV2VEC_DIR, base / WAV2VEC_DIR, base.parent / WAV2VEC_DIR]
            adapters: list[Path] = []
            if multi_speaker:
                log.warning("SoulX-FlashTalk was distilled for one speaker; two-speaker sessions may look wrong")
        else:
            base = root / BASE_DIR if (root / BASE_DIR).is_dir() else root
            wav_dirs = [root / WAV2VEC_DIR]
            adapters = [root / p for p in ADAPTER_PATHS]
            if multi_speaker:
                adapters.reverse()
        missing: list[str] = []

        def first(folder: Path, names: tuple[str, ...], what: str) -> Path | None:
            for n in names:
                if (folder / n).exists():
                    return folder / n
            missing.append(f"{what}: one of {', '.join(str(folder / n) for n in names)}")
            return None

        dit_files = sorted(base.glob("diffusion_pytorch_model*.safetensors"))
        index = base / "diffusion_pytorch_model.safetensors.index.json"
        if index.exists():
            dit: tuple[Path, ...] = (index,)
        elif dit_files:
            dit = tuple(dit_files)
        else:
            dit = ()
            missing.append(f"DiT weights: {base}/diffusion_pytorch_model-0000N-of-0000M.safetensors (+ its index json)")
        config = base / "config.json"
        if not config.exists():
            missing.append(f"DiT config: {config}")
        vae = first(base, VAE_NAMES, "VAE")
        clip = first(base, CLIP_NAMES, "CLIP vision tower")
        wav = next((d for d in dict.fromkeys(wav_dirs) if d.is_dir()), wav_dirs[0])
        if not wav.is_dir():
            places = " or ".join(str(d) for d in dict.fromkeys(wav_dirs))
            missing.append(f"wav2vec2 speech model: folder {places} (config.json, model.safetensors or pytorch_model.bin)")
        adapter = next((a for a in adapters if a.exists()), None)
        t5 = next((base / n for n in T5_NAMES if (base / n).exists()), None)
        prompts = next((d / PROMPT_FILE for d in dict.fromkeys((root, base)) if (d / PROMPT_FILE).exists()), None)
        if t5 is None and prompts is None:
            missing.append(
                f"text conditioning: {base / T5_NAMES[0]} with {base / 'google/umt5-xxl'} (the umT5 encoder), "
                f"or {root / PROMPT_FILE} (precompute it with `python -m model.text precompute`)"
            )
        if missing and unknown is not None:
            raise UnknownWeightsError(
                f"weights in {root} are incomplete or of an unknown kind; missing for the InfiniteTalk layout:\n  - "
                + "\n  - ".join(missing) + f"\n{unknown}"
            )
        if missing:
            raise MissingWeightsError(
                f"{KIND_LABELS[kind]} weights in {root} are incomplete; missing:\n  - " + "\n  - ".join(missing)
            )
        if adapter is None and kind == INFINITETALK:
            log.warning("no InfiniteTalk adapter file (%s) found: the DiT files must already contain it", ADAPTER_PATHS[0])
        log.info("weights in %s: %s layout", root, KIND_LABELS[kind])
        return cls(dit, config, vae, clip, wav, adapter, base if t5 else None, prompts, kind=kind)

    @classmethod
    def from_json(cls, path: str | Path) -> ModelFiles:
        """Explicit paths: {"dit": [...], "dit_config"?, "vae", "clip", "wav2vec2", "adapter"?,
        "text_encoder"?, "prompt_embeddings"?, "loras"?: [[path, strength], ...], "kind"?: "infinitetalk" or
        "flashtalk"} (paths relative to the file). Without "dit_config" the DiT's sizes are read from its
        weights, which is how single-file checkpoints (ComfyUI's) come."""
        path = Path(path)
        d = json.loads(path.read_text())
        rel = lambda p: (path.parent / p) if p is not None else None  # noqa: E731
        required = ("dit", "vae", "clip", "wav2vec2")
        absent = [k for k in required if k not in d]
        if absent:
            raise MissingWeightsError(f"{path}: missing entries {absent}")
        files = cls(
            tuple(rel(p) for p in (d["dit"] if isinstance(d["dit"], list) else [d["dit"]])),
            rel(d.get("dit_config")), rel(d["vae"]), rel(d["clip"]), rel(d["wav2vec2"]), rel(d.get("adapter")),
            rel(d.get("text_encoder")), rel(d.get("prompt_embeddings")),
            tuple((rel(p), float(s)) for p, s in d.get("loras", [])),
            kind=d.get("kind", INFINITETALK),
        )
        if files.kind not in KINDS:
            raise ValueError(f"{path}: kind must be one of {', '.join(KINDS)}, got {files.kind!r}")
        gone = [str(p) for p in files.all_paths() if not p.exists()]
        if gone:
            raise MissingWeightsError(f"{path} names files that do not exist: {gone}")
        return files

    def all_paths(self) -> list[Path]:
        out = [*self.dit, self.vae, self.clip, self.wav2vec2]
        out += [p for p in (self.dit_config, self.adapter, self.text_encoder, self.prompt_embeddings) if p is not None]
        return out + [p for p, _ in self.loras]

    def with_loras(self, loras: list[tuple[Path, float]]) -> ModelFiles:
        return dataclasses.replace(self, loras=tuple(loras))


@dataclass
class InfiniteTalkBundle:
    """A loaded pipeline plus its speech model (the live backend needs both).

    on_close: what `close` releases beyond this process (the follower ranks of a multi-process DiT).
    """

    pipe: InfiniteTalkPipeline
    wav2vec2: torch.nn.Module
    files: ModelFiles | None = None
    description: str = ""
    on_close: Callable[[], None] | None = None

    def close(self) -> None:
        """Done with the model: release what it holds outside this process (once; later calls do nothing)."""
        release, self.on_close = self.on_close, None
        if release is not None:
            release()


def _sidecar(folder: Path, name: str) -> dict | None:
    p = folder / name
    return json.loads(p.read_text()) if p.exists() else None


def dit_config_of(files: ModelFiles, sources: list[Path]) -> DiTConfig:
    """The DiT's config.json, or (none given) its sizes read from the weight shapes."""
    if files.dit_config is not None:
        return DiTConfig.from_reference_kwargs(json.loads(files.dit_config.read_text()))
    try:
        kwargs = infer_dit_config(read_shapes(sources))
    except WeightLoadError as exc:
        raise WeightLoadError(f"{exc}. Name the DiT's config.json as \"dit_config\" in the weights config.") from None
    log.info("no DiT config.json given: sizes read from the weights: %s", kwargs)
    return DiTConfig.from_reference_kwargs(kwargs)


def load_dit(files: ModelFiles, *, device: torch.device, dtype: torch.dtype,
             speed: SpeedOptions | None = None) -> InfiniteTalkDiT:
    """Just the DiT (base + adapter + LoRAs), fp8 and compiled as `speed` says; e.g. for the follower ranks
    of a sequence-parallel server."""
    sources = [*files.dit, *([files.adapter] if files.adapter else [])]
    with torch.device("meta"):
        dit = InfiniteTalkDiT(dit_config_of(files, sources))
    prepare_dit_for_loading(dit, speed or SpeedOptions())
    dit.eval().requires_grad_(False)
    loras = [LoraSpec(p, s) for p, s in files.loras]
    report = load_module(dit, sources, device=device, dtype=dtype, loras=loras)
    log.info("DiT loaded: %d tensors, %.1f GB in %.1f s", report.loaded, report.bytes_read / 1e9, report.seconds)
    finish_loaded_dit(dit, speed or SpeedOptions())
    return dit


def load_vae(files: ModelFiles, device: str | torch.device = "cpu") -> WanVAE:
    """Just the VAE (fp32), with its sidecar config when the folder has one."""
    vae_kwargs = _sidecar(files.vae.parent, VAE_CONFIG)
    return load_wan_vae(files.vae, VAEConfig.from_reference_kwargs(vae_kwargs) if vae_kwargs else None,
                        device=device)


def load_bundle(
    files: ModelFiles,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    speed: SpeedOptions | None = None,
    parallel: ParallelPlan | None = None,
) -> InfiniteTalkBundle:
    """Load every network to `device` (DiT in `dtype`; VAE and wav2vec2 in fp32; CLIP in fp16 on CUDA).

    speed: fp8 block linears (chosen before loading), compiled blocks, CUDA graphs (see SpeedOptions).
    parallel: rank 0 of a multi-process model: the DiT (and with vae_split the VAE) runs split over the
    plan's processes, which run `follow`; `close()` on the bundle releases them.
    """
    speed = speed or SpeedOptions()
    device = torch.device(device)
    check_wav2vec2_folder(files.wav2vec2)
    dit = load_dit(files, device=device, dtype=dtype, speed=speed)
    cfg = dit.cfg

    vae = load_vae(files, device)
    clip_kwargs = _sidecar(files.clip.parent, CLIP_CONFIG)
    clip_dtype = torch.float16 if device.type == "cuda" else torch.float32
    clip = load_clip_vision(files.clip, CLIPVisionConfig.from_reference_kwargs(clip_kwargs) if clip_kwargs else None,
                            device=device, dtype=clip_dtype)
    wav2vec2 = load_wav2vec2(files.wav2vec2, device=device)
    text = _text_conditioning(files, cfg.text_dim, device, prompt, negative_prompt)
    fp8 = f", fp8 linears ({speed.fp8})" if speed.fp8 else ""
    desc = f"{KIND_LABELS[files.kind]}: DiT {cfg.num_layers}x{cfg.dim} ({dtype}{fp8}) on {device}"
    if parallel is None:
        pipe = InfiniteTalkPipeline(dit, vae, clip, text, device)
        apply_speed_options(pipe, speed)
        return InfiniteTalkBundle(pipe, wav2vec2, files, desc)
    leader = lead(dit, vae, parallel)
    pipe = InfiniteTalkPipeline(dit, leader.vae, clip, text, device, dit_forward=leader.dit_forward)
    apply_speed_options(pipe, dataclasses.replace(speed, cuda_graphs=False))  # graphs replay one process only
    return InfiniteTalkBundle(pipe, wav2vec2, files, f"{desc}, {parallel.describe()}", on_close=leader.stop)


def _text_conditioning(files: ModelFiles, text_dim: int, device: torch.device, prompt: str | None,
                       negative: str | None) -> TextConditioning:
    if files.text_encoder is not None and (prompt is not None or files.prompt_embeddings is None):
        encoder = UMT5TextEncoder.from_folder(files.text_encoder, device=device)
        p = prompt or (FLASHTALK_PROMPT if files.kind == FLASHTALK else "a person is talking")
        neg = negative or DEFAULT_NEGATIVE_PROMPT
        pe, ne = encoder.encode([p, neg])
        del encoder
        return TextConditioning(pe.float(), ne.float())
    if files.prompt_embeddings is None:
        raise MissingWeightsError("no text conditioning: give prompt_embeddings.safetensors or the umT5 encoder")
    if prompt is not None:
        log.warning("prompt %r ignored: no text encoder, using %s", prompt, files.prompt_embeddings)
    emb = load_prompt_embeddings(files.prompt_embeddings, text_dim=text_dim)
    return TextConditioning(emb.prompt, emb.negative)
