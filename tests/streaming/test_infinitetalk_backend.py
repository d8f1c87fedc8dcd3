"""The infinitetalk backend in the engine, with a tiny random model loaded from disk like real weights."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np
import pytest
import torch

from model.infinitetalk import MissingWeightsError, ModelFiles
from streaming.backends.infinitetalk.generator import speaker_masks
from streaming.engine import Engine
from streaming.generator import Avatar, WindowJob
from streaming.quality import QualitySettings
from streaming.session import SessionSettings

from ..helpers.engine_runs import offline_frames, read_wav
from ..helpers.tiny_infinitetalk import tiny_bundle, tiny_generator


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny-infinitetalk"))


AVATAR = Avatar("face", np.random.default_rng(0).integers(0, 256, (1, 120, 96, 3), np.uint8))
TWO = Avatar("two", np.random.default_rng(1).integers(0, 256, (1, 64, 128, 3), np.uint8),
             speaker_boxes=((0, 0, 60, 64), (68, 0, 128, 64)))


def test_missing_weights_are_listed_with_the_names_expected(tmp_path):
    (tmp_path / "Wan2.1-I2V-14B-480P").mkdir()
    with pytest.raises(MissingWeightsError) as err:
        ModelFiles.discover(tmp_path)
    msg = str(err.value)
    for name in ("diffusion_pytorch_model", "config.json", "Wan2.1_VAE", "models_clip_open-clip", "chinese-wav2vec2-base",
                 "prompt_embeddings.safetensors"):
        assert name in msg


async def test_offline_speech_becomes_whole_windows_of_frames_with_the_audio(bundle, speech_dir):
    gen = tiny_generator(bundle)
    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 2]
    frames = await offline_frames(gen, speech, AVATAR)
    n = gen.window.new_frames
    frames_of_speech = math.ceil(speech.size / 640)
    assert len(frames) == math.ceil(frames_of_speech / n) * n
    assert frames[0].image.shape == (32, 32, 3) and frames[0].image.dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([f.audio for f in frames])[: speech.size], speech)
    # Random weights make noise, but it moves: consecutive frames differ.
    assert np.mean([np.abs(a.image.astype(int) - b.image.astype(int)).mean() for a, b in zip(frames[:-1], frames[1:], strict=True)]) > 0.5


async def test_live_output_equals_the_offline_render_for_the_same_audio_and_seed(bundle, speech_dir):
    speech = read_wav(speech_dir / "speech_en2.wav")[: 16000 * 2]
    offline = await offline_frames(tiny_generator(bundle), speech, AVATAR)
    gen = tiny_generator(bundle)
    engine = Engine(gen)
    live = []
    try:
        # Fixed quality: adaptive quality would lower the steps if this machine is slower than real time.
        session = await engine.open_session(AVATAR, SessionSettings(max_buffer_s=10, quality=QualitySettings(enabled=False)))
        session.push_audio(speech)  # all at once, before the first window is planned
        async for f in session.frames():
            if not f.filler:  # the pacer repeats a frame when compute runs late; not part of the video
                live.append(f)
            if len(live) >= len(offline):
                break
        await session.close()
    finally:
        await engine.shutdown()
    assert len(live) == len(offline)
    for a, b in zip(live, offline, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)
        np.testing.assert_array_equal(a.image, b.image)


def test_idle_windows_use_the_cached_silence_embedding(bundle):
    gen = tiny_generator(bundle)
    state = gen.open_session("s", AVATAR)
    spec = gen.window
    loud = (np.random.default_rng(0).standard_normal((1, spec.job_samples)) * 0.2).astype(np.float32)
    gen._push_audio(state, WindowJob("s", 0, 0, loud, speech=False))
    rows = gen._window_rows(state, WindowJob("s", 0, 0, loud, speech=False))
    silence = gen._silence(spec.new_frames + gen.settings.window.motion_frames + 4)
    assert torch.equal(rows[0, :, 2], silence[2:-2])
    assert gen._silence(7) is gen._silence(7)  # computed once


async def test_two_speakers_each_drive_their_own_region(bundle, speech_dir):
    masks = speaker_masks(TWO.speaker_boxes, TWO.size, (32, 64), (4, 8))
    assert masks.shape == (3, 4, 8)
    assert masks[0, :, :3].all() and not masks[0, :, 5:].any() and masks[1, :, 5:].all()
    torch.testing.assert_close(masks.sum(0), torch.ones(4, 8))
    a = read_wav(speech_dir / "speech_en1.wav")[:24000]
    b = read_wav(speech_dir / "speech_en2.wav")[:24000]
    gen = tiny_generator(bundle, size=(32, 64))
    frames = await offline_frames(gen, np.stack([a, b]), TWO, speakers=2)
    assert frames and frames[0].image.shape == (32, 64, 3)
    np.testing.assert_allclose(np.concatenate([f.audio for f in frames])[: a.size], np.clip(a + b, -1, 1), atol=1e-6)


async def test_interrupt_mid_speech_keeps_generating_from_the_last_frames(bundle, speech_dir):
    gen = tiny_generator(bundle)
    engine = Engine(gen)
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 3]
    got = []
    try:
        session = await engine.open_session(AVATAR, SessionSettings(max_buffer_s=10))

        async def run():
            async for f in session.frames():
                got.append(f)

        task = asyncio.create_task(run())
        session.push_audio(speech)
        while not any(f.speech for f in got):
            await asyncio.sleep(0.02)
        session.interrupt()
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert session.error is None
        await session.close()
    finally:
        await engine.shutdown()
    assert not got[-1].speech


def test_after_a_window_the_next_windows_audio_free_inputs_are_already_encoded(bundle):
    gen = tiny_generator(bundle)
    state = gen.open_session("s", AVATAR)
    spec = gen.window
    audio = (np.random.default_rng(1).standard_normal((1, spec.job_samples)) * 0.1).astype(np.float32)
    frames = list(gen.generate(state, WindowJob("s", 0, 0, audio, speech=True)))
    assert len(frames) == spec.new_frames
    pre = state.live.precomputed
    assert pre is not None and pre.motion_from is state.live.motion_pixels and pre.motion_latent is not None


def test_a_window_continues_from_the_frames_the_engine_says_were_shown(bundle):
    """Speech cutting queued idle frames: the window's motion frames become the frames shown last."""
    from model.infinitetalk import u8_to_unit
    from streaming.generator import CONTINUE_FROM

    bundle_gen = tiny_generator(bundle)
    spec = bundle_gen.window
    M = bundle_gen.settings.window.motion_frames
    assert bundle_gen.continue_frames == M
    idle = np.zeros((1, spec.job_samples), np.float32)
    speech = (np.random.default_rng(2).standard_normal((1, spec.job_samples)) * 0.1).astype(np.float32)
    shown = np.random.default_rng(3).integers(0, 256, (M, 32, 32, 3), np.uint8)
    made = []
    for how in ("extras", "by hand", "not at all", "batched"):
        gen = tiny_generator(bundle)
        state = gen.open_session("s", AVATAR)
        idle_frames = list(gen.generate(state, WindowJob("s", 0, 0, idle, speech=False)))
        job = WindowJob("s", 1, spec.new_frames, speech, speech=True)
        if how in ("extras", "batched"):
            job.extras[CONTINUE_FROM] = shown
        elif how == "by hand":
            state.live.motion_pixels = u8_to_unit(torch.from_numpy(shown))
        if how == "batched":  # the worker's batched path applies it too
            made.append((idle_frames, [f for _, f in gen.generate_batch([gen.prepare_window(state, job)])]))
        else:
            made.append((idle_frames, list(gen.generate(state, job))))
    (idle_a, a), (idle_b, b), (_, c), (_, d) = made
    for x, y in zip(a, d, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1
    for x, y in zip(idle_a + a, idle_b + b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def _stream_jobs(gen, speech: np.ndarray, real_lookahead: list[int | None]) -> list[WindowJob]:
    """Consecutive speech windows; window k's look-ahead holds only `real_lookahead[k]` real samples
    (the rest zeros, as when a window must run before its look-ahead has arrived)."""
    spf, n, look = 640, gen.window.new_frames, gen.window.lookahead_frames * 640
    jobs = []
    for k, real in enumerate(real_lookahead):
        start = k * n * spf
        audio = speech[start:start + n * spf + look].copy()
        if real is not None:
            audio[n * spf + real:] = 0.0
        jobs.append(WindowJob("s", k, k * n, audio[None], True,
                              lookahead_samples=look if real is None else real))
    return jobs


def test_a_window_run_before_its_look_ahead_arrived_does_not_corrupt_later_features(bundle, speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 3]
    gen = tiny_generator(bundle)
    look = gen.window.lookahead_frames * 640

    def rows(jobs) -> list[torch.Tensor]:
        state = gen.open_session("s", AVATAR)
        out = []
        for job in jobs:
            gen._push_audio(state, job)
            out.append(gen._window_rows(state, job))
        return out

    full = rows(_stream_jobs(gen, speech, [None, None, None]))
    partial = rows(_stream_jobs(gen, speech, [look // 3, 0, None]))
    # The windows that ran early used zeros for the missing future, so their last frames differ ...
    assert (partial[0] - full[0]).abs().max() > 1e-2 and (partial[1] - full[1]).abs().max() > 1e-2
    # ... but the stream waited for the real audio: the next full window sees exactly the features of
    # an uninterrupted stream (up to float rounding of other chunkings), and the early windows' first
    # frames were already final.
    torch.testing.assert_close(partial[2], full[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(partial[0][:, :4], full[0][:, :4], rtol=1e-4, atol=1e-5)
    # Taking the zero padding for audio (what the backend must not do) would change later windows.
    padded_as_real = [dataclasses.replace(j, lookahead_samples=None) for j in _stream_jobs(gen, speech, [look // 3, 0, None])]
    assert (rows(padded_as_real)[2] - full[2]).abs().max() > 1e-2


def test_after_a_cut_a_video_avatar_source_follows_the_frames_shown(bundle):
    """Dropped idle frames were never seen: the source video continues from where the viewer was."""
    from streaming.generator import CONTINUE_FROM, FRAMES_CUT

    colours = np.arange(0, 240, 6, dtype=np.uint8)  # 40 source frames, one flat grey level each
    video = Avatar("clip", np.repeat(colours[:, None, None, None], 32, 1).repeat(32, 2).repeat(3, 3), fps=25.0)
    gen = tiny_generator(bundle, idle="source")
    n, M = gen.window.new_frames, gen.settings.window.motion_frames
    silence = np.zeros((1, gen.window.job_samples), np.float32)
    speech = (np.random.default_rng(4).standard_normal((1, gen.window.job_samples)) * 0.1).astype(np.float32)

    def levels(cut: int) -> list[int]:
        state = gen.open_session("s", video)
        list(gen.generate(state, WindowJob("s", 0, 0, silence, speech=False)))
        job = WindowJob("s", 1, n, speech, speech=True)
        if cut:
            job.extras.update({CONTINUE_FROM: np.zeros((M, 32, 32, 3), np.uint8), FRAMES_CUT: cut})
        list(gen.generate(state, job))
        idle = gen.generate(state, WindowJob("s", 2, 2 * n, silence, speech=False))
        return [int(f[..., 0].mean()) for f in idle]

    assert levels(0) == [int(colours[f]) for f in range(2 * n, 3 * n)]
    assert levels(5) == [int(colours[f - 5]) for f in range(2 * n, 3 * n)]
