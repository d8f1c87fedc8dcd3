"""Avatar HTTP API: list, thumbnails, uploads (streamed with a byte limit, never read unbounded)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .avatars import AvatarError, validate_name
from .context import context_of
from .errors import ApiError

_STATUS = {"bad_name": 400, "unknown_avatar": 404, "not_an_image": 400, "unsupported_type": 415, "too_large": 413}
CHUNK = 64 * 1024


def _api_error(exc: AvatarError) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 400), exc.code, exc.message)


async def list_avatars(request: web.Request) -> web.Response:
    store = context_of(request).avatars
    infos = await asyncio.to_thread(store.list_info)
    return web.json_response({"default": store.default, "avatars": [i.as_json() for i in infos]})


async def thumbnail(request: web.Request) -> web.Response:
    store = context_of(request).avatars
    try:
        name = validate_name(request.match_info["name"])
        data = await asyncio.to_thread(store.thumbnail, name)
    except AvatarError as exc:
        raise _api_error(exc) from exc
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=60"})


async def read_limited(read, limit: int) -> bytes:
    """Read chunks until EOF; 413 as soon as more than `limit` bytes arrived (the rest is never read)."""
    buf = bytearray()
    while True:
        chunk = await read(CHUNK)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, "too_large", f"request body larger than the limit of {limit} bytes")


async def _read_multipart_file(request: web.Request, limit: int) -> bytes:
    """The `file` field of a multipart body; a malformed body is the client's 400, not our 500."""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) == "file":
                return await read_limited(part.read_chunk, limit)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc}"[:300]) from exc
    raise ApiError(400, "bad_request", "multipart upload without a 'file' field")


async def upload_avatar(request: web.Request) -> web.Response:
    """POST /api/avatars?name=NAME, body = the image (raw, or multipart field `file`)."""
    ctx = context_of(request)
    store = ctx.avatars
    limit = ctx.config.max_upload_bytes
    try:
        name = validate_name(request.query.get("name", ""))
    except AvatarError as exc:
        raise _api_error(exc) from exc
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise ApiError(413, "too_large", f"upload of {request.content_length} bytes; the limit is {limit}")
    if request.content_type.startswith("multipart/"):
        data = await _read_multipart_file(request, limit)
    else:
        data = await read_limited(request.content.read, limit)
    if not data:
        raise ApiError(400, "not_an_image", "empty upload: send the image bytes as the body")
    try:
        info = await store.upload(name, data)
    except AvatarError as exc:
        raise _api_error(exc) from exc
    return web.json_response({"name": info.name, "width": info.width, "height": info.height}, status=201)


def add_avatar_routes(app: web.Application) -> None:
    app.router.add_get("/api/avatars", list_avatars)
    app.router.add_post("/api/avatars", upload_avatar)
    app.router.add_get("/api/avatars/{name}/thumbnail", thumbnail)
