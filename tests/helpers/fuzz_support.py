"""Fuzzing support: the real server on loopback in a background event loop, driven synchronously by
hypothesis (one loop for server and clients; each case has a deadline, so a hang fails the test).

Case counts: `max_examples` x cases per example; `INFINITETALK_FUZZ_SCALE` (default 1) multiplies
the examples for long runs (e.g. 20 in a soak).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .leaks import assert_no_leaks, snapshot
from .server_app import live_server
from .ws_checks import assert_serves_a_session

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CASE_TIMEOUT_S = 15.0
# Every error code docs/protocol.md lists (plus the security ones): a fuzz case may only ever see these.
DOCUMENTED_CODES = frozenset({
    "bad_json", "bad_request", "bad_sdp", "bad_name", "unknown_avatar", "not_an_image", "unsupported_type",
    "too_large", "too_many_sessions", "stopping", "not_found", "bad_hello", "bad_version", "bad_audio_format",
    "bad_header", "bad_message", "bad_audio", "hello_timeout", "idle_timeout", "client_not_reading",
    "method_not_allowed", "unsupported_media_type", "unauthorized", "forbidden_origin", "forbidden_host", "unknown_session",
    "rate_limited", "http_error",
})
CLIENT_CLOSE_CODES = frozenset({1000, 1009, 4400, 4401, 4403, 4404, 4408, 4413, 4429})


def scale() -> int:
    return max(1, int(os.environ.get("INFINITETALK_FUZZ_SCALE", "1")))


class ErrorLogWatch(logging.Handler):
    """Counts log records that carry a traceback or say "unhandled": the server must never produce one."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "unhandled" in record.getMessage().lower():
            self.bad.append(f"{record.name}: {record.getMessage()[:200]}")


class FuzzServer:
    """Owns a loop thread running `live_server(**config)` and a client session with keep-alive."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.cases = 0
        self.outcomes: Counter = Counter()  # close codes / statuses seen, for the report
        self.watch = ErrorLogWatch()

    def call(self, coro: Coroutine, timeout: float = CASE_TIMEOUT_S) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"a fuzz case hung for more than {timeout} s") from None

    def fuzz_batches(self, cases: Any, run_case: Callable[[FuzzServer, Any], Coroutine], per_example: int,
                     examples: int) -> None:
        """Hypothesis-driven: each example is `per_example` cases from the strategy `cases`, run
        concurrently against the server by `run_case(self, case)`."""

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(batch=st.lists(cases, min_size=per_example, max_size=per_example))
        def fuzz(batch):
            async def run_all():
                await asyncio.gather(*(run_case(self, c) for c in batch))

            self.call(run_all(), 60)

        fuzz()

    def __enter__(self) -> FuzzServer:
        self.thread.start()
        for name in ("server", "streaming", "aiohttp"):
            logging.getLogger(name).addHandler(self.watch)
        self._cm = live_server(**self.config)
        self.srv = self.call(self._cm.__aenter__(), 30)
        self.http = self.call(self._session(), 10)
        self.before = self.call(self._snapshot(), 10)
        return self

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))

    async def _snapshot(self):
        async with aiohttp.ClientSession(headers=AUTH) as http:
            await assert_serves_a_session(_Authed(self.srv), http)  # warm every pool first
        return snapshot()

    def finish(self) -> dict[str, int]:
        """After the cases: a normal session still works and nothing is left behind."""
        async def check() -> dict[str, int]:
            await self.http.close()
            async with aiohttp.ClientSession(headers=AUTH) as http:
                await assert_serves_a_session(_Authed(self.srv), http)
            return await assert_no_leaks(self.srv, self.before, timeout=10.0, peers=False)

        counts = self.call(check(), 40)
        assert not self.watch.bad, f"the server logged errors with tracebacks: {self.watch.bad[:5]}"
        return counts

    def __exit__(self, *exc: object) -> None:
        try:
            if not self.http.closed:
                self.call(self.http.close(), 10)
            self.call(self._cm.__aexit__(None, None, None), 30)
        finally:
            for name in ("server", "streaming", "aiohttp"):
                logging.getLogger(name).removeHandler(self.watch)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class _Authed:
    """`srv` as seen by `assert_serves_a_session`, with the token in the websocket URL."""

    def __init__(self, srv) -> None:
        self.ws_url = srv.ws_url + f"?token={TOKEN}"
