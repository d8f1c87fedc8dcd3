"""The `infinitetalk-live` CLI as a user runs it: a real subprocess, real port, real signals."""

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


async def test_serve_prints_its_url_serves_health_and_exits_0_on_sigterm(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--port", "0", "--avatar-dir", str(tmp_path),
        "--log-level", "warning", cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.fullmatch(r"infinitetalk-live: open (http://127\.0\.0\.1:(\d+)/) in a browser "
                         r"\(backend: lite — CPU portrait animator, not InfiniteTalk\)\n", line)
        assert m, line
        url = m.group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "healthz") as r:
                assert r.status == 200 and (await r.json())["backend"] == "lite"
            async with http.get(url + "api/avatars") as r:
                assert (await r.json())["default"] == "astronaut"
            ws = await http.ws_connect(url.replace("http", "ws") + "ws")
            await ws.send_json({"type": "hello", "version": 1})
            ready = await asyncio.wait_for(ws.receive_json(), 10)
            assert ready["type"] == "ready" and ready["backend"] == "lite"
            proc.send_signal(signal.SIGTERM)
            while (msg := await asyncio.wait_for(ws.receive(), 10)).type != aiohttp.WSMsgType.CLOSE:
                pass
            assert msg.data == 1001
            await ws.close()
        assert await asyncio.wait_for(proc.wait(), 8) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_bench_is_listed_and_rejects_bad_options_and_infinitetalk_needs_weights():
    help_text = run_cli("--help").stdout
    assert all(cmd in help_text for cmd in ("serve", "render", "bench"))
    done = run_cli("bench", "--only", "nope")
    assert done.returncode == 2 and "unknown bench sections" in done.stderr
    done = run_cli("serve", "--backend", "infinitetalk")
    assert done.returncode == 2 and "--weights DIR" in done.stderr
    done = run_cli("serve", "--backend", "infinitetalk", "--preset", "tiny-random", "--vae-split")
    assert done.returncode == 2 and "add --sequence-parallel" in done.stderr
    done = run_cli("serve", "--backend", "infinitetalk", "--preset", "tiny-random", "--sequence-parallel",
                   "--vae-split", "--vae-split-halo", "-1")
    assert done.returncode == 2 and "--vae-split-halo must be >= 0" in done.stderr


async def test_sighup_reloads_the_token_file_and_a_broken_file_keeps_the_old_tokens(tmp_path):
    tokens = tmp_path / "tokens"
    alice, bob = "alice-token-0123456789", "bob-token-0123456789"
    tokens.write_text(f"alice {alice}\nbob {bob}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--port", "0", "--avatar-dir", str(tmp_path),
        "--token-file", str(tokens), "--log-level", "warning", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = re.search(r"open (http://\S+/) in a browser", (await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
        assert url, "no URL printed"
        metrics = url.group(1) + "metrics"

        async def status(token: str) -> int:
            async with http.get(metrics, headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status

        async def after_sighup(expect: dict[str, int]) -> None:
            proc.send_signal(signal.SIGHUP)
            for _ in range(50):
                if {t: await status(t) for t in expect} == expect:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"tokens not as expected after SIGHUP: {expect}")

        async with aiohttp.ClientSession() as http:
            assert await status(alice) == 200 and await status(bob) == 200
            tokens.write_text(f"bob {bob}\n")  # alice is revoked
            await after_sighup({alice: 401, bob: 200})
            tokens.write_text("")  # a broken file: the tokens in force stay
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert await status(bob) == 200 and await status(alice) == 401
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 8) == 0
        err = (await proc.stderr.read()).decode()
        assert "access tokens reloaded" in err and "not reloaded, the old tokens stay in force" in err
        assert alice not in err and bob not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
