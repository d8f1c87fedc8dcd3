"""WebRTC end to end with a real aiortc client peer on loopback."""

import asyncio
import json
import sys
import time
from pathlib import Path

import av
import numpy as np

from ..helpers.rtc_client import MIC_RATE, RtcTestClient, WavMicrophone
from ..helpers.server_app import BlockPatternGenerator, live_server

SR = 16_000
REPO = Path(__file__).resolve().parents[2]


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


async def test_webrtc_peer_gets_25fps_video_and_its_speech_back_at_the_reported_latency(speech_dir, tmp_path):
    # The client peer runs in its own process, as a browser would: on this 2-core box, two aiortc
    # stacks sharing one event loop and one GIL distort the timing being measured.
    async with live_server(BlockPatternGenerator(new_frames=4, delay_s=0.01)) as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.helpers.rtc_client", srv.url, "--wav", str(speech_dir / "speech_en1.wav"),
            "--out", str(tmp_path), "--lead-s", "0.5", "--speech-s", "3.5", cwd=REPO,
        )
        peer = None
        while proc.returncode is None:
            live = [c for c in srv.ctx.connections if getattr(c, "session", None) is not None]
            if live:
                peer = live[0]
                track, video, counters = peer.audio, peer.video, peer.session.counters
            try:
                await asyncio.wait_for(proc.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
        assert proc.returncode == 0
        await asyncio.sleep(0.3)
        assert srv.ctx.sessions.active == 0 and not srv.ctx.engine.sessions, "hanging up ends the session"
    assert peer is not None
    res = json.loads((tmp_path / "result.json").read_text())
    diag = (f"audio gaps {track.silent_chunks}, late {track.late_chunks}, reanchors {track.reanchors}; "
            f"video sent {video.frames_sent}, dropped {video.dropped}; filler {counters.filler_frames}, "
            f"slips {counters.clock_slips}")
    msgs = [m for _, m in res["messages"]]
    of_type = lambda kind: [m for m in msgs if m.get("type") == kind]  # noqa: E731
    assert res["answer"]["status"] == 200 and res["answer"]["type"] == "answer"
    ready = of_type("ready")[0]
    assert ready["session_id"] == res["answer"]["session_id"] and ready["fps"] == 25
    assert (ready["width"], ready["height"]) == (64, 48) and ready["backend"] == "pattern"
    assert of_type("pong")[0]["t"] == 7
    assert "interrupted" in [m["state"] for m in of_type("state")]
    assert res["t_idle"] - res["t_interrupt"] < 0.6, "interrupt -> idle takes more than one window (+ transport)"
    # Video: >= 90% of 25 fps over the time it was flowing.
    times = np.array(res["video_times"])
    span = times[-1] - times[0]
    assert span > 4 and len(times) - 1 >= 0.9 * span * 25, f"{len(times)} frames in {span:.2f} s; {diag}"
    assert {tuple(s) for s in res["video_sizes"]} == {(64, 48)}
    # Stats: numeric latency while speaking.
    stats = [m for m in of_type("stats") if isinstance(m.get("latency_mean_s"), float)]
    assert stats, "no stats message with a numeric latency"
    latency = stats[-1]["latency_mean_s"]
    assert 0.05 < latency < 1.0
    # Audio: what came back is what was sent, delayed by about the reported latency. Matched per
    # 0.5 s segment of speech, so one scheduling hiccup cannot hide an otherwise exact echo.
    sent = to_16k(np.load(tmp_path / "mic.npy").astype(np.float32) / 32768.0)[: SR * 4]  # the tail may be cut
    got = to_16k(np.load(tmp_path / "audio.npy"))
    offset = res["audio_t0"] - res["mic_t0"]  # received sample j arrived at audio_t0 + j / SR
    delays, peaks = segment_delays(sent, got, offset)
    assert len(peaks) >= 4, "not enough speech segments"
    good = [d for d, p in zip(delays, peaks, strict=True) if p > 0.6]
    assert len(good) >= 0.75 * len(peaks), f"received audio does not match the speech sent: peaks {peaks}; {diag}"
    delay = float(np.median(good))
    # The reported latency runs from a frame's last input sample to the frame leaving the pacer;
    # end to end also holds the frame's own 40 ms, both Opus jitter buffers and the network.
    # Measured on an idle 2-core box: delay - latency = 0.22-0.24 s = 40 ms frame + 2 x 80 ms
    # (aiortc's audio jitter buffers prefetch 4 packets at each end) + up to 25 ms of audio-track
    # anchoring; 0.3-0.37 s when other jobs load the machine (late client packets, longer queues).
    assert latency + 0.02 < delay < latency + 0.5, f"delay {delay:.3f} s vs reported latency {latency:.3f} s; {diag}"
    assert track.silent_chunks <= 10, f"the audio track sent silence for lack of frame audio; {diag}"


def segment_delays(sent: np.ndarray, got: np.ndarray, offset: float, seg_s: float = 0.5):
    """Per loud 0.5 s segment of `sent`: its delay (s) in `got` and the normalised correlation peak."""
    seg = int(seg_s * SR)
    delays, peaks = [], []
    for start in range(SR // 2, sent.size - seg + 1, seg):  # skip the leading silence
        part = sent[start : start + seg]
        if np.sqrt(np.mean(part**2)) < 0.02:
            continue
        lag, peak = best_lag(part, got, start - SR // 2, start + 2 * SR)
        delays.append(offset + (lag - start) / SR)
        peaks.append(round(peak, 2))
    return delays, peaks


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


async def test_two_microphones_feed_the_two_speakers_of_one_session():
    seconds = 1.5
    tone = (np.sin(np.arange(int(MIC_RATE * seconds)) * 2 * np.pi * 220 / MIC_RATE) * 8000).astype(np.int16)
    async with live_server() as srv:
        client = RtcTestClient(WavMicrophone(tone), WavMicrophone(tone // 2))
        try:
            assert (await client.connect(srv.url, speakers=2))["status"] == 200
            await client.wait_for(lambda: client.of_type("ready") and client.video_times, 10)
            (peer,) = [c for c in srv.ctx.connections]
            assert peer.session.settings.speakers == 2 and len(peer._mic_tracks) == 2
            fifos_fed = [0, 0]
            original = peer.session.push_audio

            def spy(samples, speaker=0, arrival=None):
                fifos_fed[speaker] += len(samples)
                original(samples, speaker, arrival)

            peer.session.push_audio = spy
            await asyncio.sleep(1.0)
            assert min(fifos_fed) > 0.7 * 16000  # about 1 s of 16 kHz audio from each microphone
        finally:
            await client.close()


async def test_hang_up_frees_the_session_at_once_even_before_ice_completes():
    """DELETE /offer/{id}: a peer that leaves during ICE would otherwise hold its slot until the connect
    timeout. Only the client that made the offer may hang it up (another token gets 404, like an
    unknown id)."""
    import aiohttp

    alice, bob = "alice-token-0123456789", "bob-token-9876543210"

    def auth(token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}

    async with live_server(tokens=(("alice", alice), ("bob", bob))) as srv, aiohttp.ClientSession() as http:
        client = RtcTestClient(None)
        client.pc.addTransceiver("audio", direction="recvonly")
        client.pc.addTransceiver("video", direction="recvonly")
        await client.pc.setLocalDescription(await client.pc.createOffer())
        offer = {"sdp": client.pc.localDescription.sdp, "type": "offer"}
        async with http.post(srv.url + "/offer", json=offer, headers=auth(alice)) as resp:
            assert resp.status == 200
            sid = (await resp.json())["session_id"]
        assert srv.ctx.sessions.active == 1 and len(srv.ctx.engine.sessions) == 1
        for headers, target in ((auth(bob), sid), (auth(alice), "0" * 12)):
            async with http.delete(f"{srv.url}/offer/{target}", headers=headers) as resp:
                assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_session"
        async with http.delete(f"{srv.url}/offer/{sid}") as resp:
            assert resp.status == 401
        assert srv.ctx.sessions.active == 1
        async with http.delete(f"{srv.url}/offer/{sid}", headers=auth(alice)) as resp:
            assert resp.status == 204
        assert srv.ctx.sessions.active == 0 and not srv.ctx.engine.sessions and not srv.ctx.connections
        async with http.delete(f"{srv.url}/offer/{sid}", headers=auth(alice)) as resp:
            assert resp.status == 404  # already closed
        await client.pc.close()
