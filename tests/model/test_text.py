"""Text conditioning: embedding files, umT5 weight layouts, the encoder wrapper and the precompute CLI."""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from model.text import (
    DEFAULT_NEGATIVE_PROMPT,
    PromptEmbeddings,
    PromptEmbeddingsError,
    T5KeyError,
    TextEncoderError,
    UMT5TextEncoder,
    build_umt5_encoder,
    clean_prompt,
    hf_to_reference,
    load_prompt_embeddings,
    resolve_negative_prompt,
    save_prompt_embeddings,
    to_hf_umt5_encoder,
)
from model.text.cli import main as cli_main

VOCAB, DIM, INNER, FFN, HEADS, LAYERS, BUCKETS = 64, 24, 32, 40, 4, 2, 32
WORDS = ["a", "person", "is", "talking", "hello", "world", "static", "blurred", "low", "quality", "the"]


def _reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random umT5 encoder weights under the reference (`wan/modules/t5.py`) names."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g)

    sd = {"token_embedding.weight": rnd(VOCAB, DIM), "norm.weight": 1 + rnd(DIM, scale=0.1)}
    for i in range(LAYERS):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": 1 + rnd(DIM, scale=0.1), p + "norm2.weight": 1 + rnd(DIM, scale=0.1),
               p + "attn.q.weight": rnd(INNER, DIM, scale=DIM**-0.5), p + "attn.k.weight": rnd(INNER, DIM, scale=DIM**-0.5),
               p + "attn.v.weight": rnd(INNER, DIM, scale=DIM**-0.5), p + "attn.o.weight": rnd(DIM, INNER, scale=INNER**-0.5),
               p + "pos_embedding.embedding.weight": rnd(BUCKETS, HEADS),
               p + "ffn.gate.0.weight": rnd(FFN, DIM, scale=DIM**-0.5), p + "ffn.fc1.weight": rnd(FFN, DIM, scale=DIM**-0.5),
               p + "ffn.fc2.weight": rnd(DIM, FFN, scale=FFN**-0.5)}
    return sd


def _bucket(rel: torch.Tensor, num_buckets: int = BUCKETS, max_dist: int = 128) -> torch.Tensor:
    # Bidirectional T5 bucketing: half the buckets per direction, exact below max_exact, log above.
    half = num_buckets // 2
    max_exact = half // 2
    n = rel.abs()
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_dist / max_exact) * (half - max_exact)).long()
    return (rel > 0).long() * half + torch.where(n < max_exact, n, large.clamp(max=half - 1))


def _rms(x, w):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def _reference_semantics(sd, ids, mask):
    """The reference encoder as described (pre-RMS norm, unscaled attention, per-layer bias, gated GELU)."""
    x = sd["token_embedding.weight"][ids]
    b, n, _ = x.shape
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    masked = (1 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    def heads(t):
        return t.view(b, n, HEADS, -1).transpose(1, 2)

    for i in range(LAYERS):
        p = f"blocks.{i}."
        h = _rms(x, sd[p + "norm1.weight"])
        q, k, v = (heads(h @ sd[p + f"attn.{c}.weight"].T) for c in "qkv")
        bias = sd[p + "pos_embedding.embedding.weight"][_bucket(rel)].permute(2, 0, 1)[None]
        att = torch.softmax(q @ k.transpose(-1, -2) + bias + masked, dim=-1)
        x = x + (att @ v).transpose(1, 2).reshape(b, n, -1) @ sd[p + "attn.o.weight"].T
        h = _rms(x, sd[p + "norm2.weight"])
        gated = (h @ sd[p + "ffn.fc1.weight"].T) * F.gelu(h @ sd[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + gated @ sd[p + "ffn.fc2.weight"].T
    return _rms(x, sd["norm.weight"])


def _ids_and_mask(seed=1, length=20):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length // 2:] = 0
    return ids, mask


def _run(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def _make_tokenizer(folder: Path) -> None:
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -2.0) for w in WORDS]
    vocab += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz,&\u2581"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(folder))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny encoder folder in the Wan release layout: .pth weights + google/umt5-xxl tokenizer."""
    d = tmp_path_factory.mktemp("umt5")
    torch.save(_reference_state_dict(), d / "models_t5_umt5-xxl-enc-bf16.pth")
    tok_dir = d / "google" / "umt5-xxl"
    tok_dir.mkdir(parents=True)
    _make_tokenizer(tok_dir)
    return d


# ---- key mapping -----------------------------------------------------------------------------------


def test_reference_layout_converts_to_an_equivalent_hf_encoder():
    sd = _reference_state_dict()
    ids, mask = _ids_and_mask(length=20)  # 20 > 8 tokens: exercises the log-spaced buckets too
    got = _run(build_umt5_encoder(sd, dtype=torch.float32), ids, mask)
    want = _reference_semantics(sd, ids, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_hf_names_load_the_same_weights_as_reference_names():
    sd = _reference_state_dict()
    hf = to_hf_umt5_encoder(sd)
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in hf
    assert torch.equal(hf["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"], sd["blocks.0.ffn.gate.0.weight"])
    assert hf_to_reference(hf).keys() == sd.keys()
    comfy_style = {k: v for k, v in hf.items() if k != "encoder.embed_tokens.weight"}  # only shared.weight
    ids, mask = _ids_and_mask()
    a = _run(build_umt5_encoder(sd, dtype=torch.float32), ids, mask)
    b = _run(build_umt5_encoder(comfy_style, dtype=torch.float32), ids, mask)
    assert torch.equal(a, b)


def test_wrapper_prefixes_and_decoder_keys_are_ignored():
    hf = to_hf_umt5_encoder(_reference_state_dict())
    wrapped = {"model." + k: v for k, v in hf.items()}
    wrapped["model.decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(1)
    out = to_hf_umt5_encoder(wrapped)
    assert out.keys() == hf.keys()


def test_scaled_fp8_weights_are_dequantized():
    hf = to_hf_umt5_encoder(_reference_state_dict())
    key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    scale = torch.tensor(0.05)
    packed = dict(hf)
    packed[key] = (hf[key] / scale).to(torch.float8_e4m3fn)
    packed[key[: -len("weight")] + "scale_weight"] = scale
    packed["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    out = to_hf_umt5_encoder(packed, torch.float32)
    assert not any(k.endswith("scale_weight") or k == "scaled_fp8" for k in out)
    assert torch.equal(out[key], packed[key].float() * scale)
    torch.testing.assert_close(out[key], hf[key], atol=0.02, rtol=0.07)  # fp8 e4m3 precision


def test_plain_t5_and_unknown_layouts_are_rejected():
    sd = _reference_state_dict()
    sd["pos_embedding.embedding.weight"] = sd.pop("blocks.0.pos_embedding.embedding.weight")
    with pytest.raises(T5KeyError, match="shared relative position bias"):
        to_hf_umt5_encoder(sd)
    with pytest.raises(T5KeyError, match="not an umT5"):
        to_hf_umt5_encoder({"foo.weight": torch.zeros(2)})


def test_missing_weight_is_named():
    sd = _reference_state_dict()
    del sd["blocks.1.attn.v.weight"]
    with pytest.raises(TextEncoderError, match=r"block\.1\.layer\.0\.SelfAttention\.v\.weight"):
        build_umt5_encoder(sd, dtype=torch.float32)


# ---- encoder wrapper and CLI ------------------------------------------------------------------------


def test_encoder_trims_to_real_tokens_and_ignores_padding(encoder_dir):
    enc = UMT5TextEncoder.from_folder(encoder_dir, dtype=torch.float32, text_len=32)
    texts = ["a person is talking", "  hello &amp;  world "]
    out = enc.encode(texts)
    sd = _reference_state_dict()
    for text, emb in zip(texts, out, strict=True):
        ids = enc.tokenizer(clean_prompt(text), return_tensors="pt")["input_ids"]
        assert ids[0, -1].item() == enc.tokenizer.eos_token_id
        assert emb.shape == (ids.shape[1], DIM)
        want = _reference_semantics(sd, ids, torch.ones_like(ids))[0]
        torch.testing.assert_close(emb, want, atol=1e-5, rtol=1e-5)


def test_clean_prompt_unescapes_and_collapses_whitespace():
    assert clean_prompt("  a\n\tperson &amp;amp; world  ") == "a person & world"


def test_missing_tokenizer_and_weights_are_reported(tmp_path):
    with pytest.raises(TextEncoderError, match="no umT5 weights"):
        UMT5TextEncoder.from_folder(tmp_path)
    torch.save(_reference_state_dict(), tmp_path / "umt5.pth")
    with pytest.raises(TextEncoderError, match="tokenizer"):
        UMT5TextEncoder.from_folder(tmp_path)


def test_precompute_cli_writes_loadable_embeddings(encoder_dir, tmp_path):
    out = tmp_path / "prompt.safetensors"
    rc = cli_main(["precompute", "--encoder", str(encoder_dir), "--prompt", "a person is talking",
                   "--negative", "", "-o", str(out), "--dtype", "float32", "--text-len", "32", "--device", "cpu"])
    assert rc == 0
    emb = load_prompt_embeddings(out, text_dim=DIM)
    assert emb.metadata["negative_text"] == DEFAULT_NEGATIVE_PROMPT
    enc = UMT5TextEncoder.from_folder(encoder_dir, dtype=torch.float32, text_len=32)
    want_prompt, want_negative = enc.encode(["a person is talking", DEFAULT_NEGATIVE_PROMPT])
    torch.testing.assert_close(emb.prompt, want_prompt, atol=0, rtol=0)
    # the default negative is longer than text_len tokens here, so it is truncated to text_len
    torch.testing.assert_close(emb.negative, want_negative, atol=0, rtol=0)


def test_module_entry_point_runs(encoder_dir, tmp_path, monkeypatch):
    out = tmp_path / "p.safetensors"
    monkeypatch.setattr(sys, "argv", ["model.text", "precompute", "--encoder", str(encoder_dir),
                                      "--prompt", "hello world", "--negative", "static", "-o", str(out),
                                      "--dtype", "float32", "--text-len", "16", "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("model.text", run_name="__main__")
    assert exit_info.value.code == 0
    emb = load_prompt_embeddings(out)
    assert emb.prompt.shape == (3, DIM) and emb.negative.shape == (2, DIM)  # 2 words + EOS; 1 word + EOS


# ---- embedding files --------------------------------------------------------------------------------


def test_embeddings_round_trip(tmp_path):
    p, n = torch.randn(7, 16), torch.randn(3, 16)
    save_prompt_embeddings(tmp_path / "e.safetensors", p, n, {"prompt_text": "x"})
    emb = load_prompt_embeddings(tmp_path / "e.safetensors")
    assert torch.equal(emb.prompt, p) and torch.equal(emb.negative, n) and emb.metadata["prompt_text"] == "x"
    assert emb.text_dim == 16


def test_embedding_file_errors_name_the_problem(tmp_path):
    with pytest.raises(PromptEmbeddingsError, match="precompute"):
        load_prompt_embeddings(tmp_path / "none.safetensors")
    save_file({"prompt": torch.zeros(2, 4)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(PromptEmbeddingsError, match="negative"):
        load_prompt_embeddings(tmp_path / "half.safetensors")
    save_prompt_embeddings(tmp_path / "e.safetensors", torch.zeros(2, 4), torch.zeros(1, 4))
    with pytest.raises(PromptEmbeddingsError, match="text_dim 4096"):
        load_prompt_embeddings(tmp_path / "e.safetensors", text_dim=4096)
    with pytest.raises(PromptEmbeddingsError, match="widths differ"):
        PromptEmbeddings(torch.zeros(2, 4), torch.zeros(2, 5))


def test_empty_negative_prompt_means_the_default():
    assert resolve_negative_prompt("") == DEFAULT_NEGATIVE_PROMPT
    assert resolve_negative_prompt(None) == DEFAULT_NEGATIVE_PROMPT
    assert resolve_negative_prompt("blurry") == "blurry"
