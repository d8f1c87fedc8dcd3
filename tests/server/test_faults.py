"""Faults (issue 5): clients that vanish mid-window, generators that fail mid-window; the session is
freed within a timeout, the others keep their 25 fps, and nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import torch

from ..helpers.failing_backend import count_frames
from ..helpers.leaks import assert_no_leaks, snapshot
from ..helpers.server_app import BlockPatternGenerator, live_server, make_avatar
from ..helpers.ws_checks import assert_serves_a_session

REPO = Path(__file__).resolve().parents[2]
HELLO = {"type": "hello", "version": 1}


class RawWs:
    """A websocket client on a bare socket, so the test can tear the TCP connection down with a reset."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str) -> RawWs:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 101 " in head, head
        return cls(reader, writer)

    def send(self, payload: bytes, opcode: int) -> None:
        mask = os.urandom(4)
        n = len(payload)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        self.writer.write(bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    async def read_frames(self, count: int) -> None:
        """Read `count` server binary messages (unmasked, any length)."""
        seen = 0
        while seen < count:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), 5)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
            await self.reader.readexactly(n)
            seen += (b0 & 0x0F) == 2

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): no close frame, no FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def test_a_websocket_client_that_resets_its_connection_mid_window_is_freed():
    # 0.2 s per 4-frame window: the reset lands while the worker is inside a window.
    gen = BlockPatternGenerator(delay_s=0.12)
    async with live_server(gen) as srv:
        async with aiohttp.ClientSession() as http:
            await assert_serves_a_session(srv, http)  # warm up pools before counting
        before = snapshot()
        speech = (np.sin(np.arange(16000) * 0.05) * 8000).astype(np.int16)
        for _ in range(3):
            ws = await RawWs.connect(srv.url)
            ws.send(json.dumps(HELLO).encode(), 0x1)
            for i in range(0, speech.size, 320):
                ws.send(bytes([0x41, 1, 0, 0]) + speech[i : i + 320].tobytes(), 0x2)
            await ws.read_frames(6)
            assert len(srv.ctx.engine.sessions) == 1
            while not _window_running(srv):  # reset while the worker is inside a window
                await asyncio.sleep(0.002)
            t0 = time.monotonic()
            ws.reset()
            counts = await assert_no_leaks(srv, before, timeout=3.0, peers=False)
            assert time.monotonic() - t0 < 3.0
        assert counts["sessions"] == 0 and counts["connections"] == 0
        assert srv.ctx.engine.worker.alive and srv.ctx.engine.worker.stats.jobs_failed == 0
        async with aiohttp.ClientSession() as http:
            await assert_serves_a_session(srv, http)


def _window_running(srv) -> bool:
    return any(s.production.window_in_flight for s in srv.ctx.engine.sessions.values())


async def test_a_webrtc_peer_that_vanishes_mid_call_is_freed_within_the_media_timeout(speech_dir, tmp_path):
    """The client process is SIGKILLed while speaking: no DTLS close, no SCTP abort, no ICE goodbye.
    ICE consent would notice after ~30 s; the microphone watchdog frees it within a few seconds."""
    async with live_server(BlockPatternGenerator(delay_s=0.05), rtc_media_timeout_s=1.5) as srv:
        before = snapshot()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.helpers.rtc_client", srv.url, "--wav", str(speech_dir / "speech_en1.wav"),
            "--out", str(tmp_path), "--lead-s", "0.2", "--speech-s", "6", "--tail-s", "30", cwd=REPO,
        )
        try:
            peer = None
            end = time.monotonic() + 30
            while peer is None or peer.pump is None or peer.pump.frames < 25:
                assert time.monotonic() < end and proc.returncode is None, "the client peer never streamed"
                peer = next(iter(srv.ctx.connections), None)
                await asyncio.sleep(0.05)
            assert peer.pc.connectionState == "connected" and peer.session.counters.samples_in > 0
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            t0 = time.monotonic()
            counts = await assert_no_leaks(srv, before, timeout=8.0)
            freed_after = time.monotonic() - t0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert freed_after < 6.0, freed_after
        assert peer.pc.connectionState == "closed" and counts["connections"] == 0
        async with aiohttp.ClientSession() as http:
            await assert_serves_a_session(srv, http)


class FailsMidWindow(BlockPatternGenerator):
    """Avatars name their fault: `oom` raises CUDA OOM after 2 good frames of window 3, `shape` yields a
    frame of another size there, `dtype` a float frame. Everything else is healthy."""

    def open_session(self, session_id, avatar, speakers=1):
        state = super().open_session(session_id, avatar, speakers)
        state["fault"] = avatar.name
        return state

    def generate(self, state, job):
        fault = state["fault"] if job.index == 3 else None
        for i, frame in enumerate(super().generate(state, job)):
            if fault == "oom" and i == 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            if fault == "shape" and i == 1:
                yield frame[:-2]
                continue
            if fault == "dtype" and i == 1:
                yield frame.astype(np.float32)
                continue
            yield frame


async def test_a_generator_failing_mid_window_fails_only_its_session_and_others_keep_25_fps():
    faults = {"oom": "out of memory", "shape": "bad frame", "dtype": "bad frame"}
    builtins = {"test": lambda: make_avatar("test"), **{n: (lambda n=n: make_avatar(n)) for n in faults}}
    async with live_server(FailsMidWindow(), builtins=builtins) as srv, aiohttp.ClientSession() as http:
        before = snapshot()
        healthy = await http.ws_connect(srv.ws_url)
        await healthy.send_json(HELLO)
        assert (await healthy.receive_json())["type"] == "ready"
        healthy_log: list = []
        h = asyncio.create_task(count_frames(healthy, healthy_log))
        doomed = {}
        for name in faults:
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_json({**HELLO, "avatar": name})
            assert (await ws.receive_json())["type"] == "ready"
            doomed[name] = (ws, [])
        codes = await asyncio.wait_for(asyncio.gather(*(count_frames(ws, log) for ws, log in doomed.values())), 8)
        t_fail = time.monotonic()
        n_fail = sum(m.type == aiohttp.WSMsgType.BINARY for m in healthy_log)
        await asyncio.sleep(2.0)
        n_later = sum(m.type == aiohttp.WSMsgType.BINARY for m in healthy_log)
        fps = (n_later - n_fail) / (time.monotonic() - t_fail)
        assert not healthy.closed and 22.5 <= fps <= 27.5, fps
        await healthy.send_json({"type": "bye"})
        assert await asyncio.wait_for(h, 5) == 1000
        await healthy.close()
        for (name, (ws, log)), code in zip(doomed.items(), codes, strict=True):
            errors = [m.json() for m in log if m.type == aiohttp.WSMsgType.TEXT and m.json()["type"] == "error"]
            assert code == 4500 and errors[-1]["code"] == "generator_error", (name, code, errors)
            assert faults[name] in errors[-1]["message"], errors[-1]
            assert sum(m.type == aiohttp.WSMsgType.BINARY for m in log) >= 4  # it played before failing
            await ws.close()
        worker = srv.ctx.engine.worker
        assert worker.alive and worker.stats.jobs_failed == 3
        await assert_no_leaks(srv, before, timeout=5.0, peers=False)
        await assert_serves_a_session(srv, http)


async def test_a_client_sending_faster_than_real_time_is_warned_bounded_and_does_not_slow_others():
    async with live_server() as srv, aiohttp.ClientSession() as http:
        healthy = await http.ws_connect(srv.ws_url)
        await healthy.send_json(HELLO)
        assert (await healthy.receive_json())["type"] == "ready"
        healthy_log: list = []
        h = asyncio.create_task(count_frames(healthy, healthy_log))
        async with http.ws_connect(srv.ws_url) as flood:
            await flood.send_json(HELLO)
            assert (await flood.receive_json())["type"] == "ready"
            noise = (np.random.default_rng(0).standard_normal(16000 * 30) * 3000).astype(np.int16).tobytes()
            t0 = time.monotonic()
            n0 = sum(m.type == aiohttp.WSMsgType.BINARY for m in healthy_log)
            for _ in range(3):  # 90 s of audio in well under a second: 9x the 10 s buffer
                for i in range(0, len(noise), 1 << 19):
                    await flood.send_bytes(bytes([0x41, 1, 0, 0]) + noise[i : i + (1 << 19)])
            warnings = []
            while time.monotonic() - t0 < 2.0:
                msg = await asyncio.wait_for(flood.receive(), 2)
                if msg.type == aiohttp.WSMsgType.TEXT and msg.json()["type"] == "warning":
                    warnings.append(msg.json())
            (session,) = [c.session for c in srv.ctx.connections if c.session.counters.audio_overflows]
            assert session.buffered_seconds() <= 10.0 + 0.1  # bounded: the rest was refused
            assert warnings and warnings[0]["code"] == "audio_overflow" and len(warnings) <= 3  # at most ~1 a second
            assert not flood.closed  # told, not dropped: it may go on in real time
            fps = (sum(m.type == aiohttp.WSMsgType.BINARY for m in healthy_log) - n0) / (time.monotonic() - t0)
            assert 22.5 <= fps <= 27.5, fps
            await flood.send_json({"type": "bye"})
        await healthy.send_json({"type": "bye"})
        assert await asyncio.wait_for(h, 5) == 1000
        assert "infinitetalk_audio_overflows_total" in srv.ctx.metrics.render().decode()


async def test_sessions_over_both_transports_leave_nothing_behind_when_they_end():
    from ..helpers.rtc_client import RtcTestClient

    async with live_server() as srv:
        async with aiohttp.ClientSession() as http:
            await assert_serves_a_session(srv, http)  # warm the pools
        before = snapshot()
        peers = [RtcTestClient(None) for _ in range(2)]
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(srv.ws_url) for _ in range(2)]
            for ws in sockets:
                await ws.send_json(HELLO)
                assert (await ws.receive_json())["type"] == "ready"
            for p in peers:
                assert (await p.connect(srv.url))["status"] == 200
            await peers[0].wait_for(lambda: all(len(p.video_times) > 10 for p in peers), 15)
            assert len(srv.ctx.engine.sessions) == 4 and srv.ctx.sessions.active == 4
            for ws in sockets:
                await ws.send_json({"type": "bye"})
                await ws.close()
        for p in peers:
            await p.close()
        counts = await assert_no_leaks(srv, before, timeout=8.0)
        assert counts["connections"] == 0 and counts["sessions"] == 0
