"""Issue 13 end to end: at 44.1 and 48 kHz, over the websocket, the audio that comes back is one
continuous resampling of what was sent, sample for sample, through pauses, odd message sizes and
network jitter (messages up to 60 ms late, inside the engine's 120 ms margin)."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np

from server.tracks import to_pcm16
from streaming.audio_input import PcmFormat
from streaming.avatars import default_avatar
from streaming.backends.lite import LiteGenerator, LiteSettings

from ..helpers.audio_exact import assert_one_continuous_resampling, one_resampling, to_rate_stereo
from ..helpers.engine_runs import read_wav
from .helpers import WsLog, live_server, ws_receive_all


async def send_jittery(ws, pcm: np.ndarray, fmt: PcmFormat, seed: int) -> None:
    """Real time, in odd message sizes (any byte count: split samples too), each message up to 30 ms
    late and one in 25 held back 60 ms; order kept, so the ones behind a late one follow at once."""
    rng = np.random.default_rng(seed)
    loop = asyncio.get_running_loop()
    data, header = pcm.tobytes(), bytes([0x41, 1, 0, 0])
    t0, pos = loop.time(), 0
    while pos < len(data):
        n = int(rng.integers(1, 2 * 960 * fmt.bytes_per_frame // 2 * 3))  # up to ~60 ms of audio, any byte count
        late = 0.060 if rng.random() < 0.04 else float(rng.uniform(0, 0.030))
        await asyncio.sleep(max(0.0, t0 + pos / fmt.bytes_per_frame / fmt.sample_rate + late - loop.time()))
        await ws.send_bytes(header + data[pos : pos + n])
        pos += n
    await ws.send_json({"type": "end_of_speech"})


def returned_all(log: WsLog, ref: np.ndarray) -> bool:
    """The received audio reaches past where the input ends (a loaded machine may add latency)."""
    out = np.concatenate([f.pcm for f in log.frames] or [np.zeros(0, np.int16)])
    nz = np.flatnonzero(out)
    return bool(nz.size) and out.size >= nz[0] - int(np.flatnonzero(ref)[0]) + ref.size + 640


async def one_session(srv, http, pcm: np.ndarray, fmt: PcmFormat, seed: int, ref: np.ndarray) -> WsLog:
    async with http.ws_connect(srv.ws_url) as ws:
        await ws.send_json({"type": "hello", "version": 1, "video": {"quality": 30},
                            "audio": {"sample_rate": fmt.sample_rate, "channels": fmt.channels, "format": "s16"}})
        assert (await asyncio.wait_for(ws.receive_json(), 10))["type"] == "ready"
        log = WsLog([])
        receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
        # Idle first, as a user would (the sessions start at once and their first windows queue on the
        # one worker behind each other's start-up, which the compute estimate takes a second to forget),
        # then start right after frame 36 + seed: each run at another phase of the 4-frame windows.
        while not log.frames or log.frames[-1].index < 36 + seed % 4:
            await asyncio.sleep(0.002)
        await send_jittery(ws, pcm, fmt, seed)
        for _ in range(100):
            if returned_all(log, ref):
                break
            await asyncio.sleep(0.05)
        await ws.send_json({"type": "bye"})
        await asyncio.wait_for(receiver, 5)
    return log


async def test_44k_and_48k_stereo_come_back_as_one_continuous_resampling_through_pauses_and_jitter(speech_dir):
    speech = read_wav(speech_dir / "dialogue_with_pause.wav")[16000 * 6 : 16000 * 13]  # speech, 3 s pause, speech
    inputs = {rate: to_rate_stereo(speech, rate) for rate in (44_100, 48_000)}
    formats = {rate: PcmFormat(rate, 2, "s16") for rate in inputs}
    refs = {rate: to_pcm16(one_resampling(pcm, formats[rate])) for rate, pcm in inputs.items()}
    gen = LiteGenerator(LiteSettings(width=128, height=128))
    runs = [(rate, seed) for rate in inputs for seed in range(4)]
    async with live_server(gen, builtins={"astronaut": default_avatar}, max_sessions_per_client=8) as srv, \
            aiohttp.ClientSession() as http:
        logs = await asyncio.gather(*(one_session(srv, http, inputs[r], formats[r], s, refs[r]) for r, s in runs))
    failures = []
    for (rate, seed), log in zip(runs, logs, strict=True):
        frames = log.frames
        assert log.close_code == 1000 and [f.index for f in frames] == list(range(len(frames)))
        try:
            assert_one_continuous_resampling(np.concatenate([f.pcm for f in frames]), refs[rate], f"{rate} Hz, run {seed}")
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, failures


async def test_the_partial_last_frame_of_an_utterance_reports_its_latency_and_only_frames_without_input_do_not():
    n = 4 * 640 + 385  # a window and 385 samples: the flushed window's first frame is partly input
    t = np.arange(n) / 16000
    tone = to_pcm16(0.1 + 0.2 * np.sin(2 * np.pi * 300 * t))  # no sample is zero
    async with live_server() as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "ready"
            log = WsLog([])
            receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
            await ws.send_bytes(bytes([0x41, 1, 0, 0]) + tone.tobytes())
            await ws.send_json({"type": "end_of_speech"})
            await asyncio.sleep(1.0)
            await ws.send_json({"type": "bye"})
            await asyncio.wait_for(receiver, 5)
    carrying = [f for f in log.frames if f.pcm.any()]
    assert [int(np.count_nonzero(f.pcm)) for f in carrying] == [640] * 4 + [385]
    assert all(np.isfinite(f.latency) and f.latency > 0 for f in carrying), [f.latency for f in carrying]
    assert all(np.isnan(f.latency) for f in log.frames if not f.pcm.any())
