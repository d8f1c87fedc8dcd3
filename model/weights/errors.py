"""One exception type for every way a weight file can fail to load, and the hints that go with it.

A user who points the server at the wrong file should get ONE message that names the file(s), the first
few offending keys and a sentence saying what to do, not a 3000-line `load_state_dict` traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_SHOW = 5  # offending keys shown per category


class WeightLoadError(ValueError):
    """A checkpoint cannot fill the target module (missing/unexpected/wrong-shaped keys, corrupt file...).

    Attributes keep the full lists so callers (CLI, tests) can inspect them; `str(err)` is the short,
    human version.
    """

    def __init__(
        self,
        message: str,
        *,
        files: Sequence[str] = (),
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
        hint: str = "",
    ) -> None:
        self.files = tuple(files)
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)
        self.hint = hint
        super().__init__(message)


def _first(keys: Sequence[str], n: int = _SHOW) -> str:
    shown = ", ".join(keys[:n])
    more = len(keys) - n
    return shown + (f" (+{more} more)" if more > 0 else "")


def format_files(files: Iterable[str]) -> str:
    files = list(files)
    if len(files) <= 3:
        return ", ".join(files)
    return ", ".join(files[:3]) + f" (+{len(files) - 3} more files)"


def key_mismatch_error(
    files: Sequence[str],
    missing: Sequence[str],
    unexpected: Sequence[str],
    mismatched: Sequence[str],
    hint: str,
) -> WeightLoadError:
    """Build the single error for a checkpoint whose keys do not fit the module."""
    lines = [
        f"cannot load weights from {format_files(files)}: {len(missing)} missing, "
        f"{len(unexpected)} unexpected, {len(mismatched)} wrong-shaped keys"
    ]
    if missing:
        lines.append(f"  missing: {_first(list(missing))}")
    if unexpected:
        lines.append(f"  unexpected: {_first(list(unexpected))}")
    if mismatched:
        lines.append(f"  wrong shape: {_first(list(mismatched), 3)}")
    if hint:
        lines.append(f"  hint: {hint}")
    return WeightLoadError(
        "\n".join(lines),
        files=files,
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
        hint=hint,
    )


# ------------------------------------------------------------------------------------------------
# Hints: recognise the usual mix-ups from the key families alone.

_AUDIO = re.compile(r"(^|\.)(audio_proj|multitalk_audio_proj)\.|\.audio_cross_attn\.|\.norm_x\.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_WAN_BASE = ("patch_embedding.", "head.head.", "text_embedding.", "time_embedding.")


def _is_audio(key: str) -> bool:
    return bool(_AUDIO.search(key))


def _block_count(keys: Iterable[str]) -> int:
    ids = {int(m.group(1)) for k in keys if (m := _BLOCK.match(k))}
    return max(ids) + 1 if ids else 0


def explain_key_mismatch(
    missing: Sequence[str],
    unexpected: Sequence[str],
    mismatched: Sequence[str],
    provided: Iterable[str],
    expected: Iterable[str],
) -> str:
    """Say in one sentence what the user most likely did wrong and what to do instead."""
    provided = list(provided)
    expected = list(expected)
    missing_audio = [k for k in missing if _is_audio(k)]
    missing_other = [k for k in missing if not _is_audio(k)]
    has_audio = any(_is_audio(k) for k in provided)
    has_base = any(k.startswith(_WAN_BASE) for k in provided)

    if missing_audio and not missing_other and not has_audio:
        return (
            f"missing {missing_audio[0]}: this looks like a plain Wan2.1 I2V checkpoint; add the "
            "InfiniteTalk adapter file (InfiniteTalk/single/infinitetalk.safetensors, or multi/ for two "
            "speakers) with --infinitetalk"
        )
    if missing_other and has_audio and not has_base:
        return (
            "these files hold only the InfiniteTalk audio adapter (audio_proj.*, blocks.N.audio_cross_attn.*, "
            "blocks.N.norm_x.*); also pass the Wan2.1-I2V-14B base weights (the 7 "
            "diffusion_pytorch_model-0000N-of-00007.safetensors shards with their index.json, or a ComfyUI "
            "single file such as wan2.1_i2v_480p_14B_fp16.safetensors)"
        )
    n_have, n_want = _block_count(provided), _block_count(expected)
    if n_have and n_want and n_have != n_want:
        return (
            f"the checkpoint has {n_have} transformer blocks but the model was built with {n_want}: wrong model "
            "size (e.g. 1.3B vs 14B) or an incomplete shard set; build the model from "
            "infer_dit_config(checkpoint shapes)"
        )
    no_img = not any(".k_img." in k or k.startswith("img_emb.") for k in provided)
    if no_img and has_base and any(".k_img." in k or k.startswith("img_emb.") for k in missing):
        return (
            "the checkpoint has no image cross-attention (k_img/v_img, img_emb): it is a Wan2.1 T2V model; "
            "InfiniteTalk needs the I2V-14B base (Wan2.1-I2V-14B-480P)"
        )
    if mismatched:
        return (
            "tensor shapes differ from the model: the model was built with other dimensions than the checkpoint "
            "(e.g. 1.3B vs 14B, or a different audio adapter size); build it from infer_dit_config(...)"
        )
    if any(k.startswith("vace_") for k in unexpected):
        return "the checkpoint contains VACE blocks (vace_*): it is a VACE model, not the I2V-14B base"
    if unexpected and not missing:
        return (
            "the checkpoint has extra tensors the model does not use; if that is expected (e.g. the CLIP "
            "text tower), pass ignore=(<prefix>,) or strict=False"
        )
    return (
        "check that every file of the model was passed (all shards, the InfiniteTalk adapter) and that they "
        "belong to the same model"
    )
