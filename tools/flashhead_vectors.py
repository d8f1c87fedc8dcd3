"""Write SoulX-FlashHead parity vectors by running the reference code itself on tiny random configs.

    PYTHONPATH=. python tools/flashhead_vectors.py --ref /path/to/SoulX-FlashHead --seed 7 --out /tmp/fh_vectors

`--ref` is a checkout of github Soul-AILab/SoulX-FlashHead at commit 12467ce, unchanged. Its module code
runs as is; only what cannot run on a CPU machine without its extras is replaced: xfuser (sequence
parallelism, world size 1), mediapipe (the optional face crop), torchvision's `center_crop` (the same
arithmetic) and `torch.cuda.synchronize` (a no-op). It needs diffusers, einops and loguru importable
(e.g. `pip install --target DIR diffusers einops loguru requests` and PYTHONPATH=DIR); the tests do not.

The reference hard-wires its audio adapter and Wan VAE sizes for the 1.3B model; here the model's
`audio_proj` is the reference's own `AudioProjModel` built with tiny sizes and the Pro VAE the
reference's own `WanVAE_` at width 4, put in place of its loader. Files written (sizes in
`dit_config.json`; README.md of ../shared/golden_flashhead describes the first two):

    dit_config.json, dit_weights.safetensors, dit_case.safetensors   one DiT forward with intermediates
                             (the weights leave out the unused text_embedding/audio_emb, to stay small)
    loop_case.safetensors    two chunks of `FlashHeadPipeline.generate` with a pass-through VAE
    audio_case.safetensors   the stream-mode audio path: 8 s buffer -> `preprocess_audio` -> windows
    wav2vec2/                the tiny random wav2vec2 (transformers folder) it used
    vae.pth, vae_config.json the tiny random Wan VAE
    pro_case.safetensors     `--chunks` chunks of the Pro loop with that VAE and colour correction 1.0
    ltx_vae/                 a tiny random LTX-Video VAE (diffusers folder), loaded by the reference's own
                             `from_pretrained` (the tiny config registered in its config table); its weights
                             are named with the port's `port_to_diffusers` and checked to arrive intact
    ltx_vae_case.safetensors one LTX encode (posterior mean, std, the recorded draw, the sample) and decode
    lite_config.json, lite_dit_weights.safetensors   a tiny Lite DiT (stride 8x32x32, patch 1)
    lite_case.safetensors    `--chunks` chunks of the Lite loop with the LTX VAE and colour correction 1.0; the
                             reference samples the VAE posterior from torch's global generator: every draw recorded
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

SAMPLE_RATE, VIDEO_FPS = 16_000, 25  # the reference's infer_params.yaml
TINY = {"dim": 64, "in_dim": 32, "ffn_dim": 128, "out_dim": 16, "text_dim": 16, "freq_dim": 32, "eps": 1e-6,
        "vae_stride": [4, 8, 8], "patch_size": [1, 2, 2], "num_heads": 2, "num_layers": 2, "has_image_input": False}
TINY_AUDIO = {"blocks": 2, "channels": 64, "intermediate_dim": 16, "context_tokens": 4}
TINY_W2V = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=64,
                conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False,
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=8)
REF = Path(".")
LAT, FRAMES, MOTION_LATENTS = (4, 4), 33, 2  # head_dim 32: the reference's RoPE split needs (head_dim//2)//3 even


def install_stubs(ref: Path) -> None:
    """Stand-ins for the imports a CPU machine lacks; then the reference checkout on sys.path."""
    import diffusers  # noqa: F401  (imported first: it probes for torchvision, which must not find the stand-in)
    import diffusers.configuration_utils  # noqa: F401
    import diffusers.models.modeling_utils  # noqa: F401

    xf = types.ModuleType("xfuser")
    core = types.ModuleType("xfuser.core")
    dist_mod = types.ModuleType("xfuser.core.distributed")
    dist_mod.get_sequence_parallel_rank = lambda: 0
    dist_mod.get_sequence_parallel_world_size = lambda: 1
    dist_mod.get_sp_group = lambda: None
    lca = types.ModuleType("xfuser.core.long_ctx_attention")
    lca.xFuserLongContextAttention = None
    sys.modules.update({"xfuser": xf, "xfuser.core": core, "xfuser.core.distributed": dist_mod,
                        "xfuser.core.long_ctx_attention": lca, "mediapipe": types.ModuleType("mediapipe")})
    tv = types.ModuleType("torchvision")
    tvt = types.ModuleType("torchvision.transforms")
    tvf = types.ModuleType("torchvision.transforms.functional")

    def center_crop(img: torch.Tensor, size) -> torch.Tensor:  # torchvision's arithmetic for a large enough image
        th, tw = size
        h, w = img.shape[-2:]
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        return img[..., top:top + th, left:left + tw]

    tvf.center_crop = center_crop
    tvt.functional = tvf
    tv.transforms = tvt
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tvt, "torchvision.transforms.functional": tvf})
    torch.cuda.synchronize = lambda *a, **k: None
    sys.path.insert(0, str(ref))
    global REF
    REF = ref


@torch.no_grad()
def random_weights_(module: nn.Module, g: torch.Generator) -> None:
    """Well-scaled random values: norm scales 1 + 0.1N, biases 0.05N, modulations 0.1N, weights N/sqrt(fan_in)."""
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.dim() == 1 and ("norm" in name or leaf == "gamma") and leaf != "bias":
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif leaf == "bias":
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        elif leaf == "modulation":
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, math.prod(p.shape[1:]))))


def build_dit(g: torch.Generator, cfg: dict = TINY, audio: dict = TINY_AUDIO):
    from flash_head.src.modules.flash_head_model import AudioProjModel, WanModelAudioProject

    model = WanModelAudioProject(**cfg)
    a = audio
    model.audio_proj = AudioProjModel(seq_len=5, seq_len_vf=5 + cfg["vae_stride"][0] - 1, blocks=a["blocks"],
                                      channels=a["channels"], intermediate_dim=a["intermediate_dim"],
                                      output_dim=cfg["dim"], context_tokens=a["context_tokens"], norm_output_audio=True)
    random_weights_(model, g)
    return model.eval().float()


def latent_frames() -> int:
    return (FRAMES - 1) // TINY["vae_stride"][0] + 1


def audio_context(g: torch.Generator) -> torch.Tensor:
    return torch.randn(1, FRAMES, 5, TINY_AUDIO["blocks"], TINY_AUDIO["channels"], generator=g)


def dit_case(model, g: torch.Generator) -> dict[str, torch.Tensor]:
    from flash_head.src.pipeline.flash_head_pipeline import timestep_transform

    t, (h, w) = latent_frames(), LAT
    inputs = {"in.x": torch.randn(1, TINY["out_dim"], t, h, w, generator=g),
              "in.t": timestep_transform(torch.tensor([750.0]), shift=5.0),
              "in.context": audio_context(g),
              "in.y": torch.randn(1, TINY["in_dim"] - TINY["out_dim"], t, h, w, generator=g)}
    seen: dict[str, torch.Tensor] = {}
    names = {"patch_embedding": model.patch_embedding, "t": model.time_embedding,
             "time_projection": model.time_projection, "audio_proj": model.audio_proj, "head": model.head,
             **{f"block{i}.out": b for i, b in enumerate(model.blocks)}}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out.detach().clone()))
             for n, m in names.items()]
    with torch.no_grad():
        out = model(x=inputs["in.x"], timestep=inputs["in.t"], context=inputs["in.context"], y=inputs["in.y"])
    for hk in hooks:
        hk.remove()
    return {**inputs, "out": out, **{f"inter.{k}": v for k, v in seen.items()}}


class Recorder(nn.Module):
    """Wraps the DiT: records each call's latent (after the motion paste) and its flow."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, **kw):
        out = self.model(**kw)
        self.calls.append((kw["x"][0].clone(), out[0].clone()))
        return out


def bare_pipeline(dit, vae, seed: int, colour: float, motion_frames: int, cfg: dict = TINY, kind: str = "pro"):
    """A `FlashHeadPipeline` without its loader (which reads the release and compiles), set up as
    `prepare_params` leaves it apart from the reference image, which the caller encodes."""
    from flash_head.src.pipeline.flash_head_pipeline import FlashHeadPipeline, timestep_transform

    pipe = FlashHeadPipeline.__new__(FlashHeadPipeline)
    pipe.param_dtype, pipe.device, pipe.rank, pipe.use_usp, pipe.model_type = torch.float32, "cpu", 0, False, kind
    pipe.model, pipe.vae, pipe.config = Recorder(dit), vae, types.SimpleNamespace(**cfg)
    pipe.num_timesteps, pipe.frame_num, pipe.motion_frames_num = 1000, FRAMES, motion_frames
    pipe.color_correction_strength = colour
    pipe.generator = torch.Generator().manual_seed(seed)
    pipe.timesteps = [timestep_transform(torch.tensor([t]), shift=5.0) for t in (1000, 750, 500, 250, 0.0)]
    return pipe


def draws_of(pipe, steps: int) -> list[torch.Tensor]:
    """The draws the next `generate` will make (its generator replayed from the current state)."""
    g = torch.Generator().set_state(pipe.generator.get_state())
    shape = (pipe.config.out_dim, (FRAMES - 1) // pipe.config.vae_stride[0] + 1, pipe.lat_h, pipe.lat_w)
    return [torch.randn(shape, generator=g) for _ in range(1 + steps)]


def run_chunks(pipe, contexts: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {"timesteps": torch.cat(pipe.timesteps)}
    for c, ctx in enumerate(contexts):
        out[f"in.audio{c}"], out[f"in.motion{c}"] = ctx, pipe.latent_motion_frames.clone()
        draws = draws_of(pipe, 4)
        out[f"noise{c}.init"] = draws[0]
        out.update({f"noise{c}.{k}": d for k, d in enumerate(draws[1:])})
        pipe.model.calls.clear()
        video = pipe.generate(ctx)
        for k, (x, flow) in enumerate(pipe.model.calls):
            out[f"step{c}.{k}"], out[f"flow{c}.{k}"] = x, flow
        out[f"video{c}"] = video
    out["motion_after"] = pipe.latent_motion_frames.clone()
    return out


class PassThroughVAE:
    def encode(self, v):
        return v[0]

    def decode(self, z):
        return z[None]


def loop_case(dit, g: torch.Generator, seed: int) -> dict[str, torch.Tensor]:
    pipe = bare_pipeline(dit, PassThroughVAE(), seed, 0.0, MOTION_LATENTS)
    pipe.lat_h, pipe.lat_w = LAT
    ref = torch.randn(TINY["out_dim"], latent_frames(), *LAT, generator=g)
    pipe.ref_img_latent, pipe.latent_motion_frames = ref, ref[:, :1].clone()
    out = run_chunks(pipe, [audio_context(g) for _ in range(2)])
    out["in.ref_latent"] = ref
    for c in range(2):
        out[f"final{c}"] = out.pop(f"video{c}")  # generate returns the decoded "video" unbatched: the latent
    return out


def tiny_wan_vae(g: torch.Generator, out: Path):
    """The reference's `WanVAE` with its `WanVAE_` at width 4 (random), saved for the port's loader."""
    import flash_head.wan.modules.vae as ref_vae

    cfg = dict(dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=[False, True, True], dropout=0.0)
    inner = ref_vae.WanVAE_(**cfg)
    random_weights_(inner, g)
    torch.save(inner.state_dict(), out / "vae.pth")
    (out / "vae_config.json").write_text(json.dumps({"dim": 4}))
    ref_vae._video_vae = lambda **_: inner  # the reference's loader reads a fixed 1.3B config from vae_path
    return ref_vae.WanVAE(vae_path=str(out / "vae.pth"), dtype=torch.float32, device="cpu")


def pro_case(dit, g: torch.Generator, seed: int, chunks: int, out: Path) -> dict[str, torch.Tensor]:
    vae = tiny_wan_vae(g, out)
    size = (LAT[0] * 8, LAT[1] * 8)
    pipe = bare_pipeline(dit, vae, seed, 1.0, (MOTION_LATENTS - 1) * TINY["vae_stride"][0] + 1)
    pipe.lat_h, pipe.lat_w = LAT
    image = (torch.rand(1, 3, 1, *size, generator=g) * 255).round()
    pipe.cond_image_tensor_dict = {"ref": (image / 255 - 0.5) * 2}
    pipe.ref_img_latent_dict = {"ref": vae.encode(pipe.cond_image_tensor_dict["ref"].repeat(1, 1, FRAMES, 1, 1))}
    pipe.cond_image_dict = {"ref": None}
    pipe.reset_person_name("ref")
    result = run_chunks(pipe, [audio_context(g) for _ in range(chunks)])
    result["in.ref_image"] = pipe.cond_image_tensor_dict["ref"][0, :, 0]
    result["in.ref_latent"] = pipe.ref_img_latent
    return result


class EncoderWithHiddenStates(nn.Module):
    """transformers 5's wav2vec2 encoder ignores the `output_hidden_states` argument the reference passes
    (its pinned 4.57 honoured it): the same tuple as 4.x, (encoder input, each layer's output), from hooks."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.inner = encoder

    def forward(self, hidden_states, attention_mask=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        from transformers.modeling_outputs import BaseModelOutput

        outs: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda _m, _i, o: outs.append(o[0] if isinstance(o, tuple) else o))
                 for layer in self.inner.layers]
        try:
            res = self.inner(hidden_states)
        finally:
            for h in hooks:
                h.remove()
        last = res[0] if isinstance(res, tuple) else res.last_hidden_state
        if self.inner.config.do_stable_layer_norm:
            outs[-1] = last
        return BaseModelOutput(last_hidden_state=last, hidden_states=(hidden_states, *outs))


def audio_case(g: torch.Generator, seed: int, out: Path) -> dict[str, torch.Tensor]:
    """Stream mode's audio path: an 8 s buffer through `preprocess_audio`, then the last window's indices."""
    from flash_head.audio_analysis.wav2vec2 import Wav2Vec2Model
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor
    from transformers import Wav2Vec2Model as HFWav2Vec2

    with contextlib.chdir(REF):  # inference.py reads flash_head/configs/infer_params.yaml from the working dir
        from flash_head.inference import get_audio_embedding

    torch.manual_seed(seed)
    folder = out / "wav2vec2"
    HFWav2Vec2(Wav2Vec2Config(**TINY_W2V)).save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    pipe = types.SimpleNamespace(device="cpu",
                                 audio_encoder=Wav2Vec2Model.from_pretrained(folder, local_files_only=True).eval(),
                                 wav2vec_feature_extractor=Wav2Vec2FeatureExtractor.from_pretrained(folder))
    from flash_head.src.pipeline.flash_head_pipeline import FlashHeadPipeline

    pipe.preprocess_audio = types.MethodType(FlashHeadPipeline.preprocess_audio, pipe)
    pipe.audio_encoder.encoder = EncoderWithHiddenStates(pipe.audio_encoder.encoder)
    seconds, new = 8, FRAMES - 5  # the reference's cached_audio_duration; a Pro chunk's new frames
    t = torch.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    wave = (0.3 * torch.sin(2 * math.pi * 180 * t) * torch.sin(2 * math.pi * 3 * t)
            + 0.05 * torch.randn(t.shape, generator=g)).numpy().astype(np.float32)
    wave[: seconds * SAMPLE_RATE - new * SAMPLE_RATE // VIDEO_FPS] = 0.0  # a fresh stream: silence, then one chunk
    end = seconds * VIDEO_FPS
    with torch.no_grad():
        windows = get_audio_embedding(pipe, wave, end - FRAMES, end)
        whole = pipe.preprocess_audio(wave, sr=SAMPLE_RATE, fps=VIDEO_FPS)
    return {"in.wave": torch.from_numpy(wave), "out.embedding": whole, "out.windows": windows[0]}


# ---------------------------------------------------------------- Lite: the LTX-Video VAE and its loop
TINY_LTX = {"_class_name": "AutoencoderKLLTXVideo", "block_out_channels": [4, 8, 16, 16], "decoder_causal": False,
            "encoder_causal": True, "in_channels": 3, "latent_channels": 16, "layers_per_block": [1, 1, 1, 1, 1],
            "out_channels": 3, "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6, "scaling_factor": 1.0,
            "spatio_temporal_scaling": [True, True, True, False]}
TINY_LITE = {**TINY, "ffn_dim": 64, "vae_stride": [8, 32, 32], "patch_size": [1, 1, 1]}
TINY_LITE_AUDIO = {**TINY_AUDIO, "channels": 32}
LITE_LAT = (1, 2)  # 32x64 pixels


def half_exact_(module: nn.Module) -> None:
    """Round every parameter to a float16 value (stored as float16 without loss, half the bytes)."""
    for p in module.parameters():
        p.data.copy_(p.data.half().float())


def tiny_ltx_vae(g: torch.Generator, folder: Path):
    """The reference's `LtxVAE` on a tiny random VAE of the 0.9.0 family, loaded by its own `from_pretrained`
    from a diffusers folder written here. That loader accepts only the 0.9.0 config, through a table of
    diffusers -> own configs; the tiny config is registered in that table (same block list as 0.9.0, with
    base channels 4). The weights go through the reference's diffusers renaming; checked to arrive intact."""
    from flash_head.ltx_video.ltx_vae import LtxVAE
    from flash_head.ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from flash_head.ltx_video.utils import diffusers_config_mapping as mapping

    from model.vae.ltx_config import LtxVAEConfig
    from model.vae.ltx_loading import port_to_diffusers

    ours = {**mapping.OURS_VAE_CONFIG, "latent_channels": TINY_LTX["latent_channels"], "encoder_base_channels": 4,
            "decoder_base_channels": 4,
            "blocks": [["res_x", 1], ["compress_all", 1], ["res_x_y", 1], ["res_x", 1], ["compress_all", 1],
                       ["res_x_y", 1], ["res_x", 1], ["compress_all", 1], ["res_x", 1], ["res_x", 1]]}
    mapping.diffusers_and_ours_config_mapping[mapping.make_hashable_key(TINY_LTX)] = ours
    model = CausalVideoAutoencoder.from_config(json.loads(json.dumps(ours)))
    random_weights_(model, g)
    half_exact_(model)
    c = TINY_LTX["latent_channels"]
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    stats = {"latents_mean": 0.2 * torch.randn(c, generator=g), "latents_std": 0.5 + torch.rand(c, generator=g)}
    stats = {k: v.half().float() for k, v in stats.items()}
    # the port's naming equals the reference's own (see model/vae/ltx_layers.py); written in the release's
    folder.mkdir(parents=True, exist_ok=True)
    diffusers_sd = port_to_diffusers({**sd, **stats}, LtxVAEConfig.from_diffusers(TINY_LTX))
    save_file({k: v.half().contiguous() for k, v in diffusers_sd.items()}, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(TINY_LTX, indent=1))
    vae = LtxVAE(str(folder), dtype=torch.float32, device="cpu")
    loaded = vae.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items()), "the reference loaded other weights"
    assert torch.equal(vae.model.mean_of_means, stats["latents_mean"])
    assert torch.equal(vae.model.std_of_means, stats["latents_std"])
    return vae


@contextlib.contextmanager
def recorded_posterior_draws(draws: list[torch.Tensor]):
    """The reference's `LtxVAE.encode` samples the posterior from torch's global generator; record each draw
    (replayed from the generator state before the call, checked to give the reference's own sample)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    original = DiagonalGaussianDistribution.sample

    def sample(self, generator=None):
        state = torch.get_rng_state()
        x = original(self, generator)
        eps = torch.randn(self.mean.shape, generator=torch.Generator().set_state(state), dtype=self.mean.dtype)
        assert torch.equal(self.mean + self.std * eps, x)
        draws.append(eps)
        return x

    DiagonalGaussianDistribution.sample = sample
    try:
        yield
    finally:
        DiagonalGaussianDistribution.sample = original


def ltx_vae_case(vae, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One encode (posterior mean, std, the draw, the normalised sample) and the decode of that sample."""
    video = (torch.rand(1, 3, 17, 32, 32, generator=g) * 2 - 1).half().float()
    posterior = vae.model.encode(video, return_dict=False)[0]
    draws: list[torch.Tensor] = []
    with recorded_posterior_draws(draws):
        latent = vae.encode(video)
    return {"in.video": video[0], "out.mean": posterior.mean[0], "out.std": posterior.std[0],
            "draw": draws[0][0], "out.latent": latent, "out.decoded": vae.decode(latent)[0]}


def lite_case(dit, vae, g: torch.Generator, seed: int, chunks: int) -> dict[str, torch.Tensor]:
    """`chunks` chunks of the Lite loop: the LTX VAE (posterior draws recorded) and colour correction 1.0."""
    size = (LITE_LAT[0] * 32, LITE_LAT[1] * 32)
    pipe = bare_pipeline(dit, vae, seed, 1.0, (MOTION_LATENTS - 1) * TINY_LITE["vae_stride"][0] + 1, TINY_LITE, "lite")
    pipe.lat_h, pipe.lat_w = LITE_LAT
    image = (torch.rand(1, 3, 1, *size, generator=g) * 255).round()
    pipe.cond_image_tensor_dict = {"ref": (image / 255 - 0.5) * 2}
    draws: list[torch.Tensor] = []
    with recorded_posterior_draws(draws):
        pipe.ref_img_latent_dict = {"ref": vae.encode(pipe.cond_image_tensor_dict["ref"].repeat(1, 1, FRAMES, 1, 1))}
        pipe.cond_image_dict = {"ref": None}
        pipe.reset_person_name("ref")
        a = TINY_LITE_AUDIO
        result = run_chunks(pipe, [torch.randn(1, FRAMES, 5, a["blocks"], a["channels"], generator=g)
                                   for _ in range(chunks)])
    result["in.ref_image"] = pipe.cond_image_tensor_dict["ref"][0, :, 0]
    result["in.ref_latent"] = pipe.ref_img_latent
    result["draw.ref"] = draws[0][0]
    result.update({f"draw{c}": d[0] for c, d in enumerate(draws[1:])})  # chunk c's motion re-encode
    return result


def write_lite_cases(out: Path, seed: int, chunks: int) -> None:
    """lite_config.json, lite_dit_weights.safetensors, ltx_vae/, ltx_vae_case and lite_case."""
    torch.manual_seed(seed)  # the posterior draws come from torch's global generator, as in the reference
    g = torch.Generator().manual_seed(seed)
    vae = tiny_ltx_vae(g, out / "ltx_vae")
    dit = build_dit(g, TINY_LITE, TINY_LITE_AUDIO)
    half_exact_(dit)
    config = {**TINY_LITE, "audio": TINY_LITE_AUDIO, "lat": list(LITE_LAT), "frame_num": FRAMES,
              "motion_latents": MOTION_LATENTS, "seed": seed, "reference": "Soul-AILab/SoulX-FlashHead@12467ce"}
    (out / "lite_config.json").write_text(json.dumps(config, indent=1))
    unused = ("text_embedding.", "audio_emb.")
    save_file({k: v.half().contiguous() for k, v in dit.state_dict().items() if not k.startswith(unused)},
              out / "lite_dit_weights.safetensors")
    for name, tensors in (("ltx_vae_case", ltx_vae_case(vae, g)), ("lite_case", lite_case(dit, vae, g, seed, chunks))):
        save_file({k: v.contiguous().float() for k, v in tensors.items()}, out / f"{name}.safetensors")
        print(f"{name}: {len(tensors)} tensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", type=Path, required=True, help="SoulX-FlashHead checkout at 12467ce")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=2, help="chunks of the Pro and Lite loops with the real VAEs")
    args = ap.parse_args()
    install_stubs(args.ref.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(args.seed)
    dit = build_dit(g)
    config = {**TINY, "audio": TINY_AUDIO, "lat": list(LAT), "frame_num": FRAMES, "motion_latents": MOTION_LATENTS,
              "seed": args.seed, "reference": "Soul-AILab/SoulX-FlashHead@12467ce"}
    (args.out / "dit_config.json").write_text(json.dumps(config, indent=1))
    unused = ("text_embedding.", "audio_emb.")  # built, never used; kept out to keep the set small (golden has them)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items() if not k.startswith(unused)},
              args.out / "dit_weights.safetensors")
    cases = {"dit_case": dit_case(dit, g), "loop_case": loop_case(dit, g, args.seed + 1),
             "audio_case": audio_case(g, args.seed + 2, args.out),
             "pro_case": pro_case(dit, g, args.seed + 3, args.chunks, args.out)}
    for name, tensors in cases.items():
        save_file({k: v.contiguous().float() for k, v in tensors.items()}, args.out / f"{name}.safetensors")
        print(f"{name}: {len(tensors)} tensors")
    write_lite_cases(args.out, args.seed + 4, args.chunks)


if __name__ == "__main__":
    main()
