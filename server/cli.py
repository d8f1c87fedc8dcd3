"""The `infinitetalk-live` command: `serve` (the server), `render` (files -> mp4) and `bench` (speed, as JSON).

The backends' flags are not listed here: each registered backend's options dataclass generates them
(`streaming.backends.flags`), so an option is defined once, next to what it configures.
"""

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
from typing import TYPE_CHECKING, Any

from streaming.backends import DEFAULT_BACKEND, Backend, BackendUnavailable, backends
from streaming.backends.flags import add_backend_flags, backend_from_args, backend_help

from .cli_security import (
    OptionError,
    add_security_options,
    check_token_lengths,
    read_token_file,
    security_config,
    ssl_context,
)

if TYPE_CHECKING:
    from streaming.engine import Engine
    from streaming.generator import Avatar, Generator

    from .avatars import AvatarStore
    from .cluster.engine import ClusterEngine

log = logging.getLogger("infinitetalk-live")

PROG = "infinitetalk-live"
LOG_LEVELS = ["debug", "info", "warning", "error"]


def default_avatar_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / PROG / "avatars"


def builtin_avatars() -> tuple[dict[str, Callable[[], Avatar]], str]:
    """The built-in avatars shipped with streaming/ (name -> loader) and the default name."""
    from streaming.avatars import BUILTIN_AVATARS, DEFAULT_AVATAR, builtin_avatar_path, load_avatar

    def loader(name: str) -> Callable[[], Avatar]:
        return lambda: load_avatar(builtin_avatar_path(name), name=name)

    return {name: loader(name) for name in BUILTIN_AVATARS}, DEFAULT_AVATAR


def _add_common(p: argparse.ArgumentParser, log_level: str) -> None:
    """--backend (listing the registered backends), --avatar-dir and --log-level, as serve and render share them."""
    p.add_argument("--backend", default=None, choices=sorted(backends()), help=backend_help())
    p.add_argument("--avatar-dir", type=Path, default=None,
                   help=f"folder of avatar images (and uploads) named by --avatar (default {default_avatar_dir()})")
    p.add_argument("--log-level", default=log_level, choices=LOG_LEVELS)


def _render_parser(sub: Any) -> None:
    r = sub.add_parser("render", help="render speech files to an mp4 offline, as fast as the backend goes")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="still portrait to animate")
    src.add_argument("--video", type=Path, help="video whose person is made to speak (loops if shorter)")
    src.add_argument("--avatar", help="a built-in avatar (e.g. astronaut) or an image in --avatar-dir, by name")
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
    r.add_argument("--crf", type=int, default=23, choices=range(52), metavar="0-51",
                   help="H.264 quality: lower is better and bigger, 0 is lossless (default 23; libx264 only)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(r, "warning")
    add_backend_flags(r)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Real-time talking-avatar server: speech in, video out.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{serve,render,bench}")
    s = sub.add_parser("serve", help="run the server (WebRTC + websocket + the browser demo page)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 = all)")
    s.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 = any free port)")
    s.add_argument("--avatar", default=None, help="default avatar name (a built-in or an image in --avatar-dir)")
    s.add_argument("--max-sessions", type=int, default=8, help="live sessions over all clients (default 8)")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest avatar upload in MB (default 10)")
    s.add_argument("--generated-buffer-s", type=float, default=300.0,
                   help="speech a generated-speech (TTS) session may buffer, in seconds (default 300)")
    _add_common(s, "info")
    add_security_options(s)
    add_backend_flags(s)
    from .cluster.options import add_cluster_flags

    add_cluster_flags(s)
    _render_parser(sub)
    b = sub.add_parser("bench", help="measure speed (stages, real-time factor, latency, sessions, memory) as JSON",
                       description="Benchmark the infinitetalk backend with random weights: tiny on CPU "
                                   "(--preset tiny-random, the default) or the real 14B shape (--shape 14b "
                                   "--device cuda); SoulX-FlashHead with --preset flashhead-pro (a tiny random "
                                   "release, --weights DIR, or --shape 1.3b --device cuda). Prints one JSON object.")
    b.add_argument("--log-level", default="warning", choices=LOG_LEVELS)
    add_backend_flags(b, ["infinitetalk"])
    b.set_defaults(preset="tiny-random", backend="infinitetalk")
    from streaming.benchmark.options import add_bench_arguments

    add_bench_arguments(b)
    return p


def chosen_backend(args: argparse.Namespace) -> tuple[Backend, Any] | None:
    """The backend and its options for `args`, or None after printing why not."""
    try:
        return backend_from_args(args)
    except (BackendUnavailable, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return None


def make_generator(args: argparse.Namespace) -> Generator | None:
    """Build the backend or print why not (missing weights are listed by name) and return None."""
    chosen = chosen_backend(args)
    if chosen is None:
        return None
    backend, options = chosen
    try:
        return backend.create(options)
    except (BackendUnavailable, ValueError, OSError) as exc:
        print(f"{PROG}: cannot start backend {backend.name}: {exc}", file=sys.stderr)
    return None


async def make_engine(args: argparse.Namespace) -> Engine | ClusterEngine | None:
    """The engine `serve` runs: one in this process, or the workers of a Ray cluster (`--cluster`,
    docs/cluster.md); None after printing why not."""
    if args.cluster is None:
        from streaming.engine import Engine

        from .cluster.options import cluster_only_flags

        if given := cluster_only_flags(args):
            print(f"{PROG}: {', '.join(given)} apply only with --cluster (docs/cluster.md)", file=sys.stderr)
            return None

        generator = await asyncio.to_thread(make_generator, args)
        return None if generator is None else Engine(generator)
    from .cluster.options import ClusterUnavailable, cluster_options, require_ray

    try:
        options = cluster_options(args)
        assert options is not None
        require_ray(options.local)
        if chosen_backend(args) is None:  # the workers would fail the same way: say it once, here
            return None
        from .cluster.gateway import start_cluster_engine

        return await start_cluster_engine(options, args)
    except (ValueError, ClusterUnavailable) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return None


def avatar_store(avatar_dir: Path | None, name: str | None, max_upload_mb: float = 10.0) -> AvatarStore:
    """Built-in avatars plus the images in `avatar_dir` (None: the default folder), with `name` (None: the
    built-in default) as the default avatar. ValueError when `name` is neither."""
    from .avatars import AvatarStore, UploadLimits

    builtins, default = builtin_avatars()
    limits = UploadLimits(max_bytes=int(max_upload_mb * 1024 * 1024))
    return AvatarStore(builtins, avatar_dir or default_avatar_dir(), name or default, limits)


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

    from .app import build_app
    from .avatars import AvatarError
    from .config import ServerConfig

    try:
        network = security_config(args)
        tls = ssl_context(args)
    except OptionError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    engine = await make_engine(args)
    if engine is None:
        return 2
    generator = engine.generator
    try:
        store = avatar_store(args.avatar_dir, args.avatar, args.max_upload_mb)
        await asyncio.to_thread(store.get, store.default)
    except (AvatarError, ValueError) as exc:
        name = args.avatar or builtin_avatars()[1]
        print(f"{PROG}: cannot use avatar {name!r}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        await engine.shutdown()
        return 2
    config = ServerConfig(host=args.host, port=args.port, max_sessions=args.max_sessions,
                          max_upload_bytes=store.limits.max_bytes, generated_buffer_s=args.generated_buffer_s,
                          **network)
    if args.cluster is None:
        app = build_app(config, engine, store, owns_engine=True)
    else:
        from .cluster.gateway import build_cluster_app

        app = build_cluster_app(config, engine, store, owns_engine=True)
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
    label = backends()[generator.name].description if generator.name in backends() else generator.description
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


def follower_rank(args: argparse.Namespace) -> int | None:
    """Ranks > 0 of a multi-process launch (torchrun with --sequence-parallel): serve rank 0's model calls,
    no server, and return the exit code; None on every other process."""
    chosen = chosen_backend(args)
    if chosen is None:
        return 2
    backend, options = chosen
    served = backend.follow(options) if backend.follow is not None else None
    if served is None:
        return None
    log.info("rank %s served %d model calls", os.environ.get("RANK"), served)
    return 0


def load_source(args: argparse.Namespace) -> Avatar:
    """The avatar to render: --avatar by name (built in or in --avatar-dir), or the --image/--video file."""
    from dataclasses import replace

    from streaming.avatars import load_avatar

    from .render import read_mask

    if args.avatar is not None:
        store = avatar_store(args.avatar_dir, None)
        if args.avatar not in store.names():
            raise ValueError(f"no avatar called {args.avatar!r}: use a built-in one ({', '.join(store.builtins)}) "
                             f"or an image NAME.png/.jpg/.webp in {store.upload_dir} (--avatar-dir)")
        avatar = store.get(args.avatar)
    else:
        source = args.image or args.video
        avatar = load_avatar(source, source.stem)
    if args.speaker_box:
        boxes = tuple(tuple(int(v) for v in b.split(",")) for b in args.speaker_box)
        if any(len(b) != 4 for b in boxes):
            raise ValueError("each --speaker-box is X0,Y0,X1,Y1")
        avatar = replace(avatar, speaker_boxes=boxes)
    if args.mask_box or args.mask:
        avatar = replace(avatar, regen_mask=read_mask(args.mask_box, args.mask, avatar))
    return avatar


async def render(args: argparse.Namespace) -> int:
    from .avatars import AvatarError
    from .render import read_speech, render_to_mp4

    paths = [args.audio] + [p for p in (args.audio2, args.audio3, args.audio4) if p is not None]
    try:
        speech = await asyncio.to_thread(read_speech, paths)
        avatar = await asyncio.to_thread(load_source, args)
        if args.speaker_box and len(avatar.speaker_boxes) != len(paths):
            raise ValueError(f"give one --speaker-box X0,Y0,X1,Y1 per audio file ({len(paths)})")
    except (OSError, ValueError, AvatarError) as exc:
        print(f"{PROG}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    generator = await asyncio.to_thread(make_generator, args)
    if generator is None:
        return 2
    why = (" (the default without --weights; --weights DIR renders with InfiniteTalk)"
           if args.backend is None and generator.name == DEFAULT_BACKEND else "")
    print(f"{PROG}: backend {generator.description}{why}", flush=True)
    result = await render_to_mp4(generator, avatar, speech, args.output, progress=not args.no_progress,
                                 crf=args.crf)
    print(f"{PROG}: wrote {args.output}: {result.frames} frames ({result.seconds_of_video:.2f} s) "
          f"in {result.wall_seconds:.1f} s ({result.realtime_factor:.2f}x real time)", flush=True)
    return 0


def bench(args: argparse.Namespace) -> int:
    from streaming.benchmark.options import options_from_args

    chosen = chosen_backend(args)
    if chosen is None:
        return 2
    try:
        opts = options_from_args(args, chosen[1])
        from streaming.benchmark.suite import run_bench

        report = run_bench(opts)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: bench: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("serve", "render") and (code := follower_rank(args)) is not None:
        return code
    if args.command == "render":
        return asyncio.run(render(args))
    if args.command == "bench":
        return bench(args)
    if args.max_sessions < 1:
        print(f"{PROG}: --max-sessions must be >= 1", file=sys.stderr)
        return 2
    if not args.generated_buffer_s > 0:
        print(f"{PROG}: --generated-buffer-s must be > 0", file=sys.stderr)
        return 2
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
