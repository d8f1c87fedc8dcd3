"""WebRTC end to end with a real aiortc client peer on loopback."""

import asyncio
import time

import av
import numpy as np

from .helpers import BlockPatternGenerator, live_server, read_wav
from .rtc_client import MIC_RATE, RtcTestClient, WavMicrophone, resample_to_48k

SR = 16_000


def to_16k(x48: np.ndarray) -> np.ndarray:
    frame = av.AudioFrame.from_ndarray((x48 * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = MIC_RATE
    rs = av.AudioResampler(format="flt", layout="mono", rate=SR)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in rs.resample(frame)])


def best_lag(sent: np.ndarray, received: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """Lag L (samples) maximising the normalised correlation of received[j] with sent[j - L]."""
    n = 1 << int(np.ceil(np.log2(sent.size + received.size)))
    xc = np.fft.irfft(np.fft.rfft(received, n) * np.conj(np.fft.rfft(sent, n)), n)
    lags = np.arange(lo, hi)
    values = xc[lags % n]
    k = int(np.argmax(values))
    norm = np.linalg.norm(sent) * np.linalg.norm(received[max(0, lags[k]) : max(0, lags[k]) + sent.size])
    return int(lags[k]), float(values[k] / max(norm, 1e-9))


async def test_webrtc_peer_gets_25fps_video_and_its_speech_back_at_the_reported_latency(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: int(SR * 3.5)]
    mic = WavMicrophone(resample_to_48k(np.concatenate([np.zeros(SR // 2, np.int16), speech])))
    async with live_server(BlockPatternGenerator(new_frames=4, delay_s=0.01)) as srv:
        client = RtcTestClient(mic)
        try:
            answer = await client.connect(srv.url)
            assert answer["status"] == 200 and answer["type"] == "answer"
            await client.wait_for(lambda: client.of_type("ready") and client.video_times, 10)
            ready = client.of_type("ready")[0]
            assert ready["session_id"] == answer["session_id"] and ready["fps"] == 25
            assert (ready["width"], ready["height"]) == (64, 48) and ready["backend"] == "pattern"
            await client.wait_for(lambda: mic.finished, 10)
            # The speech has been sent; interrupt drops what is still queued.
            t_interrupt = time.monotonic()
            client.send({"type": "interrupt"})
            await client.wait_for(lambda: "interrupted" in [m["state"] for m in client.of_type("state")], 2)
            await client.wait_for(lambda: client.of_type("state")[-1]["state"] == "idle", 2)
            t_idle = time.monotonic()
            client.send({"type": "ping", "t": 7})
            await client.wait_for(lambda: client.of_type("pong"), 2)
            await asyncio.sleep(0.6)
            t_end = time.monotonic()
            (peer,) = list(srv.ctx.connections)
            track = peer.audio
            gaps = track.silent_chunks  # 20 ms chunks the frames did not deliver in time
            diag = f"gaps {gaps}, late {track.late_chunks}, reanchors {track.reanchors}, sent {track._n}"
        finally:
            await client.close()
        await asyncio.sleep(0.3)
        assert srv.ctx.sessions.active == 0 and not srv.ctx.engine.sessions, "closing the peer ends its session"

    assert client.of_type("pong")[0]["t"] == 7
    assert t_idle - t_interrupt < 0.5, "interrupt -> idle takes more than one window (+ transport)"
    # Video: >= 90% of 25 fps over the time it was flowing.
    times = np.array(client.video_times)
    span = t_end - times[0]
    assert len(times) >= 0.9 * span * 25, f"{len(times)} frames in {span:.2f} s"
    assert set(client.video_sizes) == {(64, 48)}
    # Stats: numeric latency while speaking.
    stats = [m for m in client.of_type("stats") if isinstance(m.get("latency_mean_s"), float)]
    assert stats, "no stats message with a numeric latency"
    latency = stats[-1]["latency_mean_s"]
    assert 0.05 < latency < 1.0
    # Audio: what came back is what was sent, delayed by about the reported latency.
    sent = to_16k(mic.pcm.astype(np.float32) / 32768.0)[: SR * 3]  # the tail may have been interrupted
    got = to_16k(client.audio())
    offset = client.audio_t0 - mic.t0  # received sample j arrived at audio_t0 + j / SR
    lag, peak = best_lag(sent, got, -SR // 2, 2 * SR)
    delay = offset + lag / SR
    assert peak > 0.5, f"received audio does not correlate with the speech sent (peak {peak:.2f}; {diag})"
    # The reported latency runs from a frame's last input sample to the frame leaving the pacer;
    # end to end also holds the frame's own 40 ms, both Opus jitter buffers and the network.
    # Measured here: delay - latency = 0.22-0.24 s = 40 ms frame + 2 x 80 ms (aiortc's audio jitter
    # buffers prefetch 4 packets at each end) + up to 25 ms of audio-track anchoring.
    assert latency + 0.02 < delay < latency + 0.35, f"delay {delay:.3f} s vs reported latency {latency:.3f} s"
    assert gaps <= 10, f"the audio track sent {gaps} silent 20 ms chunks for lack of frame audio"


async def test_set_avatar_restarts_the_session_with_the_new_avatar_on_the_same_peer():
    async with live_server() as srv:
        client = RtcTestClient(None)
        try:
            assert (await client.connect(srv.url))["status"] == 200
            await client.wait_for(lambda: len(client.video_times) >= 5, 10)
            first = client.of_type("ready")[0]["session_id"]
            client.send({"type": "set_avatar", "avatar": "nobody"})
            await client.wait_for(lambda: client.of_type("error"), 2)
            assert client.of_type("error")[0]["code"] == "unknown_avatar"
            client.send({"type": "set_avatar", "avatar": "other"})
            await client.wait_for(lambda: len(client.of_type("ready")) >= 2, 5)
            ready = client.of_type("ready")[-1]
            assert ready["avatar"] == "other" and ready["session_id"] != first
            n = len(client.video_times)
            await client.wait_for(lambda: len(client.video_times) >= n + 10, 5)  # video keeps flowing
            client.send({"type": "dance"})
            await client.wait_for(lambda: len(client.of_type("error")) >= 2, 2)
            assert client.of_type("error")[-1]["code"] == "bad_message"
            assert client.pc.connectionState == "connected"
            assert list(srv.ctx.engine.sessions) == [ready["session_id"]]
            assert srv.ctx.sessions.active == 1
        finally:
            await client.close()


async def test_a_peer_that_never_connects_is_closed_with_its_session():
    async with live_server(ice_connect_timeout_s=1.0) as srv:
        client = RtcTestClient(None)
        client.pc.addTransceiver("audio", direction="recvonly")
        client.pc.addTransceiver("video", direction="recvonly")
        await client.pc.setLocalDescription(await client.pc.createOffer())
        import aiohttp

        async with aiohttp.ClientSession() as http:
            offer = {"sdp": client.pc.localDescription.sdp, "type": "offer"}
            async with http.post(srv.url + "/offer", json=offer) as resp:
                assert resp.status == 200
            assert len(srv.ctx.engine.sessions) == 1
            # The client never applies the answer, so ICE never completes.
            deadline = time.monotonic() + 4
            while srv.ctx.engine.sessions and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not srv.ctx.engine.sessions and srv.ctx.sessions.active == 0
        await client.pc.close()
