"""The `infinitetalk-live` command: `serve` (the server), `render` and `bench` (coming later)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.backends import BACKENDS, BackendUnavailable, create_generator

if TYPE_CHECKING:
    from streaming.generator import Avatar

log = logging.getLogger("infinitetalk-live")

PROG = "infinitetalk-live"
NOT_YET = {
    "render": "`render` (speech file -> MP4, offline) is not implemented yet: it arrives with the offline "
              "renderer. For now, run `serve` and use the websocket client in client_demo/.",
    "bench": "`bench` is not implemented yet: it arrives with the benchmark suite. For now, run the "
             "scripts in bench/ (e.g. python bench/server_overhead.py).",
}


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
    sub.add_parser("render", help="render a speech file to an MP4 offline (not yet available)")
    sub.add_parser("bench", help="measure backend and server throughput (not yet available)")
    return p


def display_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


async def serve(args: argparse.Namespace) -> int:
    # Imported here so `--help`, `render` and `bench` answer without loading the media stack.
    from aiohttp import web

    from streaming.engine import Engine

    from .app import build_app
    from .avatars import AvatarError, AvatarStore, UploadLimits
    from .config import ServerConfig

    try:
        generator = create_generator(args.backend)
    except (BackendUnavailable, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
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
    config = ServerConfig(host=args.host, port=args.port, max_sessions=args.max_sessions, max_upload_bytes=max_bytes)
    engine = Engine(generator)
    app = build_app(config, engine, store, owns_engine=True)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    port = runner.addresses[0][1] if runner.addresses else args.port
    label = BACKENDS.get(generator.name, generator.description)
    print(f"{PROG}: open {display_url(args.host, port)} in a browser (backend: {generator.name} — {label})",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"{PROG}: shutting down", flush=True)
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in NOT_YET:
        print(f"{PROG}: {NOT_YET[args.command]}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.max_sessions < 1:
        print(f"{PROG}: --max-sessions must be >= 1", file=sys.stderr)
        return 2
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
