"""Precomputed text conditioning: prompt and negative-prompt embeddings in one safetensors file.

The umt5-xxl encoder is 11 GB and runs once per prompt, so a server can run without it: encode
on any machine that has it (`python -m model.text precompute ...`) and ship the small file.

File layout (safetensors):
    prompt     float [Lp, text_dim]   encoder output for the prompt, trimmed to its real tokens
    negative   float [Ln, text_dim]   the same for the negative prompt
metadata (strings, optional): prompt_text, negative_text, encoder, text_len.
The DiT zero-pads each to its `text_len` (512) itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

log = logging.getLogger(__name__)

PROMPT_KEY = "prompt"
NEGATIVE_KEY = "negative"


class PromptEmbeddingsError(ValueError):
    """A prompt-embedding file is missing, incomplete or has the wrong shapes."""


@dataclass(frozen=True)
class PromptEmbeddings:
    """Text conditioning of one session: prompt [Lp, D] and negative prompt [Ln, D] embeddings."""

    prompt: torch.Tensor
    negative: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, t in ((PROMPT_KEY, self.prompt), (NEGATIVE_KEY, self.negative)):
            if t.ndim != 2 or t.shape[0] < 1:
                raise PromptEmbeddingsError(f"{name} embedding must be [tokens >= 1, text_dim], got {list(t.shape)}")
        if self.prompt.shape[1] != self.negative.shape[1]:
            raise PromptEmbeddingsError(
                f"prompt and negative widths differ: {self.prompt.shape[1]} vs {self.negative.shape[1]}")

    @property
    def text_dim(self) -> int:
        return int(self.prompt.shape[1])

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> PromptEmbeddings:
        return PromptEmbeddings(self.prompt.to(device=device, dtype=dtype),
                                self.negative.to(device=device, dtype=dtype), dict(self.metadata))

    def save(self, path: str | Path) -> None:
        save_prompt_embeddings(path, self.prompt, self.negative, self.metadata)


def save_prompt_embeddings(path: str | Path, prompt: torch.Tensor, negative: torch.Tensor,
                           metadata: dict[str, str] | None = None) -> Path:
    """Write prompt [Lp, D] and negative [Ln, D] (as float32) with string metadata; returns the path."""
    emb = PromptEmbeddings(prompt, negative)  # validates shapes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {PROMPT_KEY: emb.prompt.detach().float().cpu().contiguous(),
               NEGATIVE_KEY: emb.negative.detach().float().cpu().contiguous()}
    save_file(tensors, str(path), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    log.info("saved prompt embeddings %s: prompt %s, negative %s", path, list(prompt.shape), list(negative.shape))
    return path


def load_prompt_embeddings(path: str | Path, text_dim: int | None = None,
                           dtype: torch.dtype = torch.float32) -> PromptEmbeddings:
    """Read a file written by `save_prompt_embeddings` (or any safetensors with the same keys).

    text_dim: if given, the width the DiT expects (4096 for Wan 14B); a mismatch is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptEmbeddingsError(
            f"prompt embeddings {path} not found; make one with "
            f"`python -m model.text precompute --encoder DIR --prompt ... -o {path.name}`")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            missing = [k for k in (PROMPT_KEY, NEGATIVE_KEY) if k not in keys]
            if missing:
                raise PromptEmbeddingsError(
                    f"{path} lacks {missing} (has {sorted(keys)[:6]}); expected keys "
                    f"'{PROMPT_KEY}' and '{NEGATIVE_KEY}' of shape [tokens, text_dim]")
            metadata = dict(f.metadata() or {})
            prompt, negative = f.get_tensor(PROMPT_KEY), f.get_tensor(NEGATIVE_KEY)
    except PromptEmbeddingsError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise PromptEmbeddingsError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        emb = PromptEmbeddings(prompt.to(dtype), negative.to(dtype), metadata)
    except PromptEmbeddingsError as e:
        raise PromptEmbeddingsError(f"{path}: {e}") from e
    if text_dim is not None and emb.text_dim != text_dim:
        raise PromptEmbeddingsError(
            f"{path}: embeddings are {emb.text_dim} wide but the model expects text_dim {text_dim}; "
            "were they made with another text encoder?")
    return emb
