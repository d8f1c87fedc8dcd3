"""Per-client limits: who the client is (its address, through trusted proxies) and a token-bucket
rate limiter over the requests that cost the server something (session starts, uploads).

One client must not be able to take every session slot or keep the server busy negotiating: the
session cap per address lives in `SessionManager`, the request rate here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

MAX_TRACKED_CLIENTS = 10_000


def client_address(request: web.Request, trusted_proxies: tuple[str, ...] = ()) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted reverse proxy, the last
    X-Forwarded-For entry that is not itself a trusted proxy (entries left of it are client-supplied)."""
    peer = request.remote or "unknown"
    if peer not in trusted_proxies:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop[:64]
    return peer


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_s` a second.

    Memory stays bounded: past MAX_TRACKED_CLIENTS keys, the buckets that are full again (clients
    gone quiet) are forgotten, which loses nothing.
    """

    def __init__(self, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str) -> float:
        """Take one token for `key`: returns 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_TRACKED_CLIENTS:
                self._prune(now)
            b = self._buckets[key] = _Bucket(float(self.burst), now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.updated) * self.per_s)
        b.updated = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.per_s

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.per_s >= self.burst]
        for k in full:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
