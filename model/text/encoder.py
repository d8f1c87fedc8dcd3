"""umt5-xxl text encoder (`transformers.UMT5EncoderModel`) from local files, used like the reference.

What a user provides (one folder, `--encoder DIR`):
    weights    one of models_t5_umt5-xxl-enc-bf16.pth (Wan release), umt5_xxl_fp16.safetensors /
               umt5_xxl_fp8_e4m3fn_scaled.safetensors (ComfyUI), or any single *.safetensors / *.pth
               umT5 encoder file (reference or HF key names); or pass the file explicitly.
    tokenizer  the google/umt5-xxl tokenizer: tokenizer.json (+ tokenizer_config.json,
               special_tokens_map.json; spiece.model alone needs the `sentencepiece` package),
               in DIR itself or in DIR/google/umt5-xxl (the Wan release layout).
Nothing is downloaded. The reference encodes with padding to text_len = 512, attention mask on,
and keeps each output's first `real token count` rows (`[u[:v] for u, v in zip(context, seq_lens)]`).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5EncoderModel

from .t5_keys import infer_umt5_config, to_hf_umt5_encoder

log = logging.getLogger(__name__)

TEXT_LEN = 512
KNOWN_WEIGHT_NAMES = (
    "models_t5_umt5-xxl-enc-bf16.pth",
    "umt5_xxl_fp16.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "umt5-xxl-enc-bf16.safetensors",
    "model.safetensors",
)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
TOKENIZER_SUBDIR = Path("google") / "umt5-xxl"


class TextEncoderError(RuntimeError):
    """The encoder folder lacks weights or a tokenizer, or the weights do not load."""


def clean_prompt(text: str) -> str:
    """The reference's 'whitespace' cleaning: fix text (ftfy when installed), unescape HTML twice,
    collapse whitespace runs to one space, strip."""
    try:
        import ftfy  # optional, as in the reference

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def find_weights(folder: Path) -> Path:
    """The umT5 weight file in `folder` (known names first, else the only *.safetensors / *.pth)."""
    for name in KNOWN_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".pth", ".pt", ".bin"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise TextEncoderError(
            f"no umT5 weights in {folder}: expected one of {', '.join(KNOWN_WEIGHT_NAMES[:3])} "
            "or a single .safetensors/.pth file")
    raise TextEncoderError(f"several weight files in {folder} ({[p.name for p in candidates]}); pass --weights FILE")


def find_tokenizer(folder: Path) -> Path:
    """`folder` or folder/google/umt5-xxl, whichever holds tokenizer.json or spiece.model."""
    for cand in (folder, folder / TOKENIZER_SUBDIR):
        if any((cand / f).is_file() for f in TOKENIZER_FILES):
            return cand
    raise TextEncoderError(
        f"no umT5 tokenizer in {folder} or {folder / TOKENIZER_SUBDIR}: copy the google/umt5-xxl tokenizer "
        f"files there ({', '.join(TOKENIZER_FILES)}, tokenizer_config.json, special_tokens_map.json)")


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors or a torch pickle (.pth/.pt/.bin; tensors only, memory-mapped)."""
    if not path.is_file():
        raise TextEncoderError(f"umT5 weights {path} not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise TextEncoderError(f"{path} does not hold a state dict")
    return sd


def build_umt5_encoder(state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16,
                       device: str | torch.device = "cpu", attn_implementation: str = "eager") -> UMT5EncoderModel:
    """UMT5EncoderModel with sizes inferred from the weights, loaded strictly (no random init)."""
    sd = to_hf_umt5_encoder(state_dict, dtype)
    config = infer_umt5_config(sd)
    with torch.device("meta"):
        model = UMT5EncoderModel._from_config(config, attn_implementation=attn_implementation)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise TextEncoderError(f"umT5 weights do not fit the inferred config ({config.num_layers} layers, "
                               f"d_model {config.d_model}): {e}") from e
    return model.to(device=device).eval().requires_grad_(False)


class UMT5TextEncoder:
    """Prompt -> [tokens, d_model] embeddings, as the reference's T5EncoderModel computes them."""

    def __init__(self, model: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, text_len: int = TEXT_LEN) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len

    @classmethod
    def from_folder(cls, folder: str | Path, weights: str | Path | None = None, tokenizer: str | Path | None = None,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                    text_len: int = TEXT_LEN, attn_implementation: str = "eager") -> UMT5TextEncoder:
        """Load weights + tokenizer from local files (see the module doc for the folder layout)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise TextEncoderError(f"text encoder folder {folder} does not exist")
        wpath = Path(weights) if weights else find_weights(folder)
        tpath = Path(tokenizer) if tokenizer else find_tokenizer(folder)
        log.info("loading umT5 weights %s, tokenizer %s", wpath, tpath)
        model = build_umt5_encoder(load_state_dict_file(wpath), dtype, device, attn_implementation)
        try:
            tok = AutoTokenizer.from_pretrained(str(tpath), local_files_only=True)
        except (OSError, ValueError, ImportError) as e:
            raise TextEncoderError(f"could not load the tokenizer in {tpath}: {e}") from e
        return cls(model, tok, text_len)

    @property
    def text_dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One [real_tokens, d_model] tensor per text (EOS included, padding removed)."""
        batch = self.tokenizer([clean_prompt(t) for t in texts], padding="max_length", truncation=True,
                               max_length=self.text_len, add_special_tokens=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        lengths = mask.gt(0).sum(dim=1).tolist()
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, text_len, D]
        return [h[:n] for h, n in zip(hidden, lengths, strict=True)]
