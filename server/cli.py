"""The `infinitetalk-live` command: `serve` (the server), `render` (files -> mp4) and `bench` (speed, as JSON)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.backends import BACKENDS, BackendUnavailable, create_generator

from .cli_security import (
    OptionError,
    add_security_options,
    check_token_lengths,
    read_token_file,
    security_config,
    ssl_context,
)

if TYPE_CHECKING:
    from streaming.generator import Avatar

log = logging.getLogger("infinitetalk-live")

PROG = "infinitetalk-live"
NOT_YET: dict[str, str] = {}


def default_avatar_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / PROG / "avatars"


def builtin_avatars() -> tuple[dict[str, Callable[[], Avatar]], str]:
    """The built-in avatars shipped with streaming/ (name -> loader) and the default name."""
    from streaming.avatars import BUILTIN_AVATARS, DEFAULT_AVATAR, builtin_avatar_path, load_avatar

    def loader(name: str) -> Callable[[], Avatar]:
        return lambda: load_avatar(builtin_avatar_path(name), name=name)

    return {name: loader(name) for name in BUILTIN_AVATARS}, DEFAULT_AVATAR


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Real-time talking-avatar server: speech in, video out.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{serve,render,bench}")
    s = sub.add_parser("serve", help="run the server (WebRTC + websocket + the browser demo page)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 = all)")
    s.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 = any free port)")
    s.add_argument("--backend", default="lite", choices=sorted(BACKENDS),
                   help="video backend (default lite: " + BACKENDS["lite"] + ")")
    s.add_argument("--avatar", default=None, help="default avatar name (a built-in or an image in --avatar-dir)")
    s.add_argument("--avatar-dir", type=Path, default=None,
                   help=f"folder of avatar images and uploads (default {default_avatar_dir()})")
    s.add_argument("--max-sessions", type=int, default=8, help="live sessions over all clients (default 8)")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest avatar upload in MB (default 10)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_security_options(s)
    add_backend_options(s)
    r = sub.add_parser("render", help="render speech files to an mp4 offline, as fast as the backend goes")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="still portrait to animate")
    src.add_argument("--video", type=Path, help="video whose person is made to speak (loops if shorter)")
    r.add_argument("--audio", type=Path, required=True, help="speech of speaker 1 (any format PyAV decodes)")
    for i in (2, 3, 4):
        r.add_argument(f"--audio{i}", type=Path, default=None, help=f"speech of speaker {i} (multi-speaker)")
    r.add_argument("--speaker-box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="pixel box of a speaker on the source, once per speaker (default: equal vertical strips)")
    mask = r.add_mutually_exclusive_group()
    mask.add_argument("--mask-box", metavar="X0,Y0,X1,Y1",
                      help="regenerate only this box of the source (e.g. the head of a --video) and keep the rest")
    mask.add_argument("--mask", type=Path, help="mask image, white where the picture is regenerated")
    r.add_argument("-o", "--output", type=Path, required=True, help="mp4 file to write")
    r.add_argument("--backend", default="infinitetalk", choices=sorted(BACKENDS), help="default infinitetalk")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    add_backend_options(r)
    b = sub.add_parser("bench", help="measure speed (stages, real-time factor, latency, sessions, memory) as JSON",
                       description="Benchmark the infinitetalk backend with random weights: tiny on CPU "
                                   "(--preset tiny-random, the default) or the real 14B shape (--shape 14b "
                                   "--device cuda). Prints one JSON object.")
    b.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    add_backend_options(b)
    b.set_defaults(preset="tiny-random", backend="infinitetalk")
    from streaming.benchmark.options import add_bench_arguments

    add_bench_arguments(b)
    return p


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 448x448, got {text!r}") from None
    return h, w


def _lora(text: str) -> tuple[Path, float]:
    path, _, strength = text.partition(":")
    try:
        return Path(path), float(strength) if strength else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lora takes PATH[:STRENGTH], got {text!r}") from None


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Options of the infinitetalk backend (ignored by lite)."""
    g = p.add_argument_group("infinitetalk backend")
    g.add_argument("--weights", type=Path,
                   help="folder with the InfiniteTalk release layout or SoulX-FlashTalk-14B (detected; see docs)")
    g.add_argument("--weights-config", type=Path, help="JSON file naming every model file explicitly")
    g.add_argument("--preset", default=None,
                   help="generation settings: infinitetalk (default for InfiniteTalk weights), flashtalk (default "
                        "for SoulX-FlashTalk-14B: 33-frame windows, 4 steps, 768x448), infinitetalk-lowlatency, "
                        "infinitetalk-4step, tiny-random (a random tiny model: its video is noise)")
    g.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    g.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="DiT weights (default bf16 on CUDA, fp32 on CPU)")
    g.add_argument("--fp8", choices=["row", "tensor", "none"],
                   help="fp8 DiT block linears: activations scaled per row or tensor (scaled matmuls on Ada/Hopper), "
                        "or weight-only (none: memory, not speed)")
    g.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks")
    g.add_argument("--cuda-graphs", action="store_true", help="replay DiT forwards from CUDA graphs")
    g.add_argument("--sequence-parallel", action="store_true",
                   help="under torchrun: split the DiT over every process (Ulysses); rank 0 serves, the others follow")
    g.add_argument("--vae-split", action="store_true",
                   help="with --sequence-parallel: split VAE encode/decode into spatial tiles over the processes "
                        "(SoulX-FlashTalk's multi-GPU VAE; faster, approximate at the tile seams)")
    g.add_argument("--vae-split-halo", type=int, metavar="N",
                   help="with --vae-split: latent positions (8 pixels each) decoded around each tile and cropped "
                        "(default 2, the reference's; more: smaller seams, more work; encode uses half)")
    g.add_argument("--teacache", type=float, metavar="THRESHOLD",
                   help="skip DiT steps whose input barely changed (e.g. 0.2; pays with many steps)")
    g.add_argument("--size", type=_size, help="generation size HEIGHTxWIDTH (default: 480p bucket of the avatar)")
    g.add_argument("--frames", type=int, help="frames per window, 4n+1 (preset default)")
    g.add_argument("--motion-frames", type=int, help="frames carried into the next window, 4n+1")
    g.add_argument("--steps", type=int, help="sampling steps")
    g.add_argument("--shift", type=float, help="timestep shift")
    g.add_argument("--text-scale", type=float, help="text guidance scale (1 = off)")
    g.add_argument("--audio-scale", type=float, help="audio guidance scale (1 = off)")
    g.add_argument("--colour-strength", type=float, help="colour correction strength 0..1 (default 1)")
    g.add_argument("--seed", type=int, default=0, help="noise seed (same audio + seed -> same video)")
    g.add_argument("--lora", type=_lora, action="append", default=[], metavar="PATH[:STRENGTH]",
                   help="LoRA merged at load, e.g. the lightx2v 4-step LoRA (repeatable)")
    g.add_argument("--prompt", help="text prompt (needs the umT5 encoder in the weights folder)")
    g.add_argument("--negative-prompt", help="negative prompt (default: the reference's)")
    g.add_argument("--audio-features", choices=["incremental", "rolling"], default=None,
                   help="speech features: incremental (wav2vec2 with 0.52 s look-ahead, equal to the whole clip's; "
                        "default) or rolling (SoulX-FlashTalk's: last 8 s re-encoded per window, no look-ahead; "
                        "default of the flashtalk preset)")
    g.add_argument("--idle", choices=["generate", "source"], default="generate",
                   help="when nobody speaks: generate with silent audio, or play a video avatar's source")
    g.add_argument("--verify-weights", choices=["full", "size", "off"], default="full",
                   help="check the weight files against weights.sha256.json (recorded at the first good load): "
                        "full = sizes and sha256 (default), size = sizes only (fast), off")


def backend_options(args: argparse.Namespace) -> dict:
    """The keyword options `create_generator(args.backend, ...)` takes for the chosen backend."""
    if args.backend != "infinitetalk":
        return {}
    return dict(
        weights=args.weights, weights_config=args.weights_config, preset=args.preset, device=args.device,
        dtype=args.dtype, size=args.size, frames=args.frames, motion_frames=args.motion_frames, steps=args.steps,
        shift=args.shift, text_scale=args.text_scale, audio_scale=args.audio_scale,
        colour_strength=args.colour_strength, seed=args.seed, loras=tuple(args.lora), prompt=args.prompt,
        negative_prompt=args.negative_prompt, idle=args.idle, audio_features=args.audio_features, fp8=args.fp8, compile=args.compile,
        cuda_graphs=args.cuda_graphs, teacache=args.teacache, sequence_parallel=args.sequence_parallel,
        vae_split=args.vae_split, vae_split_halo=args.vae_split_halo, verify_weights=args.verify_weights,
    )


def make_generator(args: argparse.Namespace):
    """Build the backend or print why not (missing weights are listed by name) and return None."""
    from model.infinitetalk import MissingWeightsError

    try:
        return create_generator(args.backend, **backend_options(args))
    except MissingWeightsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
    except (BackendUnavailable, ValueError, OSError) as exc:
        print(f"{PROG}: cannot start backend {args.backend}: {exc}", file=sys.stderr)
    return None


def reload_tokens(path: Path, app) -> None:
    """SIGHUP: read the token file again (revoke or add tokens without a restart). A file that cannot be
    used keeps the tokens in force."""
    from .context import CONTEXT

    try:
        token, named = read_token_file(path)
        check_token_lengths(token, named)
    except OptionError as exc:
        log.error("token file not reloaded, the old tokens stay in force: %s", exc)
        return
    app[CONTEXT].security.replace_tokens(token, named)
    log.warning("access tokens reloaded from %s: %d token(s)", path, len(named) or 1)


def display_url(host: str, port: int, scheme: str = "http") -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"{scheme}://[{shown}]:{port}/" if ":" in shown else f"{scheme}://{shown}:{port}/"


async def serve(args: argparse.Namespace) -> int:
    # Imported here so `--help`, `render` and `bench` answer without loading the media stack.
    from aiohttp import web

    from streaming.engine import Engine

    from .app import build_app
    from .avatars import AvatarError, AvatarStore, UploadLimits
    from .config import ServerConfig

    try:
        network = security_config(args)
        tls = ssl_context(args)
    except OptionError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    generator = await asyncio.to_thread(make_generator, args)
    if generator is None:
        return 2
    builtins, default = builtin_avatars()
    max_bytes = int(args.max_upload_mb * 1024 * 1024)
    limits = UploadLimits(max_bytes=max_bytes)
    try:
        store = AvatarStore(builtins, args.avatar_dir or default_avatar_dir(), args.avatar or default, limits)
        await asyncio.to_thread(store.get, store.default)
    except (AvatarError, ValueError) as exc:
        print(f"{PROG}: cannot use avatar {args.avatar or default!r}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    config = ServerConfig(host=args.host, port=args.port, max_sessions=args.max_sessions, max_upload_bytes=max_bytes,
                          **network)
    engine = Engine(generator)
    app = build_app(config, engine, store, owns_engine=True)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port, ssl_context=tls)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    port = runner.addresses[0][1] if runner.addresses else args.port
    label = BACKENDS.get(generator.name, generator.description)
    url = display_url(args.host, port, "https" if tls else "http")
    print(f"{PROG}: open {url} in a browser (backend: {generator.name} — {label})", flush=True)
    if config.token is not None or config.tokens:
        named = f" ({len(config.tokens)} named tokens)" if config.tokens else ""
        print(f"{PROG}: an access token is required{named}: open {url}?token=YOUR_TOKEN, or type it in the page",
              flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.token_file is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_tokens, args.token_file, app)
    await stop.wait()
    print(f"{PROG}: shutting down", flush=True)
    await runner.cleanup()
    return 0


def read_mask(args: argparse.Namespace, avatar: Avatar):
    """--mask-box or --mask -> float [H, W] in [0, 1] on the source (1 = regenerate)."""
    import numpy as np
    from PIL import Image

    w, h = avatar.size
    if args.mask_box:
        try:
            x0, y0, x1, y1 = (int(v) for v in args.mask_box.split(","))
        except ValueError:
            raise ValueError(f"--mask-box takes X0,Y0,X1,Y1, got {args.mask_box!r}") from None
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"--mask-box {args.mask_box} is not inside the {w}x{h} source")
        m = np.zeros((h, w), np.float32)
        m[y0:y1, x0:x1] = 1.0
        return m
    with Image.open(args.mask) as img:
        gray = img.convert("L").resize((w, h), Image.BILINEAR)
    return np.asarray(gray, np.float32) / 255.0


def run_follower_rank(args: argparse.Namespace) -> int:
    """Ranks > 0 under torchrun with --sequence-parallel: serve rank 0's DiT (and split VAE) calls, no server."""
    from streaming.infinitetalk_setup import InfiniteTalkOptions, run_follower

    if args.backend != "infinitetalk":
        print(f"{PROG}: --sequence-parallel needs --backend infinitetalk", file=sys.stderr)
        return 2
    calls = run_follower(InfiniteTalkOptions(**backend_options(args)))
    log.info("rank %s served %d model calls", os.environ.get("RANK"), calls)
    return 0


async def render(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from streaming.avatars import load_avatar

    from .render import read_speech, render_to_mp4

    paths = [args.audio] + [p for p in (args.audio2, args.audio3, args.audio4) if p is not None]
    try:
        speech = await asyncio.to_thread(read_speech, paths)
        source = args.image or args.video
        avatar = await asyncio.to_thread(load_avatar, source, source.stem)
        if args.speaker_box:
            boxes = tuple(tuple(int(v) for v in b.split(",")) for b in args.speaker_box)
            if len(boxes) != len(paths) or any(len(b) != 4 for b in boxes):
                raise ValueError(f"give one --speaker-box X0,Y0,X1,Y1 per audio file ({len(paths)})")
            avatar = replace(avatar, speaker_boxes=boxes)
        if args.mask_box or args.mask:
            avatar = replace(avatar, regen_mask=await asyncio.to_thread(read_mask, args, avatar))
    except (OSError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    generator = await asyncio.to_thread(make_generator, args)
    if generator is None:
        return 2
    print(f"{PROG}: backend {generator.name}: {generator.description}", flush=True)
    result = await render_to_mp4(generator, avatar, speech, args.output, progress=not args.no_progress)
    print(f"{PROG}: wrote {args.output}: {result.frames} frames ({result.seconds_of_video:.2f} s) "
          f"in {result.wall_seconds:.1f} s ({result.realtime_factor:.2f}x real time)", flush=True)
    return 0


def bench(args: argparse.Namespace) -> int:
    from streaming.benchmark.options import options_from_args

    try:
        opts = options_from_args(args, backend_options(args))
        from streaming.benchmark.suite import run_bench

        report = run_bench(opts)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: bench: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in NOT_YET:
        print(f"{PROG}: {NOT_YET[args.command]}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "sequence_parallel", False) and int(os.environ.get("RANK", "0")) > 0:
        return run_follower_rank(args)
    if args.command == "render":
        return asyncio.run(render(args))
    if args.command == "bench":
        return bench(args)
    if args.max_sessions < 1:
        print(f"{PROG}: --max-sessions must be >= 1", file=sys.stderr)
        return 2
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
