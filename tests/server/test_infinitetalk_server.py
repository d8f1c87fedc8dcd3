"""The infinitetalk backend behind the real server and CLI, with the tiny random model from disk."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import wave

import aiohttp
import av
import numpy as np
import pytest
import torch

from server.cli import main

from ..helpers.server_app import WsLog, live_server, make_avatar, read_wav, ws_receive_all, ws_send_realtime
from ..helpers.tiny_infinitetalk import FAST_WINDOW, tiny_bundle, tiny_generator

LONG_WINDOW = dataclasses.replace(FAST_WINDOW, frame_num=33)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny-infinitetalk"))


async def _stream(srv, speakers: list[np.ndarray], hello_extra: dict) -> tuple[dict, WsLog]:
    """Send each speaker's PCM in real time, then wait until all of it has come back (or 60 s)."""
    voiced = max(int(np.count_nonzero(p)) for p in speakers)
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
        await ws.send_json({"type": "hello", "version": 1, **hello_extra})
        ready = await asyncio.wait_for(ws.receive_json(), 30)
        log = WsLog([])
        receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
        await asyncio.gather(*(ws_send_realtime(ws, pcm, speaker=i) for i, pcm in enumerate(speakers)))
        await ws.send_json({"type": "end_of_speech"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while sum(int(np.count_nonzero(f.pcm)) for f in log.frames) < voiced and loop.time() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        await ws.send_json({"type": "bye"})
        await asyncio.wait_for(receiver, 10)
    return ready, log


async def test_live_speech_over_websocket_comes_back_sample_exact_with_paced_frames(bundle, speech_dir):
    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 3]
    gen = tiny_generator(bundle, window=LONG_WINDOW)  # 28 new frames per window: several times real time
    async with live_server(gen) as srv:
        ready, log = await _stream(srv, [speech], {})
    assert ready["backend"] == "infinitetalk" and (ready["width"], ready["height"]) == (32, 32)
    assert ready["window_frames"] == gen.window.new_frames
    frames = log.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    times = np.array(log.frame_times[10:])
    assert abs((len(times) - 1) / (times[-1] - times[0]) - 25) < 1.5
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)])
    fillers = [f.index for f in frames if f.filler]
    assert len(fillers) < 0.1 * len(frames), fillers  # a loaded 2-core box may run a window late
    assert any(f.speech for f in frames) and not frames[0].speech  # idle first, then speech


async def test_two_speakers_over_websocket(bundle, speech_dir):
    a = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 2]
    b = read_wav(speech_dir / "speech_en2.wav")[: 16000 * 2]
    avatar = make_avatar("duo", (64, 32))
    avatar = type(avatar)(avatar.name, avatar.frames, speaker_boxes=((0, 0, 30, 32), (34, 0, 64, 32)))
    gen = tiny_generator(bundle, size=(32, 64), window=LONG_WINDOW)
    async with live_server(gen, builtins={"duo": lambda: avatar}) as srv:
        ready, log = await _stream(srv, [a, b], {"speakers": 2})
    assert ready["type"] == "ready" and (ready["width"], ready["height"]) == (64, 32)
    out = np.concatenate([f.pcm for f in log.frames]).astype(np.int32)
    mixed = np.clip(a.astype(np.int32) + b.astype(np.int32), -32768, 32767)
    nz = np.flatnonzero(mixed)
    assert np.corrcoef(out[np.flatnonzero(out)][: nz.size], mixed[nz])[0, 1] > 0.95
    assert not log.json("error")


def test_render_writes_an_mp4_with_every_frame_and_the_speech(tmp_path, speech_dir):
    out = tmp_path / "talk.mp4"
    wav = speech_dir / "speech_de1.wav"
    from streaming.avatars import builtin_avatar_path

    code = main(["render", "--image", str(builtin_avatar_path("astronaut")), "--audio", str(wav), "-o", str(out),
                 "--preset", "tiny-random", "--size", "32x32", "--no-progress", "--seed", "3"])
    assert code == 0
    samples = read_wav(wav).size
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert c.streams.audio[0].codec_context.name == "aac"
        assert v.codec_context.name == "h264" and v.average_rate == 25
        n = sum(1 for _ in c.decode(video=0))
    assert n == math.ceil(samples / 640)
    with av.open(str(out)) as c:
        audio_s = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert abs(audio_s - samples / 16000) < 0.1


def test_missing_weights_stop_serve_and_render_before_anything_starts(tmp_path, capsys):
    assert main(["serve", "--backend", "infinitetalk", "--weights", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "Wan2.1_VAE" in err and "chinese-wav2vec2-base" in err
    wav = tmp_path / "none.wav"
    assert main(["render", "--image", "x.png", "--audio", str(wav), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "not found" in capsys.readouterr().err


async def test_serve_with_tiny_random_says_loudly_that_the_video_is_noise_then_serves():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--backend", "infinitetalk", "--preset", "tiny-random",
        "--size", "32x32", "--port", "0", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        m = re.search(r"open (http://127\.0\.0\.1:\d+/) in a browser \(backend: infinitetalk", line)
        assert m, line
        async with aiohttp.ClientSession() as http, http.get(m.group(1) + "api/info") as r:
            info = await r.json()
        assert "video is noise" in info["backend_description"].lower()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        err = (await proc.stderr.read()).decode()
        assert "RANDOM WEIGHTS, THE VIDEO IS NOISE" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _write_video(path, frames: np.ndarray, fps: int = 25) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "10"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def test_render_a_video_with_a_mask_regenerates_only_the_box(tmp_path, speech_dir):
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(60, 195, (4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # 64x64, 16px blocks
    src = np.stack([np.roll(base, 2 * i, axis=1) for i in range(10)])
    video, out, wav = tmp_path / "src.mp4", tmp_path / "out.mp4", tmp_path / "speech.wav"
    _write_video(video, src)
    with wave.open(str(speech_dir / "speech_de1.wav")) as r, wave.open(str(wav), "wb") as w:
        w.setparams(r.getparams())
        w.writeframes(r.readframes(int(1.2 * 16000)))
    code = main(["render", "--video", str(video), "--audio", str(wav), "-o", str(out),
                 "--preset", "tiny-random", "--size", "64x64", "--mask-box", "16,16,40,40", "--no-progress"])
    assert code == 0
    with av.open(str(video)) as c:
        decoded_src = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        got = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert len(got) == 30
    kept = np.zeros((64, 64), bool)
    kept[:, 60:] = kept[60:, :] = True  # beyond the box's feathered edge
    for i, frame in enumerate(got):
        diff = np.abs(frame - decoded_src[i % len(decoded_src)])
        assert diff[kept].mean() < 4, f"frame {i}: source not kept outside the mask"
        assert diff[20:36, 20:36].mean() > 10, f"frame {i}: not regenerated inside the mask"


def test_render_with_fp8_linears_and_teacache(tmp_path, speech_dir):
    wav = tmp_path / "short.wav"
    with wave.open(str(speech_dir / "speech_en1.wav")) as r, wave.open(str(wav), "wb") as w:
        w.setparams(r.getparams())
        w.writeframes(r.readframes(16000))
    out = tmp_path / "fp8.mp4"
    code = main(["render", "--image", str(_astronaut()), "--audio", str(wav), "-o", str(out), "--preset", "tiny-random",
                 "--size", "32x32", "--fp8", "row", "--teacache", "0.2", "--steps", "6", "--no-progress"])
    assert code == 0
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 25


def _astronaut():
    from streaming.avatars import builtin_avatar_path

    return builtin_avatar_path("astronaut")


@pytest.mark.parametrize("split_args", [[], ["--vae-split"], ["--vae-split", "--vae-split-halo", "0"]],
                         ids=["dit", "dit+vae", "dit+vae-no-halo"])
def test_render_with_the_dit_split_over_two_torchrun_processes_equals_one_process(tmp_path, speech_dir, split_args):
    """With --vae-split every VAE encode and decode also goes through the follower. At 32x32 a tile's
    default halo covers the whole 4x4 latent, so the frames must still equal one process (the protocol,
    end to end); with no halo the tiles are real and the video must differ (the option reaches the
    VAE). tests/model/test_vae_split.py checks real tiles against their own decode."""
    wav = tmp_path / "short.wav"
    with wave.open(str(speech_dir / "speech_en1.wav")) as r, wave.open(str(wav), "wb") as w:
        w.setparams(r.getparams())
        w.writeframes(r.readframes(24000))
    common = ["-m", "server.cli", "render", "--image", str(_astronaut()), "--audio", str(wav), "--preset",
              "tiny-random", "--size", "32x32", "--no-progress", "--crf", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = str(29500 + os.getpid() % 400)
    sp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
                         *common, "-o", str(tmp_path / "sp.mp4"), "--sequence-parallel", *split_args],
                        capture_output=True, text=True, timeout=240, env=env)
    assert sp.returncode == 0, sp.stderr[-2000:]
    halo = split_args[-1] if "--vae-split-halo" in split_args else "2"
    assert (f"VAE split into spatial tiles (halo {halo})" in sp.stdout) == bool(split_args)
    assert main(common[2:] + ["-o", str(tmp_path / "one.mp4")]) == 0

    def frames(p):
        with av.open(str(p)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    split, one = frames(tmp_path / "sp.mp4"), frames(tmp_path / "one.mp4")
    assert split.shape == one.shape and split.shape[0] == 38
    per_frame = np.abs(split.astype(int) - one.astype(int)).reshape(len(one), -1).max(axis=1)
    diff = per_frame.max()
    # Lossless H.264 (yuv420p): the sharded attention's float sums may flip a pixel by one step, which the
    # RGB -> YUV -> RGB round trip keeps within 2 (at the default crf one flipped pixel can change a whole
    # macroblock's coding: differences of 30-50 in a 16x16 block were seen).
    assert diff > 2 if halo == "0" else diff <= 2, f"largest difference per frame: {per_frame.tolist()}"

