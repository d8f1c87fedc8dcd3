"""The agent side of the LiveKit avatar: an `AvatarSession` for LiveKit Agents 1.x (docs/agents.md).

In the agent's entrypoint, before `session.start(...)`:

    avatar = InfiniteTalkAvatarSession(launch_url="http://127.0.0.1:8089/launch")
    await avatar.start(session, room=ctx.room)

It mints a token for the avatar participant (identity `infinitetalk-avatar`, attribute
`lk.publish_on_behalf` = the agent's identity, so the room shows the avatar's tracks as the agent's),
asks the launch endpoint (`livekit_launcher.py`) to start a worker for the room, and routes the
agent's TTS audio to that participant (`DataStreamAudioOutput`: byte stream `lk.audio_stream`, RPCs
`lk.clear_buffer` / `lk.playback_finished`) at 16 kHz, the server's rate. Needs the `agents` extra.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
from livekit import api, rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import AvatarSession, DataStreamAudioOutput

from model.timebase import SAMPLE_RATE

AVATAR_IDENTITY = "infinitetalk-avatar"


def avatar_token(room_name: str, agent_identity: str, api_key: str, api_secret: str,
                 identity: str = AVATAR_IDENTITY) -> str:
    """A room token for the avatar worker: it may join `room_name` and publish on behalf of the agent."""
    return (api.AccessToken(api_key, api_secret)
            .with_identity(identity)
            .with_name("InfiniteTalk avatar")
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room_name))
            .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity})
            .to_jwt())


class InfiniteTalkAvatarSession(AvatarSession):
    """See the module docstring. launch_url: the launch endpoint; livekit_url / api_key / api_secret
    default to LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET."""

    def __init__(self, launch_url: str, *, identity: str = AVATAR_IDENTITY, livekit_url: str | None = None,
                 api_key: str | None = None, api_secret: str | None = None) -> None:
        super().__init__()
        self.launch_url = launch_url
        self._identity = identity
        self._livekit_url = livekit_url or os.getenv("LIVEKIT_URL", "")
        self._api_key = api_key or os.getenv("LIVEKIT_API_KEY", "")
        self._api_secret = api_secret or os.getenv("LIVEKIT_API_SECRET", "")
        if not (self._livekit_url and self._api_key and self._api_secret):
            raise ValueError("livekit_url, api_key and api_secret are needed (or LIVEKIT_URL, LIVEKIT_API_KEY, "
                             "LIVEKIT_API_SECRET)")

    @property
    def avatar_identity(self) -> str:
        return self._identity

    @property
    def provider(self) -> str:
        return "infinitetalk-live"

    def launch_request(self, room_name: str, agent_identity: str) -> dict[str, Any]:
        """The body posted to the launch endpoint."""
        token = avatar_token(room_name, agent_identity, self._api_key, self._api_secret, self._identity)
        return {"room_name": room_name, "url": self._livekit_url, "token": token}

    async def start(self, agent_session: Any, room: rtc.Room) -> None:  # type: ignore[override]
        await super().start(agent_session, room)
        body = self.launch_request(room.name, room.local_participant.identity)
        async with aiohttp.ClientSession() as http, http.post(self.launch_url, json=body) as resp:
            if resp.status != 202:
                raise RuntimeError(f"the avatar launcher answered {resp.status}: {await resp.text()}")
        sink = DataStreamAudioOutput(room, destination_identity=self._identity, sample_rate=SAMPLE_RATE,
                                     wait_remote_track=rtc.TrackKind.KIND_VIDEO)
        output = agent_session.output
        if hasattr(output, "replace_audio_tail"):
            output.replace_audio_tail(sink)
        else:  # livekit-agents before replace_audio_tail
            output.audio = sink
