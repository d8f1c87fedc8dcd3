"""Command-line client: talk (or play a file) to an infinitetalk-live server and see/save the avatar.

    python -m client_demo.mic_client                       # microphone, websocket, window or out.mp4
    python -m client_demo.mic_client -i speech.wav -o out.mp4 --transport webrtc

Also a library: `await run_client(ClientConfig(...))` returns a `RunSummary`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from model.timebase import SAMPLE_RATE
from streaming.media_files import Mp4Writer

from .audio_source import AudioSource, FileSource, MicrophoneUnavailable, MicSource
from .rtc_client import run_webrtc
from .sinks import FrameSink, MultiSink, WindowViewer, gui_available
from .summary import RunOptions, RunSummary
from .ws_client import ServerError, run_websocket

log = logging.getLogger(__name__)

DEFAULT_OUTPUT = "out.mp4"


@dataclass(frozen=True)
class ClientConfig:
    """input: an audio file, or None for the microphone. output: an mp4 path, or None.
    show: open a window (when OpenCV has a GUI). transport: "ws" or "webrtc".
    """

    options: RunOptions = field(default_factory=RunOptions)
    input: Path | None = None
    output: Path | None = None
    show: bool = False
    transport: str = "ws"
    device: str | None = None


def make_source(cfg: ClientConfig) -> AudioSource:
    opts = cfg.options
    if cfg.input is not None:
        realtime = not (opts.fast and cfg.transport == "ws")
        return FileSource(cfg.input, realtime=realtime, seconds=opts.seconds)
    device: int | str | None = int(cfg.device) if cfg.device and cfg.device.isdigit() else cfg.device
    return MicSource(device=device, seconds=opts.seconds)


def make_sink(cfg: ClientConfig) -> FrameSink | None:
    sinks: list[FrameSink] = []
    if cfg.show:
        sinks.append(WindowViewer())
    if cfg.output is not None:
        rate, channels = (SAMPLE_RATE, 1) if cfg.transport == "ws" else (48_000, 1)
        sinks.append(Mp4Writer(cfg.output, audio_rate=rate, audio_channels=channels))
    if not sinks:
        return None
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)


async def run_client(cfg: ClientConfig) -> RunSummary:
    """One session with the server; the sink is closed (mp4 finished) even when the session fails."""
    if cfg.transport not in ("ws", "webrtc"):
        raise ValueError(f"transport must be 'ws' or 'webrtc', got {cfg.transport!r}")
    if cfg.options.fast and cfg.transport == "webrtc":
        raise ValueError("--fast only works with --transport ws (WebRTC audio is real time by nature)")
    source = make_source(cfg)
    sink = make_sink(cfg)
    try:
        if cfg.transport == "ws":
            return await run_websocket(source, sink, cfg.options)
        return await run_webrtc(source, sink, cfg.options)
    finally:
        if sink is not None:
            sink.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client_demo.mic_client", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (default %(default)s)")
    p.add_argument("-i", "--input", type=Path, help="audio file to stream (any format PyAV reads); default: microphone")
    p.add_argument("-o", "--output", type=Path, help="write the returned video + audio to this mp4")
    p.add_argument("--avatar", help="avatar name (GET /api/avatars lists them); default: the server's")
    p.add_argument("--token", help="access token (sent as 'Authorization: Bearer' and ?token=)")
    p.add_argument("--transport", choices=("ws", "webrtc"), default="ws")
    p.add_argument("--speaker-id", type=int, default=0, help="speaker/channel id for websocket audio (0..3)")
    p.add_argument("--speakers", type=int, default=1, help="speakers in the session (websocket)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds of audio")
    p.add_argument("--interrupt-after", type=float, metavar="S", help="send an interrupt after S seconds of audio")
    p.add_argument("--fast", action="store_true", help="send a file faster than real time (websocket only)")
    p.add_argument("--device", help="microphone device (index or name; see python -m sounddevice)")
    p.add_argument("--no-window", action="store_true", help="never open a window")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> ClientConfig:
    opts = RunOptions(
        url=args.url, avatar=args.avatar, token=args.token, speaker_id=args.speaker_id, speakers=args.speakers,
        seconds=args.seconds, interrupt_after=args.interrupt_after, fast=args.fast,
    )
    show = not args.no_window and gui_available()
    output = args.output
    if output is None and not show:
        output = Path(DEFAULT_OUTPUT)
    return ClientConfig(opts, args.input, output, show, args.transport, args.device)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    if not cfg.show:
        print(f"no window (OpenCV has no GUI here or --no-window); writing {cfg.output}", file=sys.stderr)
    if cfg.input is None and cfg.options.seconds is None:
        print("streaming the microphone; press Ctrl-C to stop", file=sys.stderr)
    try:
        summary = asyncio.run(run_client(cfg))
    except MicrophoneUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ServerError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.text())
    if cfg.output is not None:
        print(f"saved {cfg.output}")
    return 1 if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
