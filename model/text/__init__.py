"""Text conditioning: prompt embeddings from a file, or a local umt5-xxl encoder that makes them."""

from .embeddings import (
    NEGATIVE_KEY,
    PROMPT_KEY,
    PromptEmbeddings,
    PromptEmbeddingsError,
    load_prompt_embeddings,
    save_prompt_embeddings,
)
from .encoder import TEXT_LEN, TextEncoderError, UMT5TextEncoder, build_umt5_encoder, clean_prompt
from .prompts import DEFAULT_NEGATIVE_PROMPT, WAN_DEFAULT_NEGATIVE_PROMPT_ZH, resolve_negative_prompt
from .t5_keys import (
    BLOCK_KEY_MAP,
    GLOBAL_KEY_MAP,
    T5KeyError,
    detect_layout,
    hf_to_reference,
    infer_umt5_config,
    reference_to_hf,
    to_hf_umt5_encoder,
)

__all__ = [
    "BLOCK_KEY_MAP", "DEFAULT_NEGATIVE_PROMPT", "GLOBAL_KEY_MAP", "NEGATIVE_KEY", "PROMPT_KEY", "PromptEmbeddings",
    "PromptEmbeddingsError", "T5KeyError", "TEXT_LEN", "TextEncoderError", "UMT5TextEncoder",
    "WAN_DEFAULT_NEGATIVE_PROMPT_ZH", "build_umt5_encoder", "clean_prompt", "detect_layout", "hf_to_reference",
    "infer_umt5_config", "load_prompt_embeddings", "reference_to_hf", "resolve_negative_prompt",
    "save_prompt_embeddings", "to_hf_umt5_encoder",
]
