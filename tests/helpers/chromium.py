"""Headless Chromium with a fake microphone (Debian's chromium driven by playwright; see TESTING.md)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    for p in CHROMIUM_CANDIDATES:
        if Path(p).is_file():
            return p
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    pytest.fail(
        "Chromium not found (looked for /usr/bin/chromium and chromium on PATH): install Debian's package "
        "with `apt-get install -y chromium` (scripts/test.sh does this) - never `playwright install`"
    )


@contextlib.asynccontextmanager
async def chromium(fake_mic_wav: Path) -> AsyncIterator[Browser]:
    """Headless Chromium whose microphone plays `fake_mic_wav`; closed on exit."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=chromium_args(fake_mic_wav))
        try:
            yield browser
        finally:
            await browser.close()


def chromium_args(fake_mic_wav: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_mic_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-quic",
    ]
