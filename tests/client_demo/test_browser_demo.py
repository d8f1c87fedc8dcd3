"""The demo page in real headless Chromium against the real server app: WAV as the microphone,
WebRTC both ways, readouts filled from the data channel, interrupt back to idle.

Needs Debian's chromium at /usr/bin/chromium (scripts/test.sh installs it); without it this test
fails and says so. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path

import pytest

from ..helpers.chromium import chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]









async def test_demo_page_streams_the_microphone_and_shows_the_avatar(
    server, speech_dir: Path, artifacts_dir: Path
) -> None:
    # Chromium's fake capture reads 16 kHz mono PCM16 WAVs as they are (checked: levels follow the speech).
    wav = speech_dir / "speech_en1.wav"
    async with chromium(wav) as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 720})
        page_errors: list[str] = []
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        await page.goto(server.url + "/")

        # Banner names the backend the server runs; the picker lists the server's avatars.
        await page.wait_for_function(
            "d => document.querySelector('#backend').textContent.includes(d)", arg=server.info["backend_description"],
            timeout=10_000,
        )
        names = [a["name"] for a in server.avatars["avatars"]]
        await page.wait_for_function(f"document.querySelectorAll('#avatar-select option').length === {len(names)}")
        assert await page.input_value("#avatar-select") == server.avatars["default"]
        thumbs_ok = await page.evaluate(
            "() => Promise.all([...document.querySelectorAll('#avatar-thumbs img')].map(i => i.decode()"
            ".then(() => i.naturalWidth > 0, () => false)))"
        )
        assert thumbs_ok and all(thumbs_ok), "avatar thumbnails did not load"

        await page.click("#start")
        await page.wait_for_function("window.avatarDemo.stats.rvfcFrames > 5", timeout=20_000)
        before = await page.evaluate("window.avatarDemo.stats.rvfcFrames")
        await page.wait_for_timeout(2000)
        after = await page.evaluate("window.avatarDemo.stats.rvfcFrames")
        fps = (after - before) / 2.0
        assert fps > 12, f"only {fps:.1f} frames/s reached the <video> (server paces {server.info['fps']})"

        await page.wait_for_function(
            "/^\\d+ ms$/.test(document.querySelector('#latency').textContent)", timeout=15_000
        )
        latency_text = await page.inner_text("#latency")
        assert 0 < int(latency_text.split()[0]) < 3000
        assert re.fullmatch(r"\d+ fps", await page.inner_text("#fps"))
        await page.wait_for_function("window.avatarDemo.stats.stateHistory.includes('speaking')", timeout=15_000)
        video = await page.evaluate(
            "(() => { const v = document.querySelector('#video');"
            " return {w: v.videoWidth, h: v.videoHeight, audio: v.srcObject.getAudioTracks().length,"
            " paused: v.paused}; })()"
        )
        assert video["w"] > 0 and video["h"] > 0 and not video["paused"]
        assert video["audio"] == 1, "the returned speech track is not in the video element's stream"
        assert await page.is_hidden("#still"), "the avatar's still covers the call's video"
        await page.screenshot(path=str(artifacts_dir / "browser_demo_speaking.png"))

        # Stop talking (a muted track sends silence), interrupt: the readout goes back to idle.
        await page.click("#mute")
        mark = await page.evaluate("window.avatarDemo.stats.stateHistory.length")
        await page.click("#interrupt")
        await page.wait_for_function(
            f"(() => {{ const h = window.avatarDemo.stats.stateHistory.slice({mark});"
            " const i = h.indexOf('interrupted'); return i >= 0 && h.slice(i + 1).includes('idle'); })()",
            timeout=10_000,
        )
        await page.wait_for_function("document.querySelector('#state').textContent === 'idle'", timeout=5_000)
        assert await page.is_hidden("#error"), await page.inner_text("#error")
        await page.screenshot(path=str(artifacts_dir / "browser_demo_idle.png"))

        # Switching avatars while connected restarts the session with the new one (set_avatar).
        first_session = await page.evaluate("window.avatarDemo.stats.sessionId")
        other = next(n for n in names if n != server.avatars["default"])
        await page.click(f"#avatar-thumbs .thumb[data-name='{other}']")
        await page.wait_for_function(
            f"window.avatarDemo.stats.sessionId && window.avatarDemo.stats.sessionId !== '{first_session}'",
            timeout=10_000,
        )
        assert await page.input_value("#avatar-select") == other
        frames = await page.evaluate("window.avatarDemo.stats.rvfcFrames")
        await page.wait_for_function(f"window.avatarDemo.stats.rvfcFrames > {frames + 10}", timeout=10_000)

        await page.click("#stop")
        assert await page.inner_text("#state") == "disconnected"
        assert await page.is_visible("#still"), "after Stop the stage is black instead of the avatar's still"
        assert await _session_freed(server), "Stop left the session open on the server"
        assert page_errors == []


STILL = """(() => { const i = document.querySelector('#still'); const r = i.getBoundingClientRect();
  return {src: i.currentSrc, loaded: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight,
          shown: !i.hidden && getComputedStyle(i).display !== 'none' && r.width > 0 && r.height > 0}; })()"""


async def test_before_start_the_stage_shows_the_chosen_avatar_and_nothing_the_page_loads_is_missing(
    server, speech_dir: Path, artifacts_dir: Path
) -> None:
    """No black box before Start: the stage shows the chosen avatar's still, loaded from the server, and
    follows the picker. Every request the page makes is found, its icon too (it used to log a 404 for
    /favicon.ico); headless Chromium may not fetch icons, so the declared icon is also fetched here."""
    async with chromium(speech_dir / "speech_de1.wav") as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 720})
        missing: list[str] = []
        page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        await page.goto(server.url + "/")
        await page.wait_for_function("document.querySelectorAll('#avatar-select option').length > 0")
        default = server.avatars["default"]
        await page.wait_for_function(f"(() => {{ const s = {STILL}; return s.loaded && s.shown; }})()", timeout=10_000)
        still = await page.evaluate(STILL)
        assert still["src"].endswith(f"/api/avatars/{default}/thumbnail"), still
        assert still["w"] > 0 and still["h"] > 0
        assert await page.inner_text("#state") == "disconnected"  # before Start
        await page.screenshot(path=str(artifacts_dir / "browser_demo_before_start.png"))

        other = next(a["name"] for a in server.avatars["avatars"] if a["name"] != default)
        await page.click(f"#avatar-thumbs .thumb[data-name='{other}']")
        await page.wait_for_function(
            f"(() => {{ const s = {STILL}; return s.loaded && s.shown && s.src.endsWith('/api/avatars/{other}/thumbnail'); }})()",
            timeout=10_000,
        )

        icon = await page.evaluate(
            "async () => { const l = document.querySelector('link[rel~=icon]'); if (!l) return null;"
            " const r = await fetch(l.href); return {status: r.status, type: r.headers.get('content-type'),"
            " size: (await r.arrayBuffer()).byteLength}; }"
        )
        assert icon is not None, "the page declares no icon: browsers ask for /favicon.ico and get a 404"
        assert icon["status"] == 200 and icon["type"].startswith("image/") and icon["size"] > 0, icon
        await page.wait_for_load_state("networkidle")
        assert missing == [], f"requests that failed: {missing}"


async def _session_freed(server, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while server.engine.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not server.engine.sessions


def _strip_candidates(sdp: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith("a=candidate"))


async def _without_ice_candidates(route) -> None:  # noqa: ANN001 - playwright Route
    """POST /offer with the candidates taken out of the offer and of the answer."""
    body = json.loads(route.request.post_data or "{}")
    body["sdp"] = _strip_candidates(body["sdp"])
    response = await route.fetch(post_data=json.dumps(body))
    answer = await response.json()
    if "sdp" in answer:
        answer["sdp"] = _strip_candidates(answer["sdp"])
    await route.fulfill(response=response, json=answer)


async def test_leaving_the_page_mid_connect_frees_the_session(server, speech_dir: Path, caplog) -> None:
    """The page hangs up (DELETE /offer/{id}, keepalive) when it is left, even before ICE completes:
    a peer gone during ICE sends nothing the server could see."""
    caplog.set_level(logging.INFO, logger="server.webrtc")
    async with chromium(speech_dir / "speech_en1.wav") as browser:
        page = await browser.new_page()
        # No ICE candidates either way, so the call is certainly still connecting when the page goes
        # (once connected, Chromium's own close would free the session before the hang-up arrives).
        await page.route("**/offer", _without_ice_candidates)
        await page.goto(server.url + "/")
        await page.wait_for_function("document.querySelectorAll('#avatar-select option').length > 0")
        await page.click("#start")
        await page.wait_for_function("window.avatarDemo.sessionId !== null", timeout=10_000)
        assert server.engine.sessions
        await page.wait_for_timeout(300)
        assert await page.evaluate("window.avatarDemo.pc.connectionState") in ("new", "connecting")
        await page.goto("about:blank")
        assert await _session_freed(server), "leaving the page left the session open on the server"
        assert "closing: hung up by the client" in caplog.text


async def test_demo_page_shows_server_errors(server, speech_dir: Path, artifacts_dir: Path) -> None:
    """An offer for an avatar that does not exist comes back 404 with a JSON error: the page shows it."""
    async with chromium(speech_dir / "speech_de1.wav") as browser:
        page = await browser.new_page()
        await page.goto(server.url + "/")
        await page.wait_for_function("document.querySelectorAll('#avatar-select option').length > 0")
        await page.evaluate("window.avatarDemo.avatar = 'no_such_avatar'")
        await page.click("#start")
        await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
        text = await page.inner_text("#error-text")
        assert "404" not in text or "unknown_avatar" in text
        assert "unknown_avatar" in text and "no_such_avatar" in text, text
        assert await page.inner_text("#state") == "disconnected"
        assert await page.is_enabled("#start")
        await page.screenshot(path=str(artifacts_dir / "browser_demo_error.png"))


async def test_demo_page_uploads_an_avatar_and_selects_it(server, speech_dir: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    img = np.zeros((200, 160, 3), np.uint8)
    img[40:160, 30:130] = (60, 140, 220)
    ok, png = cv2.imencode(".png", img)
    assert ok
    async with chromium(speech_dir / "speech_de1.wav") as browser:
        page = await browser.new_page()
        await page.goto(server.url + "/")
        n = len(server.avatars["avatars"])
        await page.wait_for_function(f"document.querySelectorAll('#avatar-select option').length === {n}")
        await page.click("#upload-box summary")
        await page.set_input_files("#avatar-file", files=[{"name": "my face.png", "mimeType": "image/png",
                                                            "buffer": png.tobytes()}])
        await page.click("#upload")
        await page.wait_for_function(f"document.querySelectorAll('#avatar-select option').length === {n + 1}")
        assert await page.input_value("#avatar-select") == "my_face"
        assert await page.is_hidden("#error")
        assert await page.evaluate(
            "document.querySelector(\"#avatar-thumbs .thumb[data-name='my_face']\").classList.contains('selected')"
        )


async def test_fps_readout_falls_back_to_webrtc_stats_without_video_frame_callbacks(server, speech_dir: Path) -> None:
    async with chromium(speech_dir / "speech_de1.wav") as browser:
        page = await browser.new_page()
        await page.add_init_script("delete HTMLVideoElement.prototype.requestVideoFrameCallback")
        await page.goto(server.url + "/")
        await page.wait_for_function("document.querySelectorAll('#avatar-select option').length > 0")
        await page.click("#start")
        await page.wait_for_function("window.avatarDemo.stats.decodedFrames > 25", timeout=20_000)
        await page.wait_for_function(
            "parseInt(document.querySelector('#fps').textContent) > 10", timeout=5_000
        )
        assert await page.evaluate("window.avatarDemo.stats.rvfcFrames") == 0
