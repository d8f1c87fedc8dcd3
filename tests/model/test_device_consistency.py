"""Every model path a GPU runs, on a strict second device: no tensor on the wrong device, no host sync
per sampling step (see tests/helpers/virtual_device.py for what the virtual device checks).

The pipeline's networks live on the device and its inputs come from the host, as in a server: source
frames and speech features as CPU tensors, noise from the session's CPU generator. The first window
must also equal the same run on the CPU up to float rounding (on the virtual device attention runs
PyTorch's math kernel instead of the CPU's fused one). Later windows are not compared: each window
is conditioned on the last, and the random tiny model amplifies rounding about tenfold per window.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.dit.teacache import TeaCacheSettings
from model.infinitetalk import WindowSettings, audio_rows, generate_long_video
from model.infinitetalk.live import LiveSource, LiveWindowRunner
from model.infinitetalk.presets import get_preset
from model.sampling import GuidanceScales, distilled_step_list

from ..helpers.golden_models import loop_pipeline
from ..helpers.virtual_device import pipeline_on_device, shown_chunks, to_host, virtual_device

HANDOFF = "model/infinitetalk/handoff.py"
PRESETS = ("infinitetalk", "infinitetalk-lowlatency", "infinitetalk-4step", "flashtalk")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(golden_dir, case="i2v_cfg2"):
    return load_file(golden_dir / "loop" / f"{case}.inputs.safetensors")


def _with_steps(settings: WindowSettings, steps: int) -> WindowSettings:
    """A preset at fewer steps (distilled presets keep a distilled schedule): what the device runs is the same."""
    step_list = distilled_step_list(steps) if settings.step_list is not None else None
    return dataclasses.replace(settings, steps=steps, step_list=step_list)


def _window_audio(emb: torch.Tensor, first: int, settings: WindowSettings, speakers: int = 1) -> torch.Tensor:
    rows = audio_rows(first - settings.motion_frames, settings.frame_num, emb.shape[0])
    return emb[rows][None].expand(speakers, *[-1] * 4).contiguous()


def _live_windows(pipe, source: LiveSource, emb, settings: WindowSettings, windows: int, audit=None,
                  speakers: int = 1) -> tuple[list[np.ndarray], list[list]]:
    """Run `windows` live windows (the later ones prepared ahead, as the backend does); returns the frames and,
    with an audit, the host syncs of each window."""
    runner = LiveWindowRunner(pipe, settings)
    state = runner.start(source, seed=3)
    frames, syncs = [], []
    for k in range(windows):
        first = k * settings.new_frames
        if audit is not None:
            audit.clear()
        frames += list(runner.window(state, _window_audio(emb, first, settings, speakers), first))
        runner.prepare_ahead(state, first + settings.new_frames)
        if audit is not None:
            syncs.append(list(audit.syncs))
    return frames, syncs


def _same_first_window(got: list[np.ndarray], want: list[np.ndarray], new_frames: int) -> None:
    """uint8 frames of the first window within a level of each other (rounding near .5 may flip)."""
    diff = np.abs(np.stack(got[:new_frames]).astype(int) - np.stack(want[:new_frames]).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


def _only_frame_handoffs(syncs: list, settings: WindowSettings) -> None:
    where = {s.where.split(":")[0] for s in syncs}
    assert where <= {HANDOFF}, f"host syncs outside the frame handoff: {[(s.op, s.where) for s in syncs]}"
    assert len(syncs) == shown_chunks(settings.frame_num, settings.motion_frames)


@pytest.mark.parametrize("preset", PRESETS)
def test_live_windows_of_every_preset_run_on_the_device_as_on_the_cpu(golden_dir, preset):
    inputs = _inputs(golden_dir)
    source = LiveSource(inputs["image_u8"][None])
    settings = _with_steps(get_preset(preset), 2)
    with virtual_device() as audit:
        pipe = pipeline_on_device(loop_pipeline(golden_dir, "i2v_cfg2"))
        frames, syncs = _live_windows(pipe, source, inputs["audio_emb"], settings, 2, audit)
    for window in syncs:
        _only_frame_handoffs(window, settings)
    cpu, _ = _live_windows(loop_pipeline(golden_dir, "i2v_cfg2"), source, inputs["audio_emb"], settings, 2)
    assert len(frames) == len(cpu) == 2 * settings.new_frames
    _same_first_window(frames, cpu, settings.new_frames)


@pytest.mark.parametrize("preset", ["infinitetalk-lowlatency", "flashtalk"])  # Euler with guidance; x0 re-noise
def test_host_syncs_per_window_do_not_grow_with_the_steps(golden_dir, preset):
    inputs = _inputs(golden_dir)
    counts = {}
    for steps in (2, 4):
        settings = dataclasses.replace(_with_steps(get_preset(preset), steps), frame_num=13, motion_frames=5)
        with virtual_device() as audit:
            pipe = pipeline_on_device(loop_pipeline(golden_dir, "i2v_cfg2"))
            _, syncs = _live_windows(pipe, LiveSource(inputs["image_u8"][None]), inputs["audio_emb"], settings, 2, audit)
        counts[steps] = [[(s.kind, s.where) for s in window] for window in syncs]
    assert counts[2] == counts[4]  # one sync per step would add two per window here


@pytest.mark.parametrize("variant", ["apg", "teacache", "two_speakers"])
def test_guidance_variants_and_two_speakers_run_on_the_device(golden_dir, variant):
    inputs = _inputs(golden_dir)
    settings = WindowSettings(frame_num=13, motion_frames=5, steps=3, shift=7.0, guidance=GuidanceScales(5.0, 4.0))
    masks, speakers = None, 1
    if variant == "apg":
        settings = dataclasses.replace(settings, apg=True)
    elif variant == "teacache":
        settings = dataclasses.replace(settings, teacache=TeaCacheSettings(threshold=0.5))
    else:
        h, w = (d // 8 for d in inputs["image_u8"].shape[:2])
        masks = torch.zeros(3, h, w)
        masks[0, :, : w // 2], masks[1, :, w // 2 :] = 1.0, 1.0
        speakers = 2
    source = LiveSource(inputs["image_u8"][None], speaker_masks=masks)
    with virtual_device() as audit:
        pipe = pipeline_on_device(loop_pipeline(golden_dir, "i2v_cfg2"))
        frames, syncs = _live_windows(pipe, source, inputs["audio_emb"], settings, 3, audit, speakers)
    assert len(frames) == 3 * settings.new_frames
    if variant == "teacache":  # the step plan is read to the host once per schedule, then cached
        first = syncs[0]
        assert [s.where.split(":")[0] for s in first if HANDOFF not in s.where] == ["model/infinitetalk/pipeline.py"]
        syncs = syncs[1:]
    for window in syncs:
        _only_frame_handoffs(window, settings)


def test_batched_windows_of_two_sessions_run_on_the_device(golden_dir):
    inputs = _inputs(golden_dir)
    emb = inputs["audio_emb"]
    for settings in (_with_steps(get_preset("infinitetalk-lowlatency"), 2), _with_steps(get_preset("flashtalk"), 2)):
        settings = dataclasses.replace(settings, frame_num=13, motion_frames=5)
        source = LiveSource(inputs["image_u8"][None])
        with virtual_device() as audit:
            runner = LiveWindowRunner(pipeline_on_device(loop_pipeline(golden_dir, "i2v_cfg2")), settings)
            states = [runner.start(source, seed=s) for s in (1, 2)]
            made = []
            for k in range(2):
                first = k * settings.new_frames
                audit.clear()
                works = [runner.prepare(st, _window_audio(emb, first, settings), first) for st in states]
                made += list(runner.windows(works))
                handoffs = [s for s in audit.syncs if HANDOFF in s.where]
                assert len(handoffs) == len(audit.syncs) == 2 * shown_chunks(settings.frame_num, settings.motion_frames)
        assert sorted({k for k, _ in made}) == [0, 1] and len(made) == 4 * settings.new_frames


def test_kept_source_region_and_a_size_switch_run_on_the_device(golden_dir):
    inputs = _inputs(golden_dir, "v2v_cfg3")
    video = inputs["video_u8"] if "video_u8" in inputs else inputs["image_u8"][None].expand(4, -1, -1, -1)
    h, w = video.shape[1:3]
    regen = torch.zeros(h, w)
    regen[: h // 2] = 1.0  # regenerate the top half, keep the bottom of the source video
    settings = WindowSettings(frame_num=13, motion_frames=5, steps=2, shift=7.0, guidance=GuidanceScales(1.0, 2.0))
    emb = inputs["audio_emb"]
    with virtual_device() as audit:
        runner = LiveWindowRunner(pipeline_on_device(loop_pipeline(golden_dir, "v2v_cfg3")), settings)
        state = runner.start(LiveSource(video.contiguous(), regen_mask=regen), seed=1)
        frames = list(runner.window(state, _window_audio(emb, 0, settings), 0))
        smaller = video[:, : h - 16, : w - 16].contiguous()
        runner.switch_source(state, LiveSource(smaller))
        frames += list(runner.window(state, _window_audio(emb, settings.new_frames, settings), settings.new_frames))
    assert [f.shape[:2] for f in frames] == [(h, w)] * settings.new_frames + [(h - 16, w - 16)] * settings.new_frames
    assert {s.where.split(":")[0] for s in audit.syncs} == {HANDOFF}


@pytest.mark.parametrize("preset", ["infinitetalk", "flashtalk"])
def test_the_offline_long_video_loop_runs_on_the_device(golden_dir, preset):
    inputs = _inputs(golden_dir)
    settings = dataclasses.replace(_with_steps(get_preset(preset), 2), frame_num=13, motion_frames=5)
    emb = inputs["audio_emb"]
    with virtual_device() as audit:
        pipe = pipeline_on_device(loop_pipeline(golden_dir, "i2v_cfg2"))
        video = generate_long_video(pipe, inputs["image_u8"], emb, settings, seed=5)
    cpu = generate_long_video(loop_pipeline(golden_dir, "i2v_cfg2"), inputs["image_u8"], emb, settings, seed=5)
    assert video.shape == cpu.shape
    first = slice(0, settings.frame_num)  # see the module docstring
    torch.testing.assert_close(to_host(video)[:, first], cpu[:, first], atol=1e-3, rtol=0)
    assert audit.count("scalar") == audit.count("value_shaped") == 0


def _split_vae_rank(rank: int, init_file: str, out: str, golden: str) -> None:
    import torch.distributed as dist

    import model.vae.split as split
    from model.vae.split import split_decode_stream, split_encode

    from ..helpers.golden_models import golden_vae
    from ..helpers.virtual_device import DEVICE, collective_on_values

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        g = torch.Generator().manual_seed(0)
        video = torch.rand(1, 3, 5, 48, 64, generator=g) * 2 - 1
        z = torch.randn(1, 16, 2, 6, 8, generator=g)
        cpu_vae = golden_vae(Path(golden))
        want = split_encode(cpu_vae, video), [c for c in split_decode_stream(cpu_vae, z)]
        split.dist.gather = collective_on_values(dist.gather)
        with virtual_device() as audit:
            vae = golden_vae(Path(golden)).to(DEVICE)
            got = split_encode(vae, video.to(DEVICE)), [c for c in split_decode_stream(vae, z.to(DEVICE))]
        if rank == 0:
            assert got[0].device == DEVICE and all(c.device == DEVICE for c in got[1])  # stitched where decoded
            torch.testing.assert_close(to_host(got[0]), want[0], atol=1e-5, rtol=1e-5)
            for a, b in zip(got[1], want[1], strict=True):
                torch.testing.assert_close(to_host(a), b, atol=1e-5, rtol=1e-5)
            assert audit.syncs == [], [(s.op, s.where) for s in audit.syncs]
            Path(out, "ok").write_text("ok")
    finally:
        dist.destroy_process_group()


def test_the_split_vae_tiles_and_stitches_on_the_device(golden_dir, tmp_path):
    from ..helpers.ranks import spawn_ranks

    spawn_ranks(_split_vae_rank, (str(tmp_path), str(golden_dir)), 2)
    assert (tmp_path / "ok").read_text() == "ok"
