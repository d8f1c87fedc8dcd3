"""Speed options of the DiT and the pipeline on CPU: TeaCache step skipping, the CUDA-graph cache
(keys, eviction, eager fallback) and torch.compile of the blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from model.dit import DiTConfig, InfiniteTalkDiT
from model.dit.graphs import CudaGraphDiT, graph_key
from model.dit.teacache import TeaCacheSettings, plan_teacache
from model.infinitetalk import WindowSettings, audio_rows, u8_to_unit
from model.sampling import GuidanceScales

from ..helpers.golden_models import loop_pipeline

CFG = DiTConfig.tiny()
WINDOW = WindowSettings(frame_num=9, motion_frames=5, steps=6, shift=5.0, guidance=GuidanceScales(5.0, 4.0),
                        colour_strength=0.0)


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- TeaCache ------------------------------------------------------------------------------------

def _series(rel_steps: list[float]) -> list[torch.Tensor]:
    """Inputs whose consecutive relative-L1 distances are exactly rel_steps (all-positive vectors)."""
    out = [torch.ones(4)]
    for r in rel_steps:
        out.append(out[-1] * (1 + r))
    return out


def test_plan_accumulates_rescaled_distances_until_the_threshold() -> None:
    # poly(x) = x (coefficients highest degree first), warm-up 1 step, no cutoff.
    tc = TeaCacheSettings(threshold=0.25, coefficients=(1.0, 0.0), warmup_steps=1, cutoff_steps=99)
    plan = plan_teacache(_series([0.1, 0.1, 0.1, 0.3, 0.05]), tc)
    # step0 warm-up; 0.1 skip; 0.2 skip; 0.3 >= 0.25 compute (reset); 0.3 compute; 0.05 skip
    assert plan == (True, False, False, True, True, False)


def test_plan_always_computes_the_warmup_and_the_cutoff_steps() -> None:
    tc = TeaCacheSettings(threshold=1e9, use_ret_steps=False)  # reference: first and last step compute
    assert plan_teacache(_series([0.1] * 6), tc) == (True, False, False, False, False, False, True)
    assert plan_teacache(_series([0.1] * 6), dataclasses.replace(tc, threshold=0.0)) == (True,) * 7


@pytest.fixture(scope="module")
def loop(golden_dir, one_thread):
    inputs = load_file(golden_dir / "loop" / "i2v_cfg2.inputs.safetensors")
    pipe = loop_pipeline(golden_dir, "i2v_cfg2")
    image = u8_to_unit(inputs["image_u8"])[:, None]
    cond = pipe.condition(image, WINDOW.frame_num)
    audio = inputs["audio_emb"][audio_rows(0, WINDOW.frame_num, inputs["audio_emb"].shape[0])][None]
    motion = pipe.encode_motion(image)
    h, w = cond.y.shape[-2:]
    noise = torch.randn(16, WINDOW.latent_frames, h, w, generator=torch.Generator().manual_seed(3))
    args = (cond, audio, motion, noise)
    return pipe, args, pipe.denoise(*args, WINDOW)


def test_teacache_threshold_zero_equals_the_plain_sampler_exactly(loop) -> None:
    pipe, args, plain = loop
    off = pipe.denoise(*args, dataclasses.replace(WINDOW, teacache=TeaCacheSettings(threshold=0.0)))
    assert torch.equal(off, plain)


@pytest.mark.parametrize("batch_branches", [True, False])
def test_teacache_large_threshold_skips_steps_and_stays_finite(loop, batch_branches: bool) -> None:
    pipe, args, plain = loop
    settings = dataclasses.replace(WINDOW, batch_branches=batch_branches)
    tc = TeaCacheSettings(threshold=1e9, warmup_steps=2)
    plan = pipe.teacache_plan(dataclasses.replace(settings, teacache=tc))
    assert plan[:2] == (True, True) and plan.count(False) == WINDOW.steps - 2
    calls = []
    forward = pipe.dit_forward
    pipe.dit_forward = lambda *a, **k: calls.append(k["residual_cache"].reuse) or forward(*a, **k)
    try:
        cached = pipe.denoise(*args, dataclasses.replace(settings, teacache=tc))
    finally:
        pipe.dit_forward = forward
    groups = 1 if batch_branches else len(WINDOW.guidance.branches())
    assert calls.count(True) == (WINDOW.steps - 2) * groups  # every branch group reused its own residual
    assert torch.isfinite(cached).all() and (cached - plain).abs().max() > 1e-3


# ---- CUDA-graph cache ----------------------------------------------------------------------------

def _inputs(b: int, frames: int = 2, h: int = 4, w: int = 4, speakers: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(speakers + 1, h, w)
    masks[0, :, : w // 2] = 1
    masks[-1] = 1 - masks[:-1].sum(0).clamp(max=1)
    return dict(
        x=torch.randn(b, CFG.out_dim, frames, h, w, generator=g),
        t=torch.rand(b, generator=g) * 1000,
        context=[torch.randn(5, CFG.text_dim, generator=g) for _ in range(b)],
        clip_fea=torch.randn(1, CFG.clip_tokens, CFG.clip_dim, generator=g),
        y=torch.randn(1, CFG.y_dim, frames, h, w, generator=g),
        audio=torch.randn(b, speakers, CFG.video_frames(frames), CFG.audio_window, CFG.audio_layers,
                          CFG.audio_width, generator=g),
        ref_target_masks=masks,
    )


class _FakeGraphs(CudaGraphDiT):
    """The cache logic with a stand-in for capture (an eager call on the frozen static inputs' shapes)."""

    def capturable(self, x: torch.Tensor) -> bool:
        return True

    def _capture(self, inputs, audio_scale):
        if inputs["x"].shape[-1] == 6:
            raise RuntimeError("operation not permitted when stream is capturing")
        return lambda given: self.dit(**given, audio_scale=audio_scale)


@pytest.fixture(scope="module")
def tiny() -> InfiniteTalkDiT:
    return InfiniteTalkDiT(CFG).init_random_weights_(seed=1).eval()


def test_graph_key_is_shapes_not_values() -> None:
    a, b = _inputs(2, seed=1), _inputs(2, seed=2)
    for d in (a, b):
        d["context"] = torch.stack(d["context"])
    assert graph_key(a, 1.0) == graph_key(b, 1.0)
    assert graph_key(a, 1.0) != graph_key(a, 0.5)
    c = _inputs(3)
    c["context"] = torch.stack(c["context"])
    assert graph_key(c, 1.0) != graph_key(a, 1.0)


def test_graph_cache_captures_once_per_shape_evicts_and_falls_back(tiny, one_thread) -> None:
    graphs = _FakeGraphs(tiny, max_graphs=2)
    with torch.no_grad():
        for seed in range(3):  # same shape, new values: one capture, then replays
            inp = _inputs(2, seed=seed)
            torch.testing.assert_close(graphs(**inp), tiny(**inp), atol=1e-6, rtol=1e-6)
        assert (graphs.stats.captures, graphs.stats.replays) == (1, 3)
        graphs(**_inputs(1))
        graphs(**_inputs(3))  # a third shape evicts the least recently used one
        assert graphs.stats.evictions == 1 and len(graphs._graphs) == 2
        bad = _inputs(1, w=6)
        for _ in range(2):  # a failed capture runs eagerly and is not retried
            torch.testing.assert_close(graphs(**bad), tiny(**bad), atol=1e-6, rtol=1e-6)
        assert graphs.stats.failures == 1 and graphs.stats.eager == 2


class _FakeCuda:
    """torch.cuda's stream, graph and pool calls recorded on the CPU (there is no GPU here): the real
    `_CapturedForward` runs against it, its forwards eager, so what it asks of CUDA can be checked."""

    def __init__(self, monkeypatch) -> None:
        from contextlib import nullcontext

        self.devices: list = []
        self.pools: list = []
        self.handles = 0
        fake = self

        class Stream:
            def __init__(self, device=None):
                fake.devices.append(("stream", device))

            def wait_stream(self, other):
                pass

        class Graph:
            def replay(self):
                pass

        def graph(g, pool=None, **kw):
            fake.pools.append(pool)
            return nullcontext()

        def pool_handle():
            fake.handles += 1
            return ("pool", fake.handles)

        for name, value in dict(Stream=Stream, CUDAGraph=Graph, graph=graph, graph_pool_handle=pool_handle,
                                current_stream=lambda device=None: fake.devices.append(("current", device)) or Stream(device),
                                stream=lambda s: nullcontext(),
                                device=lambda d: fake.devices.append(("device", d)) or nullcontext()).items():
            monkeypatch.setattr(torch.cuda, name, value)


def test_graphs_share_one_pool_use_the_models_device_and_keep_their_rope_tables(tiny, one_thread, monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    monkeypatch.setattr(tiny._rope, "max_entries", 1)  # every new shape evicts the last table from the cache
    graphs = CudaGraphDiT(tiny, warmup=1, device="cuda:1")
    graphs.capturable = lambda x: True
    with torch.no_grad():
        graphs(**_inputs(2, speakers=1))
        first = next(iter(graphs._graphs.values()))
        table = first.keep[0]
        graphs(**_inputs(2, h=6, speakers=1))
    assert graphs.stats.captures == 2 and cuda.handles == 1
    assert cuda.pools == [("pool", 1)] * 2  # both captures into the one pool
    assert {d for _, d in cuda.devices} == {torch.device("cuda:1")}  # never the thread's current device
    assert table.shape[0] == 2 * 2 * 2 and all(t is not table for t in tiny._rope._tables.values())
    assert first.keep[0] is table  # evicted from the cache, still held by the graph that reads it


def test_graphs_off_cuda_are_the_eager_forward(tiny, one_thread) -> None:
    graphs = CudaGraphDiT(tiny)
    inp = _inputs(2, speakers=2)
    with torch.no_grad():
        assert torch.equal(graphs(**inp), tiny(**inp))
    assert graphs.stats.eager == 1 and graphs.stats.captures == 0


# ---- torch.compile -------------------------------------------------------------------------------

@pytest.mark.slow
def test_compiled_blocks_equal_eager(one_thread) -> None:
    # aot_eager traces and partitions the blocks like inductor but runs aten kernels: a fast check
    # of the compile path on CPU. The inductor speed-up is measured in bench/speed_model.py.
    model = InfiniteTalkDiT(CFG).init_random_weights_(seed=4).eval()
    inputs = [_inputs(2, speakers=1, seed=5), _inputs(2, h=6, speakers=2, seed=6)]
    with torch.no_grad():
        eager = [model(**i) for i in inputs]
        model.compile_blocks(backend="aot_eager")
        try:
            compiled = [model(**i) for i in inputs]
        finally:
            model.decompile_blocks()
    assert model.blocks[0]._compiled_call_impl is None
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compiled_blocks_serve_new_sizes_without_graph_breaks_or_more_compiles(one_thread) -> None:
    # Dynamo's own tracing ("eager" backend: no code generation) decides graph breaks and recompiles.
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = InfiniteTalkDiT(CFG).init_random_weights_(seed=4).eval()
    # One call per shape class (batch 1 / more x 1 / 2 speakers); first sizes unlike the model's own
    # dimensions (a coincidence there costs one more compile: duck sizing, see compile_blocks).
    first = dict(frames=7, h=26, w=18)  # latent grid 7 x 13 x 9 tokens, 25 video frames
    warm_up = [dict(b=11, **first), dict(b=1, **first), dict(b=11, speakers=2, **first), dict(b=1, speakers=2, **first)]
    later = [dict(b=3, h=8, w=6), dict(b=2, frames=4, h=6), dict(b=7, w=12), dict(b=1, h=10, frames=2),
             dict(b=4, speakers=2, h=8, w=6), dict(b=1, speakers=2, w=8)]
    with torch.no_grad():
        model.compile_blocks(backend="eager")
        try:
            for kw in warm_up:
                model(**_inputs(**kw))
            compiled = counters["stats"]["unique_graphs"]
            for kw in later:
                inp = _inputs(**kw, seed=9)
                got = model(**inp)
                model.decompile_blocks()
                torch.testing.assert_close(got, model(**inp), atol=1e-5, rtol=1e-5)
                model.compile_blocks(backend="eager")
        finally:
            model.decompile_blocks()
    assert not counters["graph_break"] and not counters["unimplemented"], dict(counters["unimplemented"])
    assert counters["frames"]["ok"] == counters["frames"]["total"]  # nothing fell back to eager
    assert compiled == len(warm_up)  # one compile per shape class
    assert counters["stats"]["unique_graphs"] == compiled  # new sizes, batches, frames: no new compile


# ---- the bundle's speed switches -------------------------------------------------------------------

def test_load_bundle_applies_fp8_compile_and_graph_options(tmp_path, one_thread) -> None:
    from model.dit.fp8_linear import FP8Linear
    from model.infinitetalk import ModelFiles, SpeedOptions, load_bundle
    from model.infinitetalk.tiny import write_tiny_weights

    write_tiny_weights(tmp_path)
    speed = SpeedOptions(fp8="row", compile=True, cuda_graphs=True)
    bundle = load_bundle(ModelFiles.discover(tmp_path), dtype=torch.float32, speed=speed)
    dit = bundle.pipe.dit
    assert isinstance(dit.blocks[0].self_attn.q, FP8Linear) and dit.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert dit.blocks[0]._compiled_call_impl is not None
    assert isinstance(bundle.pipe.dit_forward, CudaGraphDiT)
    dit.decompile_blocks()
    with pytest.raises(ValueError, match="fp8 must be"):
        SpeedOptions(fp8="int8")
