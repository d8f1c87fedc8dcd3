"""What the server log holds during a call: the operator's lines, not aioice's per-candidate-pair chatter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from server.ice import ICE_LOGGER, quiet_ice_logs

from ..helpers.rtc_client import RtcTestClient
from ..helpers.server_app import live_server


@contextlib.contextmanager
def fresh_ice_logger() -> Iterator[logging.Logger]:
    """aioice's logger as in a new process (no level of its own); restored afterwards."""
    ice_log = logging.getLogger(ICE_LOGGER)
    saved = ice_log.level
    ice_log.setLevel(logging.NOTSET)
    try:
        yield ice_log
    finally:
        ice_log.setLevel(saved)


async def test_a_webrtc_call_at_the_default_level_logs_the_session_but_no_ice_candidate_pairs(caplog):
    caplog.set_level(logging.INFO)  # `serve --log-level info`, the default
    with fresh_ice_logger():
        async with live_server() as srv:
            client = RtcTestClient(None)
            try:
                assert (await client.connect(srv.url))["status"] == 200
                await client.wait_for(lambda: len(client.video_times) >= 10, 10)
            finally:
                await client.close()
            end = asyncio.get_running_loop().time() + 5
            while srv.ctx.connections and asyncio.get_running_loop().time() < end:
                await asyncio.sleep(0.05)
            assert not srv.ctx.connections
    ice_info = [f"{r.name}: {r.getMessage()[:100]}" for r in caplog.records
                if r.name.split(".")[0] == ICE_LOGGER and r.levelno < logging.WARNING]
    assert ice_info == [], f"{len(ice_info)} aioice lines below WARNING, e.g. {ice_info[:3]}"
    ours = [r.getMessage() for r in caplog.records if r.name == "server.webrtc"]
    assert any("webrtc session" in m and "open for" in m for m in ours), ours
    assert any(m.endswith("connection connected") for m in ours), ours
    assert any(" closing: " in m for m in ours), ours


def test_at_debug_level_or_with_a_level_of_its_own_aioice_keeps_its_lines():
    root = logging.getLogger()
    saved = root.level
    try:
        with fresh_ice_logger() as ice_log:
            root.setLevel(logging.DEBUG)  # `--log-level debug`: the operator wants the ICE detail
            quiet_ice_logs()
            assert ice_log.getEffectiveLevel() == logging.DEBUG
            root.setLevel(logging.INFO)
            ice_log.setLevel(logging.INFO)  # a logging config that asks for aioice's lines
            quiet_ice_logs()
            assert ice_log.level == logging.INFO
            ice_log.setLevel(logging.NOTSET)
            quiet_ice_logs()
            assert ice_log.getEffectiveLevel() == logging.WARNING
    finally:
        root.setLevel(saved)
