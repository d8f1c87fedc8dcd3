"""Example pipecat (1.x) voice agent with this server as its avatar (docs/agents.md).

A browser talks to the bot over pipecat's SmallWebRTC transport; the bot hears it (Deepgram),
answers (OpenAI), speaks (Cartesia), and the avatar service turns the speech into video of the
avatar saying it, in sync, on the transport's video track. Run this project's server first, then:

    pip install 'infinitetalk-live[agents]' 'pipecat-ai[runner,webrtc,silero,deepgram,openai,cartesia]'
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=... CARTESIA_API_KEY=...
    INFINITETALK_WS=ws://127.0.0.1:8080/ws python -m client_demo.agents.pipecat_bot
    # open the URL pipecat's runner prints (http://localhost:7860/client)

The cloud services need keys and the network, so this bot is not run by the test suite; the avatar
service it wires in is (tests/client_demo/test_pipecat_avatar.py, a real pipeline against a server).
"""

from __future__ import annotations

import os

from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport, TransportParams

from .pipecat_avatar import InfiniteTalkVideoService

SYSTEM_PROMPT = ("You are a friendly assistant with a face. Answer in one or two short spoken sentences, "
                 "without lists or markdown.")
AVATAR_SIZE = 512  # the lite backend's default frame size; set to the server's `ready` width/height


def transport_params() -> TransportParams:
    """Audio in and out, and a live video out the size of the avatar's frames."""
    return TransportParams(audio_in_enabled=True, audio_out_enabled=True, video_out_enabled=True,
                           video_out_is_live=True, video_out_width=AVATAR_SIZE, video_out_height=AVATAR_SIZE)


def agent_pipeline(transport: BaseTransport, stt: FrameProcessor, llm: FrameProcessor, tts: FrameProcessor,
                   avatar: InfiniteTalkVideoService) -> Pipeline:
    """The usual voice agent, with the avatar right after the TTS (it takes the TTS audio and gives
    video plus that audio, in sync, to the transport)."""
    context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT}])
    aggregators = LLMContextAggregatorPair(context)
    return Pipeline([transport.input(), stt, aggregators.user(), llm, tts, avatar, transport.output(),
                     aggregators.assistant()])


async def bot(runner_args) -> None:
    """pipecat's runner entry point (`pipecat.runner.run.main` calls it per browser connection)."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.runner.utils import create_transport
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.openai.llm import OpenAILLMService

    def webrtc_params() -> TransportParams:
        params = transport_params()
        params.vad_analyzer = SileroVADAnalyzer()
        return params

    transport = await create_transport(runner_args, {"webrtc": webrtc_params})
    avatar = InfiniteTalkVideoService(url=os.getenv("INFINITETALK_WS", "ws://127.0.0.1:8080/ws"),
                                      avatar=os.getenv("INFINITETALK_AVATAR"))
    pipeline = agent_pipeline(
        transport,
        DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"]),
        OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"]),
        CartesiaTTSService(api_key=os.environ["CARTESIA_API_KEY"],
                           voice_id=os.getenv("CARTESIA_VOICE", "71a7ad14-091c-4e8e-a314-022ece01c121")),
        avatar,
    )
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))
    await PipelineRunner(handle_sigint=False).run(worker)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
