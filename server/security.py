"""Who may talk to the server: access token, browser origin, Host (DNS rebinding), request rate.

Checked by one middleware before any handler runs, in this order:
1. Host: without a token the server trusts its loopback interface only, so it answers requests
   addressed to a loopback name (or to an allowed origin's host) and nothing else: a web page
   that re-points its own domain at 127.0.0.1 (DNS rebinding) gets 403.
2. Origin (browsers): websocket upgrades and non-GET requests from another origin than the page's
   own, or one listed in `allow_origins`, get 403 / close 4403 (websockets skip CORS entirely).
3. Rate: session starts and uploads take a token from the client's bucket (429 / 4429), and so
   does every failed authentication (guessing tokens is throttled too).
4. Token: `Authorization: Bearer T`; websocket upgrades may instead send `?token=T` or a
   `Sec-WebSocket-Protocol` entry `token.T` (browsers cannot set headers on websockets).
   Compared in constant time; 401 / close 4401. Open without a token: the demo page and its
   static files, `/api/info` (the page learns from it that a token is needed) and `/healthz`.

Websocket refusals complete the handshake and then close with the 44xx code after an `error`
message, because a browser cannot read the status of a refused upgrade. Tokens never reach a log.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from . import messages
from .config import ServerConfig, is_loopback
from .context import CONTEXT
from .errors import ApiError, Handler
from .limits import RateLimiter, client_address, retry_after_header
from .ws_protocol import CLOSE_FORBIDDEN, CLOSE_TOO_MANY, CLOSE_UNAUTHORIZED

log = logging.getLogger(__name__)

WS_SUBPROTOCOL = "infinitetalk.v1"
TOKEN_PROTOCOL_PREFIX = "token."
OPEN_PATHS = frozenset({"/", "/api/info", "/healthz", "/favicon.ico"})
RATE_LIMITED = frozenset({("POST", "/offer"), ("GET", "/ws"), ("POST", "/api/avatars")})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Refusal:
    status: int
    close_code: int
    code: str
    message: str
    headers: dict[str, str] | None = None


def is_websocket_upgrade(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def offered_protocols(request: web.Request) -> list[str]:
    return [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",") if p.strip()]


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def presented_tokens(request: web.Request) -> list[str]:
    """Every token the request carries: the Bearer header; for websocket upgrades also ?token= and
    `token.T` subprotocol entries."""
    found = [t for t in (_bearer(request),) if t]
    if is_websocket_upgrade(request):
        found += [t for t in request.query.getall("token", []) if t]
        found += [p[len(TOKEN_PROTOCOL_PREFIX):] for p in offered_protocols(request) if p.startswith(TOKEN_PROTOCOL_PREFIX)]
    return found


def token_matches(candidates: list[str], token: str) -> bool:
    """Constant-time comparison of every candidate (the time taken does not depend on where they differ)."""
    expected = token.encode()
    ok = False
    for c in candidates:
        ok |= hmac.compare_digest(c.encode("utf-8", "surrogateescape"), expected)
    return ok


def _hostname(netloc: str) -> str:
    try:
        return (urlsplit(f"//{netloc}").hostname or "").lower()
    except ValueError:
        return ""


class AccessPolicy:
    """The checks of the module docstring, for one app."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.replace_tokens(config.token, config.tokens)
        self.any_origin = "*" in config.allow_origins
        self.origins = {o.rstrip("/").lower() for o in config.allow_origins if o != "*"}
        self.origin_hosts = {_hostname(urlsplit(o).netloc) for o in self.origins}
        self.limiter = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)

    def replace_tokens(self, token: str | None, named: tuple[tuple[str, str], ...]) -> None:
        """Accept these tokens from now on (a reload: sessions already open stay open)."""
        self.tokens: tuple[tuple[str, str], ...] = ((("default", token),) if token else ()) + tuple(named)
        self.named = bool(named)

    @property
    def auth_required(self) -> bool:
        return bool(self.tokens)

    def client(self, request: web.Request) -> str:
        """The client's address (behind a trusted proxy: the one it names); rate limits count per address."""
        return client_address(request, self.config.trusted_proxies)

    def token_name(self, request: web.Request) -> str | None:
        """The name of the token the request carries (None: none of ours). Every token is compared."""
        presented = presented_tokens(request)
        found = None
        for name, token in self.tokens:
            if token_matches(presented, token) and found is None:
                found = name
        return found

    def authorized(self, request: web.Request) -> bool:
        return not self.tokens or self.token_name(request) is not None

    def owner(self, request: web.Request) -> str:
        """Who a session belongs to for the per-client cap: the token's name when tokens are named,
        else the client's address."""
        if self.named:
            name = self.token_name(request)
            if name is not None:
                return f"token:{name}"
        return self.client(request)

    def check(self, request: web.Request) -> Refusal | None:
        ws = request.path == "/ws" and is_websocket_upgrade(request)
        host = _hostname(request.host)
        if not self.tokens and not (is_loopback(host) or host in self.origin_hosts):
            return Refusal(403, CLOSE_FORBIDDEN, "forbidden_host",
                           f"this server runs without an access token, so it only answers requests addressed to "
                           f"localhost, not {host[:80]!r}; start it with a token, or add the public origin with "
                           "--allow-origin")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and (ws or request.method not in SAFE_METHODS) and not self._origin_ok(origin, request):
            return Refusal(403, CLOSE_FORBIDDEN, "forbidden_origin",
                           f"requests from the web page at {origin[:100]!r} are not allowed; the operator can "
                           "allow it with --allow-origin")
        if (request.method, request.path) in RATE_LIMITED:
            refusal = self._take(request)
            if refusal is not None:
                return refusal
        if self._needs_token(request) and not self.authorized(request):
            if (request.method, request.path) not in RATE_LIMITED:
                refusal = self._take(request)  # failed attempts are rate limited everywhere
                if refusal is not None:
                    return refusal
            return Refusal(401, CLOSE_UNAUTHORIZED, "unauthorized",
                           "missing or wrong access token: send 'Authorization: Bearer TOKEN' (websocket: "
                           "?token=TOKEN or the subprotocol token.TOKEN)", {"WWW-Authenticate": "Bearer"})
        return None

    def _needs_token(self, request: web.Request) -> bool:
        return bool(self.tokens) and request.path not in OPEN_PATHS and not request.path.startswith("/static/")

    def _origin_ok(self, origin: str, request: web.Request) -> bool:
        o = origin.rstrip("/").lower()
        if self.any_origin or o in self.origins:
            return True
        parts = urlsplit(o)
        return o != "null" and parts.scheme in ("http", "https") and parts.netloc == request.host.lower()

    def _take(self, request: web.Request) -> Refusal | None:
        wait = self.limiter.allow(self.client(request))
        if wait <= 0:
            return None
        return Refusal(429, CLOSE_TOO_MANY, "rate_limited",
                       f"too many requests from your address; retry in {wait:.1f} s", retry_after_header(wait))


async def refuse_websocket(request: web.Request, refusal: Refusal) -> web.WebSocketResponse:
    """Complete the upgrade, send the `error` message, close with the refusal's 44xx code."""
    ws = web.WebSocketResponse(protocols=(WS_SUBPROTOCOL,) if WS_SUBPROTOCOL in offered_protocols(request) else ())
    await ws.prepare(without_foreign_protocols(request))
    try:
        await ws.send_json(messages.error(refusal.code, refusal.message))
        await ws.close(code=refusal.close_code, message=refusal.code.encode())
    except (ConnectionError, RuntimeError):
        pass
    return ws


def without_foreign_protocols(request: web.Request) -> web.Request:
    """The request as the websocket layer should see it: aiohttp logs the subprotocols it does not
    know (a `token.T` entry is a secret), so only ours is kept."""
    if hdrs.SEC_WEBSOCKET_PROTOCOL not in request.headers:
        return request
    headers = request.headers.copy()
    del headers[hdrs.SEC_WEBSOCKET_PROTOCOL]
    if WS_SUBPROTOCOL in offered_protocols(request):
        headers[hdrs.SEC_WEBSOCKET_PROTOCOL] = WS_SUBPROTOCOL
    return request.clone(headers=headers)


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    policy = request.app[CONTEXT].security
    refusal = policy.check(request)
    if refusal is None:
        return await handler(request)
    request.app[CONTEXT].metrics.error(refusal.code)
    # A client hammering the server gets rate limited: those refusals stay out of the normal log.
    level = logging.DEBUG if refusal.code == "rate_limited" else logging.INFO
    log.log(level, "refused %s %s from %s: %s", request.method, request.path[:100], policy.client(request),
            refusal.code)
    if request.path == "/ws" and is_websocket_upgrade(request):
        try:
            return await refuse_websocket(request, refusal)
        except web.HTTPException:
            pass  # a malformed upgrade: answer with plain HTTP below
    raise ApiError(refusal.status, refusal.code, refusal.message, refusal.headers)
