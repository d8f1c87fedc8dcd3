"""Example LiveKit Agents (1.x) voice agent with this server as its avatar (docs/agents.md).

Three processes besides the LiveKit server: this project's server, the avatar launcher
(`python -m client_demo.agents.livekit_launcher --server ws://127.0.0.1:8080/ws`), and this agent:

    pip install 'infinitetalk-live[agents]' 'livekit-agents[deepgram,openai,cartesia,silero]'
    export LIVEKIT_URL=wss://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=... CARTESIA_API_KEY=...
    INFINITETALK_LAUNCH=http://127.0.0.1:8089/launch python -m client_demo.agents.livekit_agent dev

When a user joins a room, the agent starts, asks the launcher for an avatar worker in that room, and
sends its speech to it; the user sees and hears the avatar (published on behalf of the agent). No
LiveKit server can run where this project is tested, so this file is not run by the test suite;
the parts below the room are (tests/client_demo/test_livekit_*.py).
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentSession, JobContext, WorkerOptions, cli

from .livekit_plugin import InfiniteTalkAvatarSession

INSTRUCTIONS = "You are a friendly assistant with a face. Answer in one or two short spoken sentences."


async def entrypoint(ctx: JobContext) -> None:
    from livekit.plugins import cartesia, deepgram, openai, silero

    await ctx.connect()
    session = AgentSession(stt=deepgram.STT(), llm=openai.LLM(), tts=cartesia.TTS(), vad=silero.VAD.load())
    avatar = InfiniteTalkAvatarSession(launch_url=os.getenv("INFINITETALK_LAUNCH", "http://127.0.0.1:8089/launch"))
    await avatar.start(session, room=ctx.room)  # before session.start: the speech goes to the avatar
    await session.start(agent=Agent(instructions=INSTRUCTIONS), room=ctx.room)
    await session.generate_reply(instructions="Greet the user.")


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
