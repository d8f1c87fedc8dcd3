"""Fuzzing the websocket protocol against the real server on loopback (issue 5).

Thousands of cases: random binary, garbage and truncated audio headers, wrong versions and types,
huge JSON, unknown messages, bad tokens and origins, in random interleavings, several connections
at once. Every case must end with a documented close code (after an `error` with a documented
code), within a deadline; the server never logs a traceback, and afterwards it still serves a
normal session with nothing leaked.
"""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from server.avatars import NAME_RE
from server.ws_protocol import ProtocolError, parse_audio, parse_hello, parse_json_message

from ..helpers.fuzz_support import (
    CLIENT_CLOSE_CODES,
    DOCUMENTED_CODES,
    TOKEN,
    FuzzServer,
    scale,
)

CASES_PER_EXAMPLE = 8
MIB = 1024 * 1024
MAX_WS_MESSAGE = 4 * (MIB + 4)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def maybe(values: list, other=json_values):
    return st.one_of(st.sampled_from(values), other)


hellos = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "hello", "hello", "HELLO", "bye", ""])},
    optional={
        "version": maybe([1, 1, 1, 0, 2, 255, 1.0, "1", True, False]),
        "audio": maybe([{}], st.fixed_dictionaries({}, optional={
            "sample_rate": maybe([8000, 16000, 44100, 48000, 192000, 7999, 192001, 16000.0, 12345.6, -1, True]),
            "channels": maybe([1, 2, 8, 0, 9, True]),
            "format": maybe(["s16", "s32", "flt", "mp3", "S16"]),
        })),
        "avatar": maybe(["test", "other", "nobody", "../../etc/passwd", "a" * 65, "", "te st", None, False]),
        "speakers": maybe([1, 2, 4, 0, 5, True]),
        "video": maybe([{}], st.fixed_dictionaries({}, optional={
            "format": maybe(["jpeg", "png"]), "quality": maybe([1, 80, 100, 0, 101, 50.5, True])})),
        "extra": json_values,
    },
)


valid_hellos = st.fixed_dictionaries(
    {"type": st.just("hello"), "version": st.just(1)},
    optional={
        "audio": st.fixed_dictionaries({}, optional={"sample_rate": st.sampled_from([8000, 16000, 48000]),
                                                     "channels": st.sampled_from([1, 2]),
                                                     "format": st.sampled_from(["s16", "s32", "flt"])}),
        "avatar": st.sampled_from(["test", "other", "test", "nobody"]),
        "speakers": st.sampled_from([1, 1, 2]),
        "video": st.fixed_dictionaries({}, optional={"quality": st.integers(1, 100)}),
    },
)


def wrongly_typed(hello: Any) -> bool:
    """A hello with a JSON boolean where an integer is due, or an avatar that is not a 1-64 character name
    (issue 13): the server must refuse it, never open a session."""
    if not isinstance(hello, dict):
        return False
    audio = hello.get("audio") if isinstance(hello.get("audio"), dict) else {}
    video = hello.get("video") if isinstance(hello.get("video"), dict) else {}
    numbers = (hello.get("version"), hello.get("speakers"), audio.get("sample_rate"), audio.get("channels"),
               video.get("quality"))
    name = hello.get("avatar", "test")
    return any(isinstance(v, bool) for v in numbers) or not (isinstance(name, str) and NAME_RE.fullmatch(name))


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def pcm(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=0, max_size=n)


audio_messages = st.one_of(
    st.builds(lambda p: b"A\x01\x00\x00" + p, pcm(1280)),  # well formed (odd lengths too)
    st.builds(lambda h, p: bytes(h) + p,
              st.tuples(st.sampled_from([0x41, 0x46, 0x00, 0xFF]), st.sampled_from([1, 0, 2, 255]),
                        st.sampled_from([0, 1, 3, 255]), st.sampled_from([0, 1])), pcm(64)),
    st.binary(max_size=3),  # truncated header
    st.binary(max_size=80),
)
controls = st.fixed_dictionaries(
    {"type": st.sampled_from(["interrupt", "end_of_speech", "ping", "stats", "dance", "hello", "set_avatar", ""])},
    optional={"t": json_values, "avatar": json_values},
)
# Nesting past the JSON parser's recursion limit (issue 13): unclosed, balanced, inside a valid message.
nested_json = st.sampled_from(["[" * 100_000, '{"a":' * 30_000, "[" * 5000 + "]" * 5000,
                               '{"type": "ping", "t": ' + "[" * 3000 + "]" * 3000 + "}"])
# Text over the documented 1 MiB (issue 13): valid JSON, so only the size is wrong.
oversized_text = st.sampled_from([1024 * 1024 + 1, 1_500_000]).map(
    lambda n: json.dumps({"type": "ping", "t": "x" * (n - 25)}))
texts = st.one_of(st.builds(json.dumps, controls), st.builds(json.dumps, json_values), st.text(max_size=40),
                  nested_json, oversized_text)
good_audio = st.builds(lambda n: b"A\x01\x00\x00" + bytes(8 * n), st.integers(0, 160))
good_controls = st.sampled_from(["interrupt", "end_of_speech", "ping", "stats"]).map(lambda k: json.dumps({"type": k}))
messages = st.one_of(good_audio.map(lambda b: ("binary", b)), good_audio.map(lambda b: ("binary", b)),
                     good_controls.map(lambda t: ("text", t)),
                     audio_messages.map(lambda b: ("binary", b)), texts.map(lambda t: ("text", t)))
firsts = st.one_of(
    *[st.builds(json.dumps, valid_hellos).map(lambda t: ("text", t))] * 4,
    st.builds(json.dumps, hellos).map(lambda t: ("text", t)),
    st.builds(json.dumps, hellos).map(lambda t: ("text", t)),
    st.binary(max_size=64).map(lambda b: ("binary", b)),
    st.text(max_size=64).map(lambda t: ("text", t)),
    st.builds(json.dumps, json_values).map(lambda t: ("text", t)),
    nested_json.map(lambda t: ("text", t)),
    st.sampled_from([1024 * 1024 + 1, 2 * 1024 * 1024]).map(
        lambda n: ("text", json.dumps({"type": "hello", "version": 1, "pad": "x" * (n - 42)}))),
    st.sampled_from([100_000, 3_000_000, 5_000_000]).map(
        lambda n: ("text", json.dumps({"type": "hello", "version": 1, "avatar": "x" * n}))),
)
auths = st.sampled_from(["header"] * 6 + ["query", "protocol", "none", "wrong"])
origins = st.sampled_from([None] * 6 + ["same", "https://evil.example", "null"])
cases = st.tuples(auths, origins, firsts, st.lists(messages, max_size=5))


async def run_case(fz: FuzzServer, case) -> None:
    auth, origin, first, rest = case
    url, headers, protocols = fz.srv.ws_url, {}, ()
    if auth == "header":
        headers["Authorization"] = f"Bearer {TOKEN}"
    elif auth == "query":
        url += f"?token={TOKEN}"
    elif auth == "protocol":
        protocols = ("infinitetalk.v1", f"token.{TOKEN}")
    elif auth == "wrong":
        headers["Authorization"] = "Bearer not-the-token"
    if origin is not None:
        headers["Origin"] = fz.srv.url if origin == "same" else origin
    huge = first[0] == "text" and len(first[1]) > MAX_WS_MESSAGE
    errors: list[dict] = []
    readies = 0
    async with fz.http.ws_connect(url, headers=headers, protocols=protocols, max_msg_size=0,
                                  autoping=True, heartbeat=None) as ws:
        try:
            for kind, data in [first, *rest, ("text", json.dumps({"type": "bye"}))]:
                await (ws.send_bytes(data) if kind == "binary" else ws.send_str(data))
        except (ConnectionError, RuntimeError):
            pass  # the server closed already: read why below
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                body = json.loads(msg.data)
                assert len(msg.data) < MIB, "an oversized ping was answered instead of closed with 4413"
                if body.get("type") == "error":
                    errors.append(body)
                readies += body.get("type") == "ready"
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                code = msg.data
                break
            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                code = ws.close_code
                break
    assert all(e.get("code") in DOCUMENTED_CODES and isinstance(e.get("message"), str) for e in errors), errors
    if huge and code in (None, 1006):
        fz.cases += 1
        fz.outcomes["dropped (>4 MiB)"] += 1
        return  # a >4 MiB message: the websocket layer may drop the link while we are still writing
    assert code in CLIENT_CLOSE_CODES, (code, errors, case[:2], first[1][:200], [m[1][:60] for m in rest])
    if first[0] == "text" and len(first[1]) < MIB and wrongly_typed(json_or_none(first[1])):
        assert not readies, f"a session opened for {first[1][:200]}"
    let_in = auth in ("header", "query", "protocol") and origin in (None, "same")
    if let_in and first[0] == "text" and MIB < len(first[1].encode()) <= 4 * MIB:  # beyond: aiohttp's 1009
        assert code == 4413 and errors[-1]["code"] == "too_large", (code, errors)
    if code >= 4000:
        assert errors, f"close {code} without an error message first"
    fz.cases += 1
    fz.outcomes[code] += 1


def test_fuzzed_websocket_clients_always_get_a_documented_close_and_the_server_carries_on():
    examples = 150 * scale()
    with FuzzServer(token=TOKEN, max_sessions=64, max_sessions_per_client=64, rate_limit_burst=10**9,
                    hello_timeout_s=2.0, ws_idle_timeout_s=3.0) as fz:
        fz.fuzz_batches(cases, run_case, CASES_PER_EXAMPLE, examples)
        counts = fz.finish()  # a normal session still works; nothing left behind
        print(f"\nwebsocket fuzz: {fz.cases} cases, close codes {dict(fz.outcomes)}; after: {counts}")
        assert fz.cases >= examples * CASES_PER_EXAMPLE
        assert fz.outcomes[1000] > 0 and fz.outcomes[4400] > 0  # sessions opened, and refused


@settings(max_examples=1000 * scale(), deadline=None, database=None)
@given(text=st.one_of(st.text(max_size=200), st.builds(json.dumps, hellos), st.builds(json.dumps, json_values),
                     nested_json),
       data=st.binary(max_size=64), speakers=st.integers(1, 4))
def test_protocol_parsers_raise_only_protocol_errors(text, data, speakers):
    for fn in (lambda: parse_json_message(text), lambda: parse_hello(text), lambda: parse_audio(data, speakers, 1 << 20)):
        try:
            out = fn()
        except ProtocolError as exc:
            assert exc.code in DOCUMENTED_CODES | {"too_large"} and exc.message and 4400 <= exc.close_code <= 4413
        else:
            if hasattr(out, "jpeg_quality"):
                assert not wrongly_typed(json.loads(text)), text
                assert 1 <= out.jpeg_quality <= 100 and 1 <= out.speakers <= 4
                assert 8000 <= out.pcm.sample_rate <= 192000 and math.isfinite(out.pcm.sample_rate)
