"""Sequence parallelism of the DiT: two gloo processes on CPU give the single-process output.

The golden tiny weights are used (sizes from its config); token counts are odd so the last rank
holds padding, and chunks start and end inside latent frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from model.dit import DiTConfig
from model.dit.attention import AudioCrossAttention
from model.dit.parallel import SequenceShard
from model.dit.parallel_check import CASES, build_model, case_inputs, spawn

WORLD = 2


def _shard(length: int, world: int, rank: int) -> SequenceShard:
    return SequenceShard(SimpleNamespace(world=world, rank=rank, group=None), length)  # type: ignore[arg-type]


def test_shards_cover_the_sequence_once_with_padding_at_the_end() -> None:
    x = torch.arange(10.0)[None, :, None]  # [1, 10, 1]
    chunks = [_shard(10, 4, r) for r in range(4)]
    assert [c.local for c in chunks] == [3] * 4 and chunks[0].padded == 12
    assert [c.valid for c in chunks] == [3, 3, 3, 1]
    joined = torch.cat([c.scatter(x) for c in chunks], dim=1)[0, :, 0]
    assert torch.equal(joined[:10], torch.arange(10.0)) and torch.equal(joined[10:], torch.zeros(2))
    rope = torch.polar(torch.ones(10, 2), torch.rand(10, 2))
    tail = chunks[3].scatter(rope, dim=0, fill=1.0)
    assert torch.equal(tail[1:], torch.ones(2, 2, dtype=rope.dtype))  # identity rotations on padding


@pytest.mark.parametrize("chunk", [5, 7, 12])
def test_audio_cross_attention_on_chunks_equals_the_whole_sequence(chunk: int) -> None:
    torch.manual_seed(0)
    frames, per_frame, dim = 3, 8, 32
    attn = AudioCrossAttention(dim, 16, num_heads=4).eval()
    x = torch.randn(2, frames * per_frame, dim)
    audio = torch.randn(2, frames, 6, 16)
    q_rope = torch.polar(torch.ones(2, 1, frames * per_frame, 4), torch.rand(2, 1, frames * per_frame, 4))
    k_rope = torch.polar(torch.ones(6, 4), torch.rand(6, 4))
    with torch.no_grad():
        whole = attn(x, audio, q_rope, k_rope)
        parts = [
            attn(x[:, s : s + chunk], audio, q_rope[:, :, s : s + chunk], k_rope, first_token=s, frame_tokens=per_frame)
            for s in range(0, frames * per_frame, chunk)
        ]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-6, rtol=1e-6)


def test_two_gloo_processes_match_the_single_process_forward(golden_dir: Path, tmp_path: Path) -> None:
    weights, config = golden_dir / "dit_weights.safetensors", golden_dir / "dit_config.json"
    model = build_model(str(weights), str(config))
    assert model.cfg.num_heads % WORLD == 0
    spawn(WORLD, str(tmp_path), str(weights), str(config), start_method="fork", timeout_s=120)
    for case in CASES:
        tokens = case.latent[0] * (case.latent[1] // 2) * (case.latent[2] // 2)
        assert tokens % WORLD, "the case must exercise the padding path"
        with torch.no_grad():
            expected = model(**case_inputs(model.cfg, case))
        for rank in range(WORLD):
            stats = json.loads((tmp_path / f"rank{rank}.json").read_text())[case.name]
            assert stats["local_tokens"] < tokens and stats["collectives"] > 0  # really split across ranks
            got = torch.load(tmp_path / f"rank{rank}.pt")[case.name]
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_sequence_parallel_refuses_head_counts_the_world_does_not_divide() -> None:
    from model.dit.parallel import SequenceParallel

    sp = SequenceParallel.__new__(SequenceParallel)  # no process group needed for the check itself
    sp.world, sp.rank, sp.group = 3, 0, None
    with pytest.raises(ValueError, match="does not divide"):
        sp.check_heads(DiTConfig.tiny().num_heads)
