"""`serve` options for running on a network: token, origins, proxies, limits, STUN/TURN, TLS.

Secrets (the token, TURN credentials) are best given through files or environment variables:
command-line arguments are visible to every user of the machine (`ps`).
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import is_loopback
from .ice import parse_ice_url

TOKEN_ENV = "INFINITETALK_TOKEN"
TURN_CREDENTIAL_ENV = "INFINITETALK_TURN_CREDENTIAL"
TURN_SECRET_ENV = "INFINITETALK_TURN_SECRET"
GENERATE_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class OptionError(ValueError):
    """A bad combination of options; the message says what to do."""


def add_security_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network and security (docs/security.md)")
    g.add_argument("--token", help=f"access token clients must send (visible in `ps`: prefer ${TOKEN_ENV} or "
                                   "--token-file); required when --host is not loopback")
    g.add_argument("--token-file", type=Path,
                   help="file with the access token; or several, one per line as NAME TOKEN, each a client of its "
                        "own (per-client limits and logs by name); # starts a comment")
    g.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="browser origin allowed besides the page's own, e.g. https://app.example.com (repeatable; "
                        "* = any)")
    g.add_argument("--trust-proxy", action="append", default=[], metavar="ADDR",
                   help="reverse proxy address whose X-Forwarded-For names the client (repeatable)")
    g.add_argument("--max-sessions-per-client", type=int, default=4,
                   help="live sessions per client address, or per token when tokens are named (4)")
    g.add_argument("--rate-limit", type=float, default=1.0,
                   help="session starts and uploads per second per client address, after a burst (1.0)")
    g.add_argument("--rate-burst", type=int, default=20, help="requests a client may make at once (20)")
    g.add_argument("--idle-timeout", type=float, default=300.0,
                   help="close sessions with no speech/audio and no control message for this long, s (300)")
    g.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server for WebRTC across NATs, e.g. turn:turn.example.org:3478 (repeatable); "
                        "also given to the browser page")
    g.add_argument("--turn-username", help="username for the turn: servers")
    g.add_argument("--turn-credential-file", type=Path,
                   help=f"file with the TURN password (or ${TURN_CREDENTIAL_ENV})")
    g.add_argument("--turn-secret-file", type=Path,
                   help=f"file with coturn's static-auth-secret (or ${TURN_SECRET_ENV}): each client gets its own "
                        "short-lived TURN credentials")
    g.add_argument("--cert", type=Path, help="TLS certificate chain (PEM): serve https/wss directly")
    g.add_argument("--key", type=Path, help="TLS private key (PEM) for --cert")


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").splitlines()[0].strip() if path.stat().st_size else ""
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise OptionError(f"cannot read the {what} from {path}: {exc}") from exc
    if not value:
        raise OptionError(f"{path} is empty: put the {what} on its first line")
    return value


def read_token_file(path: Path) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(token, named tokens) from a token file: one bare token (as before), or lines `NAME TOKEN`
    (a bare token among several gets the name `line-N`)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"cannot read the access tokens from {path}: {exc}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if len(fields) > 2:
            raise OptionError(f"{path} line {number}: expected TOKEN or NAME TOKEN, got {len(fields)} fields")
        if fields:
            entries.append((fields[0] if len(fields) == 2 else None, fields[-1], number))
    if not entries:
        raise OptionError(f"{path} is empty: put the access token on its first line")
    if len(entries) == 1 and entries[0][0] is None:
        return entries[0][1], ()
    named = tuple((name or f"line-{number}", token) for name, token, number in entries)
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise OptionError(f"{path}: token names must be unique, got {sorted(names)}")
    return None, named


def check_token_lengths(token: str | None, named: tuple[tuple[str, str], ...]) -> None:
    for name, value in ((None, token), *named):
        if value is not None and len(value) < 8:
            which = f"the access token {name!r}" if name else "the access token"
            raise OptionError(f"{which} is too short ({len(value)} characters); use at least 8, e.g. {GENERATE_HINT}")


def resolve_token(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(token, named tokens): --token, else --token-file, else $INFINITETALK_TOKEN."""
    if args.token:
        return args.token.strip(), ()
    if args.token_file is not None:
        return read_token_file(args.token_file)
    return env.get(TOKEN_ENV, "").strip() or None, ()


def security_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """ServerConfig fields from the options; raises OptionError (e.g. a public host without a token)."""
    env = os.environ if env is None else env
    token, named = resolve_token(args, env)
    check_token_lengths(token, named)
    if token is None and not named and not is_loopback(args.host):
        raise OptionError(
            f"--host {args.host} accepts connections from other machines, so an access token is required: set "
            f"${TOKEN_ENV}, or pass --token-file FILE (generate one with {GENERATE_HINT}); clients send it as "
            "'Authorization: Bearer TOKEN' (the demo page: ?token=TOKEN in its URL)"
        )
    for origin in args.allow_origin:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise OptionError(f"--allow-origin {origin!r}: give scheme://host[:port], e.g. https://app.example.com")
    credential = None
    if args.turn_credential_file is not None:
        credential = _read_secret(args.turn_credential_file, "TURN credential")
    credential = credential or env.get(TURN_CREDENTIAL_ENV) or None
    secret = _read_secret(args.turn_secret_file, "TURN secret") if args.turn_secret_file else None
    secret = secret or env.get(TURN_SECRET_ENV) or None
    try:
        ice = tuple(parse_ice_url(u, args.turn_username, credential) for u in args.ice_server)
    except ValueError as exc:
        raise OptionError(str(exc)) from exc
    turn = [s for s in ice if s.urls[0].lower().startswith("turn")]
    if turn and secret is None and (args.turn_username is None or credential is None):
        raise OptionError("a turn: server needs credentials: --turn-username with --turn-credential-file "
                          f"(or ${TURN_CREDENTIAL_ENV}), or coturn's secret via --turn-secret-file")
    if args.idle_timeout <= 0 or args.rate_limit <= 0 or args.rate_burst < 1 or args.max_sessions_per_client < 1:
        raise OptionError("--idle-timeout, --rate-limit, --rate-burst and --max-sessions-per-client must be positive")
    return dict(
        token=token, tokens=named, allow_origins=tuple(args.allow_origin), trusted_proxies=tuple(args.trust_proxy),
        max_sessions_per_client=args.max_sessions_per_client, rate_limit_per_s=args.rate_limit,
        rate_limit_burst=args.rate_burst, ws_idle_timeout_s=args.idle_timeout, rtc_idle_timeout_s=args.idle_timeout,
        ice_servers=ice, turn_secret=secret,
    )


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """A server TLS context from --cert/--key, or None."""
    if args.cert is None and args.key is None:
        return None
    if args.cert is None or args.key is None:
        raise OptionError("--cert and --key go together (PEM certificate chain and its private key)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        raise OptionError(f"cannot load the TLS certificate {args.cert} / key {args.key}: {exc}") from exc
    return ctx
