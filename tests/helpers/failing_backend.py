"""A backend that fails for one avatar, and a frame counter: shared by the session and fault tests."""

from __future__ import annotations

import aiohttp

from .server_app import BlockPatternGenerator


class FailsForOneAvatar(BlockPatternGenerator):
    """Raises on window `fail_on_window` of sessions opened with the avatar `doomed` only."""

    def __init__(self, doomed: str, **kw) -> None:
        super().__init__(**kw)
        self.doomed = doomed
        self.failing_window = self.fail_on_window
        self.fail_on_window = None

    def open_session(self, session_id, avatar, speakers=1):
        state = super().open_session(session_id, avatar, speakers)
        state["doomed"] = avatar.name == self.doomed
        return state

    def generate(self, state, job):
        if state["doomed"] and job.index == self.failing_window:
            raise RuntimeError("simulated CUDA out of memory")
        yield from super().generate(state, job)


async def count_frames(ws, log: list) -> int | None:
    """Collect messages; return the close code the server sent."""
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return msg.data
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return None
        log.append(msg)
