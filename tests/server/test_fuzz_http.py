"""Fuzzing the HTTP endpoints against the real server on loopback (issue 5).

Malformed and mutated SDP offers, random JSON, wrong content types, random paths, methods, avatar
names and upload bytes, bad tokens and origins, and raw garbage on the socket: the answer is always
a status below 500 (errors as documented JSON, never a traceback) within a deadline, and the
server still serves a normal session afterwards with nothing leaked.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from aiortc import RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.avatars import NAME_RE

from ..helpers.fuzz_support import AUTH, DOCUMENTED_CODES, TOKEN, FuzzServer, scale

REQUESTS_PER_EXAMPLE = 10
_OFFER: list[str] = []


async def real_offer_sdp() -> str:
    """A genuine offer (mic + recvonly video + data channel) to mutate."""
    if not _OFFER:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        _OFFER.append(pc.localDescription.sdp)
        await pc.close()
    return _OFFER[0]


@st.composite
def mutated_sdp(draw) -> str:
    lines = _OFFER[0].split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "dup", "garble", "truncate", "swap"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "garble":
            line = lines[i]
            j = draw(st.integers(0, len(line)))
            lines[i] = line[:j] + draw(st.text(max_size=8)) + line[j + 1:]
        elif op == "truncate":
            lines = lines[: i + 1]
        elif op == "swap" and len(lines) > 1:
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
    return "\r\n".join(lines)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
sdps = st.one_of(mutated_sdp(), mutated_sdp(), st.text(max_size=200),
                 st.builds(lambda t: "v=0\r\n" + t, st.text(max_size=200)), json_values)
offers = st.fixed_dictionaries(
    {"type": st.sampled_from(["offer", "offer", "answer", "", None])},
    optional={"sdp": sdps, "avatar": st.one_of(st.sampled_from(["test", "nobody", "../x", ""]), json_values),
              "speakers": st.one_of(st.sampled_from([1, 2, 4, 0, 5, True, 1.5]), json_values)},
)
names = st.one_of(st.sampled_from(["test", "other", "me", "..", "../../etc/passwd", "a" * 65, "%2e%2e", ""]),
                  st.text(max_size=30))
image_heads = st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b""])
nested_bodies = st.sampled_from([b"[" * 100_000, b'{"sdp": ' * 20_000, b"[" * 3000 + b"]" * 3000])  # issue 13
bodies = st.one_of(
    st.builds(json.dumps, offers).map(str.encode),
    st.builds(json.dumps, json_values).map(str.encode),
    st.binary(max_size=300),
    st.builds(lambda h, b: h + b, image_heads, st.binary(max_size=300)),
    nested_bodies,
)
content_types = st.sampled_from([None, "application/json", "text/plain", "application/sdp", "image/png",
                                 "multipart/form-data; boundary=xyz", "multipart/form-data", "application/x-www-form-urlencoded",
                                 "garbage/x", "application/json; charset=latin-1"])
paths = st.one_of(
    st.sampled_from(["/offer", "/offer", "/offer", "/api/avatars", "/api/info", "/healthz", "/metrics", "/",
                     "/static/app.js", "/static/../../etc/passwd", "/ws", "/nope"]),
    st.builds(lambda n: f"/api/avatars/{quote(n, safe='')}/thumbnail", names),
    st.builds(lambda n: f"/api/avatars?name={quote(n, safe='')}", names),
    st.builds(lambda t: "/" + quote(t, safe="/"), st.text(max_size=30)),
)
methods = st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"])
auths = st.sampled_from(["ok", "ok", "ok", "none", "wrong", "basic"])
origins = st.sampled_from([None, None, "same", "https://evil.example"])
requests = st.one_of(
    st.tuples(methods, paths, content_types, bodies, auths, origins),
    st.tuples(st.just("POST"), st.just("/offer"), content_types, nested_bodies, st.just("ok"), st.just(None)),
    st.tuples(st.just("POST"), st.just("/offer"), st.just("application/json"),  # a real offer, badly typed fields
              st.builds(lambda a, n: json.dumps({"type": "offer", "sdp": _OFFER[0], "avatar": a, "speakers": n}).encode(),
                        st.sampled_from(["", None, False, 0, "a" * 65, "test"]), st.sampled_from([1, True])),
              st.just("ok"), st.just(None)),
)


async def run_request(fz: FuzzServer, req) -> None:
    method, path, ctype, body, auth, origin = req
    headers = {}
    if auth == "ok":
        headers.update(AUTH)
    elif auth == "wrong":
        headers["Authorization"] = "Bearer nope-nope-nope"
    elif auth == "basic":
        headers["Authorization"] = f"Basic {TOKEN}"
    if ctype is not None:
        headers["Content-Type"] = ctype
    if origin is not None:
        headers["Origin"] = fz.srv.url if origin == "same" else origin
    data = None if method in ("GET", "HEAD") else body
    async with fz.http.request(method, fz.srv.url + path, headers=headers, data=data,
                               allow_redirects=False) as r:
        text = await r.text(errors="replace")
        status = r.status
    assert status < 500, (status, req, text[:300])
    if status == 200 and path == "/offer":  # issue 13: a present avatar must be a 1-64 character name
        offer = json.loads(body)
        assert "avatar" not in offer or (isinstance(offer["avatar"], str) and NAME_RE.fullmatch(offer["avatar"])), offer
        assert not isinstance(offer.get("speakers"), bool), offer
    assert "Traceback" not in text, text[:300]
    if status >= 400 and method != "HEAD" and r.content_type == "application/json":
        err = json.loads(text)["error"]
        assert err["code"] in DOCUMENTED_CODES and err["message"], err
    fz.cases += 1
    fz.outcomes[status] += 1


def http_fuzz_server() -> FuzzServer:
    return FuzzServer(token=TOKEN, max_sessions=64, max_sessions_per_client=64, rate_limit_burst=10**9,
                      ice_connect_timeout_s=1.0)


def test_fuzzed_http_requests_never_get_a_5xx_or_a_traceback():
    examples = 150 * scale()
    with http_fuzz_server() as fz:
        fz.call(real_offer_sdp(), 20)
        fz.fuzz_batches(requests, run_request, REQUESTS_PER_EXAMPLE, examples)
        counts = fz.finish()  # a normal session still works; nothing left behind
        print(f"\nhttp fuzz: {fz.cases} requests, statuses {dict(sorted(fz.outcomes.items()))}; after: {counts}")
        assert fz.cases >= examples * REQUESTS_PER_EXAMPLE
        assert fz.outcomes[200] > 0 and fz.outcomes[400] > 0  # both deep and shallow cases ran


async def raw_exchange(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        return b""
    finally:
        writer.close()


garbage_requests = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda m, p, h: f"{m} {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n{h}\r\n\r\n".encode("utf-8", "replace"),
              st.text(max_size=10), st.text(max_size=30), st.text(max_size=60)),
    st.builds(lambda n: f"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {n}\r\n\r\n{{".encode(),
              st.sampled_from(["-1", "abc", "99999999999999999999", "5", "1e3"])),
    st.just(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n"),
)


def test_raw_garbage_on_the_socket_gets_a_4xx_or_a_close():
    examples = 100 * scale()
    with http_fuzz_server() as fz:

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
        @given(garbage=st.lists(garbage_requests, min_size=4, max_size=4))
        def fuzz(garbage):
            async def run_all():
                return await asyncio.gather(*(raw_exchange(fz.srv.url, g) for g in garbage))

            for answer in fz.call(run_all(), 30):
                if answer:
                    status_line = answer.split(b"\r\n", 1)[0]
                    assert status_line.startswith(b"HTTP/1.") and status_line[9:10] != b"5", status_line
                    assert b"Traceback" not in answer
                fz.cases += 1

        fuzz()
        fz.finish()
        print(f"\nraw HTTP garbage: {fz.cases} connections")
        assert fz.cases >= 4 * examples


def test_oversized_bodies_get_413():
    async def run(fz):
        out = []
        for path, size in (("/offer", 300_000), ("/api/avatars?name=big", 12 * 1024 * 1024)):
            async with fz.http.post(fz.srv.url + path, data=b"{" + bytes(size), headers=AUTH) as r:
                out.append((r.status, (await r.json())["error"]["code"]))

        async def chunked():  # no Content-Length: the limit applies while reading
            for _ in range(40):
                yield b" " * 16384

        async with fz.http.post(fz.srv.url + "/offer", data=chunked(), headers=AUTH) as r:
            out.append((r.status, (await r.json())["error"]["code"]))
        return out

    with http_fuzz_server() as fz:
        assert fz.call(run(fz), 60) == [(413, "too_large")] * 3
        fz.finish()
