"""The demo page against a server that requires an access token (docs/security.md), in headless
Chromium: the token from the page URL (then removed from the address bar) or typed in the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from server.app import build_app
from server.avatars import AvatarStore
from server.config import ServerConfig
from streaming.engine import Engine

from ..helpers.chromium import chromium
from ..helpers.demo_server import free_port, make_backend

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

TOKEN = "browser-token-0123456789"


@pytest.fixture
async def token_server(tmp_path: Path):
    generator, builtins, default = make_backend()
    app = build_app(ServerConfig(port=0, token=TOKEN), Engine(generator), AvatarStore(builtins, tmp_path, default),
                    owns_engine=True)
    runner = web.AppRunner(app, shutdown_timeout=5, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_demo_page_works_with_the_token_in_its_url_or_typed_in(token_server, speech_dir: Path) -> None:
    async with chromium(speech_dir / "speech_en1.wav") as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{token_server}/?token={TOKEN}")
        await page.wait_for_function("document.querySelectorAll('#avatar-select option').length > 1")
        assert TOKEN not in page.url  # taken from the URL, then removed from the address bar
        await page.wait_for_function("[...document.querySelectorAll('#avatar-thumbs img')].every(i => i.src)")
        assert await page.evaluate("[...document.querySelectorAll('#avatar-thumbs img')].every("
                                   "i => i.src.startsWith('blob:'))")
        thumbs = await page.evaluate(
            "() => Promise.all([...document.querySelectorAll('#avatar-thumbs img')].map(i => i.decode()"
            ".then(() => i.naturalWidth > 0, () => false)))")
        assert thumbs and all(thumbs), "thumbnails need the token too (fetched, shown as blobs)"
        await page.click("#start")
        await page.wait_for_function("window.avatarDemo.stats.rvfcFrames > 10", timeout=20_000)
        assert await page.is_hidden("#error"), await page.inner_text("#error")
        await page.click("#stop")

        # Without the token the page says what is missing; typing it in makes it work.
        page = await browser.new_page()
        await page.goto(token_server + "/")
        await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
        assert "access token" in await page.inner_text("#error-text")
        assert await page.is_visible("#token-box")
        assert await page.evaluate("document.querySelectorAll('#avatar-select option').length") == 0
        await page.fill("#token", TOKEN)
        await page.dispatch_event("#token", "change")
        await page.wait_for_function("document.querySelectorAll('#avatar-select option').length > 1")
        await page.click("#start")
        await page.wait_for_function("window.avatarDemo.stats.rvfcFrames > 10", timeout=20_000)
        await page.click("#stop")
        assert errors == []
