"""Cluster mode on a real local Ray cluster: two simulated nodes on loopback, one lite worker on each,
one gateway (the real app) in front. One cluster for the module; its workers are shared by the tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
import numpy as np
import pytest

from server.cli import main as cli_main

from ..helpers.cluster import LEASE_S, SESSIONS_PER_WORKER, WORKERS, add_node, gateway, two_node_ray
from ..helpers.generated_speech import GENERATED_HELLO, find_input, send_fast, speech_of
from ..helpers.rtc_client import RtcTestClient, WavMicrophone, resample_to_48k
from ..helpers.server_app import WsLog, read_wav, ws_receive_all, ws_send_realtime
from ..helpers.ws_checks import HELLO, eventually, read_until_close

CAPACITY = WORKERS * SESSIONS_PER_WORKER


@pytest.fixture(scope="module")
def ray_cluster():
    with two_node_ray() as cluster:
        yield cluster


@pytest.fixture
def ray_address(ray_cluster) -> str:
    return ray_cluster.address


async def cluster_json(srv, http: aiohttp.ClientSession) -> dict:
    async with http.get(srv.url + "/api/cluster") as resp:
        assert resp.status == 200
        return await resp.json()


async def worker_metrics(srv, http: aiohttp.ClientSession) -> dict[str, dict[str, float]]:
    """`infinitetalk_cluster_worker_<series>{worker=...}` from /metrics -> {series: {worker: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(srv.url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("infinitetalk_cluster_worker_"):
            series = family.name.removeprefix("infinitetalk_cluster_worker_")
            out[series] = {s.labels["worker"]: s.value for s in family.samples}
    return out


async def ws_session(srv, http, speech: np.ndarray, started: asyncio.Event | None = None) -> WsLog:
    """One websocket session: hello, speech in real time, end of speech, a short tail, bye."""
    async with http.ws_connect(srv.ws_url) as ws:
        await ws.send_json(HELLO)
        ready = await asyncio.wait_for(ws.receive_json(), 20)
        assert ready["type"] == "ready", ready
        log = WsLog([])
        receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
        if started is not None:
            started.set()
        await ws_send_realtime(ws, speech)
        await ws.send_json({"type": "end_of_speech"})
        spoken = np.count_nonzero(speech)
        await eventually(lambda: sum(np.count_nonzero(f.pcm) for f in log.frames) >= spoken, 10)
        await ws.send_json({"type": "bye"})
        await asyncio.wait_for(receiver, 10)
    return log


def assert_paced_and_exact(log: WsLog, speech: np.ndarray, label: str) -> None:
    frames = log.frames
    assert log.close_code == 1000, f"{label}: closed with {log.close_code}"
    assert [f.index for f in frames] == list(range(len(frames))), f"{label}: frames missing or out of order"
    times = np.array(log.frame_times[5:])
    fps = (len(times) - 1) / (times[-1] - times[0])
    assert abs(fps - 25) < 1.5, f"{label}: {fps:.1f} fps"
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)], err_msg=label)
    assert sum(f.speech for f in frames) >= 40, f"{label}: too few speech frames"


async def test_sessions_spread_over_both_workers_at_25fps_with_their_audio_back_sample_exact(ray_address, speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 3]
    async with gateway(ray_address) as srv, aiohttp.ClientSession() as http:
        import ray

        assert ray_address.startswith("127.0.0.1:")
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}, "a Ray node off loopback"
        info = await cluster_json(srv, http)
        workers = info["workers"]
        assert [w["id"] for w in workers] == [0, 1] and all(w["alive"] for w in workers)
        assert len({w["node"] for w in workers}) == 2, "both workers on one node"
        assert all(w["capacity"] == SESSIONS_PER_WORKER and isinstance(w["pid"], int) for w in workers)
        rtc = RtcTestClient(WavMicrophone(resample_to_48k(speech)))
        started = [asyncio.Event() for _ in range(4)]
        tasks = [asyncio.create_task(ws_session(srv, http, speech, e)) for e in started]
        try:
            assert (await rtc.connect(srv.url))["status"] == 200
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
            during = await cluster_json(srv, http)
            assert sorted(w["sessions"] for w in during["workers"]) == [2, 3], during
            metrics = await worker_metrics(srv, http)  # per worker, as /api/cluster just saw them
            assert sorted(metrics["sessions"].values()) == [2.0, 3.0] and set(metrics["alive"].values()) == {1.0}
            assert all(v > 0 for v in metrics["realtime_factor"].values()), metrics["realtime_factor"]
            logs = await asyncio.gather(*tasks)
            await rtc.wait_for(lambda: len(rtc.of_type("stats")) >= 2, 5)
            t = np.array(rtc.video_times[-50:])
            assert abs((len(t) - 1) / (t[-1] - t[0]) - 25) < 2.5, "WebRTC video not at 25 fps"
            assert np.abs(rtc.audio()).max() > 0.05, "no speech came back over WebRTC"
            rtc_worker = rtc.of_type("stats")[-1]["worker"]
        finally:
            await rtc.close()
            for t in tasks:
                t.cancel()
        for i, log in enumerate(logs):
            assert_paced_and_exact(log, speech, f"session {i}")
        used = {log.json("stats")[-1]["worker"] for log in logs} | {rtc_worker}
        assert used == {0, 1}, f"sessions' stats name workers {used}"
        await eventually(lambda: srv.ctx.sessions.active == 0, 10)
        after = await cluster_json(srv, http)
        assert [w["sessions"] for w in after["workers"]] == [0, 0], "a slot leaked on a worker"


async def test_an_interrupt_crosses_to_the_worker_and_speech_stops_within_a_window(ray_address, speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 4]
    async with gateway(ray_address) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json(HELLO)
            assert (await asyncio.wait_for(ws.receive_json(), 20))["type"] == "ready"
            log = WsLog([])
            receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
            header = bytes([0x41, 1, 0, 0])
            for i in range(0, speech.size, 16000):  # 4 s at once: far more than plays soon
                await ws.send_bytes(header + speech[i : i + 16000].tobytes())
            await eventually(lambda: any(f.speech for f in log.frames), 10)
            await ws.send_json({"type": "interrupt"})
            await asyncio.sleep(1.0)
            await ws.send_json({"type": "stats"})
            await asyncio.sleep(0.1)
            await ws.send_json({"type": "bye"})
            await asyncio.wait_for(receiver, 10)
    states = [m["state"] for m in log.json("state")]
    assert "interrupted" in states and states[-1] == "idle", states
    at = next(k for k, item in enumerate(log.items) if item[0] == "json" and item[1].get("state") == "interrupted")
    after = [item[1] for item in log.items[at:] if item[0] == "frame"]
    assert len(after) >= 20
    # the pacer drops its speech frames at once; those still on their way from the worker die on landing
    assert not any(f.speech for f in after[4:]), "speech went on more than a window after the interrupt"
    assert [f.index for f in log.frames] == list(range(len(log.frames)))
    assert log.json("stats")[-1]["buffered_speech_s"] == 0


async def test_generated_speech_through_the_cluster_plays_sample_exact_with_its_playback_events(ray_address,
                                                                                               speech_dir):
    """A voice agent's TTS (issue 17) on a cluster worker: 8 s sent at once, played at 25 fps, every sample
    back in order, then playback_finished with the whole segment's position."""
    speech = speech_of(speech_dir, 8.0)
    async with gateway(ray_address) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json(GENERATED_HELLO)
            ready = await asyncio.wait_for(ws.receive_json(), 20)
            assert ready["type"] == "ready" and ready["input"] == "generated", ready
            log = WsLog([])
            receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
            took = await send_fast(ws, speech)
            await ws.send_json({"type": "segment_end"})
            assert took < 1.0, f"sending 8 s took {took:.2f} s"
            await eventually(lambda: bool(log.json("playback_finished")), 30)
            await ws.send_json({"type": "stats"})
            await eventually(lambda: bool(log.json("stats")), 5)
            await ws.send_json({"type": "end_session"})
            await asyncio.wait_for(receiver, 10)
    assert log.close_code == 1000 and not log.json("error"), log.json("error")
    frames = log.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    out = np.concatenate([f.pcm for f in frames])
    start = find_input(out, speech)
    np.testing.assert_array_equal(out[start : start + speech.size], speech)
    first, last = start // 640, (start + speech.size - 1) // 640
    assert not any(f.filler for f in frames[first : last + 1]), "the playout ran dry mid-segment"
    times = np.array(log.frame_times[first : last + 1])
    assert abs((len(times) - 1) / (times[-1] - times[0]) - 25.0) < 1.0
    (finished,) = log.json("playback_finished")
    assert finished["position_samples"] == speech.size and not finished["interrupted"], finished
    assert log.json("stats")[-1]["worker"] in (0, 1)


async def test_when_every_slot_is_taken_a_new_session_is_refused_at_once_then_served_after_one_ends(ray_address):
    async with gateway(ray_address) as srv, aiohttp.ClientSession() as http:
        held, readers = [], []
        try:
            for _ in range(CAPACITY):  # each read to the end, so no session is closed as a stalled client
                ws = await http.ws_connect(srv.ws_url)
                await ws.send_json(HELLO)
                assert (await asyncio.wait_for(ws.receive_json(), 20))["type"] == "ready"
                held.append(ws)
                readers.append(asyncio.create_task(ws_receive_all(ws, WsLog([]), asyncio.get_running_loop().time)))
            assert [w["sessions"] for w in (await cluster_json(srv, http))["workers"]] == [SESSIONS_PER_WORKER] * 2
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_json(HELLO)
                error, code = await asyncio.wait_for(read_until_close(ws), 5)
            assert code == 4503 and error["code"] == "cluster_full", (code, error)
            async with http.post(srv.url + "/offer", json={"sdp": await an_offer_sdp(), "type": "offer"}) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "5"
                assert (await resp.json())["error"]["code"] == "cluster_full"
            await held[0].send_json({"type": "bye"})
            await eventually(lambda: srv.ctx.sessions.active == CAPACITY - 1, 10)
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_json(HELLO)
                assert (await asyncio.wait_for(ws.receive_json(), 20))["type"] == "ready"
                await ws.send_json({"type": "bye"})
        finally:
            for ws in held[1:]:
                await ws.send_json({"type": "bye"})
            await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 20)
        await eventually(lambda: srv.ctx.sessions.active == 0, 10)


async def test_a_killed_worker_closes_only_its_sessions_then_comes_back_and_serves_again(ray_address):
    async with gateway(ray_address) as srv, aiohttp.ClientSession() as http:
        logs = [WsLog([]), WsLog([])]
        sockets = [await http.ws_connect(srv.ws_url) for _ in logs]
        receivers = []
        for ws, log in zip(sockets, logs, strict=True):
            await ws.send_json(HELLO)
            assert (await asyncio.wait_for(ws.receive_json(), 20))["type"] == "ready"
            receivers.append(asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time)))
        try:
            await eventually(lambda: all(len(log.json("stats")) >= 1 for log in logs), 5)
            placed = [log.json("stats")[-1]["worker"] for log in logs]
            assert sorted(placed) == [0, 1], "two sessions on one worker"
            victim = placed[0]
            old_pid = (await cluster_json(srv, http))["workers"][victim]["pid"]
            killed_at = asyncio.get_running_loop().time()
            os.kill(old_pid, signal.SIGKILL)
            await asyncio.wait_for(receivers[0], 5)
            closed_after = asyncio.get_running_loop().time() - killed_at
            errors = logs[0].json("error")
            assert logs[0].close_code == 4500 and errors and errors[-1]["code"] == "worker_lost", (
                logs[0].close_code, errors)
            assert closed_after < 5
            n = len(logs[1].frames)
            await asyncio.sleep(2)
            t = np.array(logs[1].frame_times[n:])
            assert len(t) >= 45 and np.diff(t).max() < 0.3, "the other worker's session stalled"
            assert not receivers[1].done()

            async def back() -> bool:
                w = (await cluster_json(srv, http))["workers"][victim]
                return w["alive"] and w["pid"] != old_pid

            for _ in range(100):
                if await back():
                    break
                await asyncio.sleep(0.2)
            assert await back(), "the killed worker did not come back"
            async with http.ws_connect(srv.ws_url) as ws:  # least loaded: the restarted worker
                await ws.send_json(HELLO)
                ready = await asyncio.wait_for(ws.receive_json(), 20)
                assert ready["type"] == "ready"
                stats = await asyncio.wait_for(_next_of_type(ws, "stats"), 5)
                assert stats["worker"] == victim
                await ws.send_json({"type": "bye"})
        finally:
            for ws in sockets:
                await ws.close()
            await asyncio.gather(*receivers, return_exceptions=True)


async def test_a_node_that_joins_adds_a_worker_while_the_gateway_runs(ray_cluster):
    async with gateway(ray_cluster.address, workers=0) as srv, aiohttp.ClientSession() as http:
        before = (await cluster_json(srv, http))["workers"]
        assert len(before) == 2  # one per node: each node holds one worker of one CPU
        add_node(ray_cluster)  # on the loop's thread: Ray sets signal handlers for the node it starts
        for _ in range(150):
            workers = (await cluster_json(srv, http))["workers"]
            if len(workers) == 3 and workers[2]["alive"]:
                break
            await asyncio.sleep(0.2)
        assert len(workers) == 3 and workers[2]["alive"], workers
        assert workers[2]["node"] not in {w["node"] for w in before}
        assert srv.ctx.engine.pool.free_slots() == 3 * SESSIONS_PER_WORKER


async def test_a_gateway_that_dies_leaves_no_session_behind_on_the_workers(ray_address):
    async with gateway(ray_address) as watcher, aiohttp.ClientSession() as http:  # a second gateway, watching
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", "--backend", "lite", "--lite-width", "256", "--lite-height",
            "256", "--port", "0", "--cluster",
            ray_address, "--workers", str(WORKERS), "--sessions-per-worker", str(SESSIONS_PER_WORKER),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
            url = line.split("open ", 1)[1].split()[0].rstrip("/")
            ws = await http.ws_connect(url.replace("http", "ws") + "/ws")
            await ws.send_json(HELLO)
            assert (await asyncio.wait_for(ws.receive_json(), 20))["type"] == "ready"

            async def on_workers() -> int:
                return sum(w["sessions"] for w in (await cluster_json(watcher, http))["workers"])

            assert await on_workers() == 1  # the other gateway's session, on the shared workers
            proc.kill()  # the gateway dies without a word to the workers
            await proc.wait()
            for _ in range(int(4 * LEASE_S) + 20):
                if await on_workers() == 0:
                    break
                await asyncio.sleep(0.5)
            assert await on_workers() == 0, "the dead gateway's session still holds a worker slot"
            await ws.close()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _next_of_type(ws, kind: str) -> dict:
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == kind:
            return json.loads(msg.data)


async def an_offer_sdp() -> str:
    """A valid offer (a refusal must come from the slots, not from a bad SDP)."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


TINY = ["serve", "--preset", "tiny-random", "--size", "32x32", "--seed", "3", "--log-level", "warning"]


async def render_offline(engine, speech: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Offline, as `render` runs it: every frame (image, audio) of the default avatar saying `speech`."""
    from streaming.avatars import default_avatar
    from streaming.planner import PlannerSettings
    from streaming.session import SessionSettings

    settings = SessionSettings(planner=PlannerSettings(realtime=False), max_buffer_s=10)
    session = await engine.open_session(default_avatar(), settings)
    session.push_audio(speech)
    session.end_input()
    frames = [(f.image.copy(), f.audio.copy()) async for f in session.frames()]
    assert session.error is None, session.error
    await session.close()
    return frames


async def render_single_process(args, speech: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """`render_offline` on the single-process engine built from `args`. Ray starts a worker with
    OMP_NUM_THREADS from its CPUs (1 here): the same thread count here, so CPU reductions add in the
    same order (else the odd pixel differs by 1)."""
    import torch

    from server.cli import make_generator
    from streaming.engine import Engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = Engine(await asyncio.to_thread(make_generator, args))
    try:
        return await render_offline(engine, speech)
    finally:
        await engine.shutdown()
        torch.set_num_threads(threads)


@pytest.mark.parametrize("ranks", [1, 2], ids=["one-process", "sequence-parallel-gloo"])
async def test_a_tiny_random_infinitetalk_worker_makes_the_frames_the_single_process_engine_makes(
        ray_cluster, speech_dir, ranks):
    """ranks=2: the worker is a 2-process sequence-parallel group (gloo) in a placement group on a node
    that joins for it (half a CPU per rank: the other nodes' CPUs are the lite workers'); as under
    torchrun (tests/server/test_infinitetalk_server.py) its frames equal one process's within 1. Then
    its rank 0 is killed, later its follower: each time the group is made again and makes the same frames."""
    from server.cli import parser
    from server.cluster.gateway import start_cluster_engine
    from server.cluster.options import ClusterOptions

    args = parser().parse_args(TINY)
    remote_args = parser().parse_args(TINY + ["--sequence-parallel"] * (ranks > 1))
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 2].astype(np.float32) / 32768.0

    async def render(engine) -> list:
        return await render_offline(engine, speech)

    local = await render_single_process(args, speech)
    if ranks > 1:
        add_node(ray_cluster)
    options = ClusterOptions(ray_cluster.address, 1, cpus_per_worker=ranks - 1, sessions_per_worker=1,
                             ranks_per_worker=ranks)
    cluster = await start_cluster_engine(options, remote_args, start_timeout_s=120)
    renders = []
    try:
        assert cluster.generator.name == "infinitetalk"
        assert cluster.pool.workers[0].info["world_size"] == ranks
        renders.append(await render(cluster))
        worker = cluster.pool.workers[0]
        # rank 0 dies, then a follower: each time the pool removes the whole group and makes it again
        victims = [] if ranks == 1 else [lambda: worker.info["pid"], lambda: worker.followers.pids[0]]
        for victim in victims:
            old_pid, pid = worker.info["pid"], victim()
            os.kill(pid, signal.SIGKILL)
            for _ in range(300):
                if worker.alive and worker.info.get("pid") != old_pid:
                    break
                await asyncio.sleep(0.2)
            assert worker.alive and worker.info["pid"] != old_pid and worker.info["world_size"] == 2
            assert pid not in worker.followers.pids
            renders.append(await render(cluster))
    finally:
        await cluster.shutdown()
    for remote in renders:
        assert len(remote) == len(local) >= 50
        for i, ((img_r, pcm_r), (img_l, pcm_l)) in enumerate(zip(remote, local, strict=True)):
            if ranks == 1:
                np.testing.assert_array_equal(img_r, img_l, err_msg=f"frame {i}")
            else:
                assert np.abs(img_r.astype(int) - img_l.astype(int)).max() <= 1, f"frame {i}"
            np.testing.assert_array_equal(pcm_r, pcm_l, err_msg=f"audio of frame {i}")


async def test_a_tiny_random_flashhead_pro_worker_makes_the_frames_the_single_process_engine_makes(
        ray_cluster, speech_dir, tmp_path):
    """`serve --preset flashhead-pro --weights DIR` with --cluster: the worker loads the tiny release
    through the real loaders and, with the same seed, makes exactly the frames of one process."""
    from model.flashhead.tiny import write_tiny_flashhead
    from server.cli import parser
    from server.cluster.gateway import start_cluster_engine
    from server.cluster.options import ClusterOptions

    root = write_tiny_flashhead(tmp_path / "SoulX-FlashHead-1_3B")
    args = parser().parse_args(["serve", "--preset", "flashhead-pro", "--weights", str(root), "--size", "32x32",
                                "--seed", "3", "--log-level", "warning"])
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 2].astype(np.float32) / 32768.0
    local = await render_single_process(args, speech)
    options = ClusterOptions(ray_cluster.address, 1, cpus_per_worker=0, sessions_per_worker=1)
    cluster = await start_cluster_engine(options, args, start_timeout_s=120)
    try:
        assert cluster.generator.name == "flashhead"
        assert "SoulX-FlashHead-1.3B Pro" in cluster.generator.description
        assert cluster.generator.window.new_frames == 28
        remote = await render_offline(cluster, speech)
    finally:
        await cluster.shutdown()
    assert len(remote) == len(local) == 2 * 28  # 2 s of speech: two whole chunks of 28 new frames
    for i, ((img_r, pcm_r), (img_l, pcm_l)) in enumerate(zip(remote, local, strict=True)):
        np.testing.assert_array_equal(img_r, img_l, err_msg=f"frame {i}")
        np.testing.assert_array_equal(pcm_r, pcm_l, err_msg=f"audio of frame {i}")
    assert np.std(np.stack([img for img, _ in local]).astype(float)) > 1  # not a blank video


async def test_more_gpus_per_worker_than_any_node_has_is_a_one_line_error(ray_address):
    from server.cli import parser
    from server.cluster.gateway import start_cluster_engine
    from server.cluster.options import ClusterOptions, ClusterUnavailable

    args = parser().parse_args(["serve", "--backend", "lite"])
    with pytest.raises(ClusterUnavailable) as err:
        await start_cluster_engine(ClusterOptions(ray_address, 1, gpus_per_worker=2), args, start_timeout_s=10)
    assert str(err.value) == ("--gpus-per-worker 2: no node of the cluster has that many GPUs "
                              "(the most on one node is 0)")


def test_an_unknown_cluster_address_and_a_missing_ray_are_one_line_errors(capsys):
    unknown = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--cluster", "127.0.0.1:1"],
                               stderr=subprocess.PIPE, text=True)
    no_ray = subprocess.Popen([sys.executable, "-c", "import sys; sys.modules['ray'] = None; "
                               "from server.cli import main; sys.exit(main(['serve', '--cluster', 'local:2']))"],
                              stderr=subprocess.PIPE, text=True)
    err_unknown = unknown.communicate(timeout=60)[1].strip().splitlines()
    err_no_ray = no_ray.communicate(timeout=60)[1].strip().splitlines()
    assert unknown.returncode == 2 and err_unknown == [
        "infinitetalk-live: cannot reach a Ray head at 127.0.0.1:1: Connection refused "
        "(start one with `ray start --head`)"]
    assert no_ray.returncode == 2 and err_no_ray == [
        "infinitetalk-live: --cluster needs Ray, which is not installed: pip install 'infinitetalk-live[cluster]'"]
    assert cli_main(["serve", "--cluster", "local:0"]) == 2
    assert "N in local:N must be a number of workers from 1 to 64" in capsys.readouterr().err
    assert cli_main(["serve", "--sessions-per-worker", "2", "--port", "0"]) == 2  # a cluster flag, no cluster
    assert capsys.readouterr().err.strip() == ("infinitetalk-live: --sessions-per-worker apply only with --cluster "
                                               "(docs/cluster.md)")
    assert cli_main(["serve", "--cluster", "local:2", "--preset", "tiny-random", "--sequence-parallel"]) == 2
    assert "needs 2 or more ranks per worker" in capsys.readouterr().err
