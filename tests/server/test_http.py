"""HTTP side: health, metrics, info, the demo page, and avatar uploads with their safety checks."""

import asyncio
import io
import time

import aiohttp
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from ..helpers.server_app import live_server
from ..helpers.ws_checks import assert_serves_a_session


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def image_bytes(fmt: str, size=(40, 30), exif_orientation: int | None = None) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, size[0] // 2, size[1] // 4))  # a mark in the top-left
    buf = io.BytesIO()
    kw = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif
    img.save(buf, fmt, **kw)
    return buf.getvalue()


async def test_health_and_metrics_follow_sessions_and_frames():
    async with live_server() as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/healthz") as r:
            assert r.status == 200 and await r.json() == {"status": "ok", "backend": "pattern", "sessions": 0}
        async with http.get(srv.url + "/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            before = metric_values(await r.text())
        assert before[("infinitetalk_sessions", (("transport", "websocket"),))] == 0
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            assert (await ws.receive_json())["type"] == "ready"
            frames = 0
            while frames < 10:
                frames += (await asyncio.wait_for(ws.receive(), 5)).type == aiohttp.WSMsgType.BINARY
            async with http.get(srv.url + "/healthz") as r:
                assert (await r.json())["sessions"] == 1
            async with http.get(srv.url + "/metrics") as r:
                during = metric_values(await r.text())
            await ws.send_json({"type": "bye"})
        assert during[("infinitetalk_sessions", (("transport", "websocket"),))] == 1
        assert during[("infinitetalk_connections", (("transport", "websocket"),))] == 1
        assert during[("infinitetalk_frames_emitted_total", (("transport", "websocket"),))] >= 9
        assert during[("infinitetalk_output_fps", ())] > 20
        assert ("infinitetalk_latency_seconds_count", ()) in during
        await asyncio.sleep(0.1)
        async with http.get(srv.url + "/metrics") as r:
            after = metric_values(await r.text())
        assert after[("infinitetalk_sessions", (("transport", "websocket"),))] == 0
        assert after[("infinitetalk_sessions_opened_total", (("transport", "websocket"),))] == 1
        async with http.get(srv.url + "/api/info") as r:
            info = await r.json()
        assert info["backend"] == "pattern" and info["fps"] == 25 and info["protocol_version"] == 1
        assert info["window_frames"] == 4 and info["sample_rate"] == 16000 and info["auth_required"] is False
        async with http.get(srv.url + "/nope") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


async def test_demo_page_is_served_and_a_placeholder_stands_in_when_it_is_missing(tmp_path):
    async with live_server(static_dir=tmp_path / "absent") as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/") as r:
            assert r.status == 200 and "demo page is missing" in await r.text()
        async with http.get(srv.url + "/static/app.js") as r:
            assert r.status == 404
    (tmp_path / "index.html").write_text("<title>demo</title>")
    (tmp_path / "app.js").write_text("console.log(1)")
    async with live_server(static_dir=tmp_path) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/") as r:
            assert await r.text() == "<title>demo</title>"
        async with http.get(srv.url + "/static/app.js") as r:
            assert r.status == 200 and await r.text() == "console.log(1)"
        async with http.get(srv.url + "/static/../../etc/passwd") as r:
            assert r.status in (403, 404)


async def test_avatar_upload_list_thumbnail_and_use(tmp_path):
    async with live_server(upload_dir=tmp_path) as srv, aiohttp.ClientSession() as http:
        # EXIF orientation 6 = rotate 90 degrees clockwise: a 40x30 image becomes 30x40.
        async with http.post(srv.url + "/api/avatars?name=me_1", data=image_bytes("JPEG", exif_orientation=6)) as r:
            assert r.status == 201, await r.text()
            assert await r.json() == {"name": "me_1", "width": 30, "height": 40}
        stored = np.asarray(Image.open(tmp_path / "me_1.png"))
        assert stored.shape == (40, 30, 3)
        assert stored[2, -3, 2] > 150 and stored[-3, 2, 0] > 150  # the blue mark moved to the top-right
        form = aiohttp.FormData()
        form.add_field("file", image_bytes("WEBP"), filename="x.webp", content_type="application/octet-stream")
        async with http.post(srv.url + "/api/avatars?name=webp", data=form) as r:
            assert r.status == 201 and (await r.json())["width"] == 40
        async with http.get(srv.url + "/api/avatars") as r:
            listing = await r.json()
        assert listing["default"] == "test"
        by_name = {a["name"]: a for a in listing["avatars"]}
        assert by_name["me_1"] == {"name": "me_1", "builtin": False, "width": 30, "height": 40, "kind": "image"}
        assert by_name["test"]["builtin"] is True and "webp" in by_name
        async with http.get(srv.url + "/api/avatars/me_1/thumbnail") as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            assert Image.open(io.BytesIO(await r.read())).size == (30, 40)
        async with http.get(srv.url + "/api/avatars/ghost/thumbnail") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_avatar"
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json({"type": "hello", "version": 1, "avatar": "me_1"})
            ready = await ws.receive_json()
            assert ready["type"] == "ready" and ready["avatar"] == "me_1"


async def test_bad_uploads_are_refused_with_the_right_status(tmp_path):
    async with live_server(upload_dir=tmp_path, max_upload_bytes=200_000, max_upload_pixels=1_000_000) as srv, \
            aiohttp.ClientSession() as http:
        async def post(name, data, **kw):
            async with http.post(srv.url + "/api/avatars", params={"name": name}, data=data, **kw) as r:
                return r.status, (await r.json())["error"]["code"] if r.status >= 400 else None

        assert await post("x", b"hello, I am not an image at all") == (400, "not_an_image")
        assert await post("x", image_bytes("GIF")) == (415, "unsupported_type")
        assert await post("x", image_bytes("PNG")[:60]) == (400, "not_an_image")  # truncated
        assert await post("x", image_bytes("PNG", size=(2000, 1000))) == (413, "too_large")  # 2 MP > 1 MP
        for bad in ("../../etc/passwd", "a/b", "..", "", "x" * 65, "name with space", "ünï"):
            assert (await post(bad, image_bytes("PNG")))[0] == 400, bad
        async with http.get(srv.url + "/api/avatars/..%2F..%2Fetc%2Fpasswd/thumbnail") as r:
            assert r.status in (400, 404)
        assert await post("test", image_bytes("PNG")) == (400, "bad_name")  # a built-in's name
        assert sorted(p.name for p in tmp_path.iterdir()) == []
        await assert_serves_a_session(srv, http)


async def test_a_50_mb_upload_gets_413_before_the_server_reads_it_all(tmp_path):
    async with live_server(upload_dir=tmp_path) as srv, aiohttp.ClientSession() as http:
        # Declared size: refused from the header alone.
        async with http.post(srv.url + "/api/avatars?name=big", data=b"\x89PNG" + bytes(50 * 1024 * 1024)) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
        # Chunked (no declared size): the server stops after the limit, long before 50 MB.
        sent = 0

        async def body():
            nonlocal sent
            chunk = b"\x89PNG\r\n\x1a\n" + bytes(1024 * 1024 - 8)
            for _ in range(50):
                sent += len(chunk)
                yield chunk
                await asyncio.sleep(0.01)

        t0 = time.monotonic()
        async with http.post(srv.url + "/api/avatars?name=big", data=body()) as r:
            assert r.status == 413
            sent_at_response = sent
        assert sent_at_response < 20 * 1024 * 1024, sent_at_response
        assert time.monotonic() - t0 < 5
        assert not list(tmp_path.iterdir())
        await assert_serves_a_session(srv, http)
