"""WebRTC transport: `POST /offer` signalling and one `PeerSession` per browser/peer.

Each peer gets an engine session, the avatar video track and the delayed speech track (both fed
by one `FramePump`), its microphone track(s) pushed into the session, and a `control` data
channel carrying the JSON messages of docs/protocol.md. A peer that fails ICE, closes, never
connects within `ice_connect_timeout_s`, stops sending microphone audio for `rtc_media_timeout_s`
(it vanished: ICE consent alone would take ~30 s to notice), or stays idle (no speech, no control
message) for `rtc_idle_timeout_s` is closed together with its session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from streaming.audio_fifo import AudioOverflow
from streaming.audio_input import AudioFormatError
from streaming.session import MAX_SPEAKERS, Session, SessionError, SessionState

from . import client_json, messages
from .avatar_routes import read_limited
from .avatars import AvatarError, validate_name
from .context import ServerContext, context_of
from .errors import ApiError
from .ice import rtc_configuration
from .sessions import TooManySessions
from .tracks import AvatarVideoTrack, FramePump, SpeechAudioTrack

log = logging.getLogger(__name__)

TRANSPORT = "webrtc"
MAX_OFFER_BYTES = 256 * 1024


def _parse_offer_sdp(sdp: str) -> SessionDescription:
    """Validate the SDP enough to give a clear 400 (aiortc raises bare errors on bad input)."""
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the client's malformed SDP
        raise ApiError(400, "bad_sdp", f"malformed SDP offer: {type(exc).__name__}: {exc}") from exc
    kinds = [m.kind for m in desc.media]
    if "video" not in kinds:
        raise ApiError(400, "bad_sdp", "the offer has no video m-line: add a video transceiver (recvonly is enough)")
    return desc


async def _read_offer(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        raise ApiError(413, "too_large", f"offer larger than {MAX_OFFER_BYTES} bytes")
    raw = await read_limited(request.content.read, MAX_OFFER_BYTES)  # chunked bodies have no length to check
    try:
        body = client_json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", 'body must be a JSON object {"sdp": ..., "type": "offer"}')
    if body.get("type") != "offer":
        raise ApiError(400, "bad_request", f'"type" must be "offer", got {body.get("type")!r}')
    if not isinstance(body.get("sdp"), str) or not body["sdp"].strip():
        raise ApiError(400, "bad_sdp", '"sdp" must be a non-empty string (the SDP offer)')
    if "avatar" in body:  # "" or null is a bad name, not the default
        try:
            validate_name(body["avatar"])
        except AvatarError as exc:
            raise ApiError(400, exc.code, exc.message) from exc
    speakers = body.get("speakers", 1)
    if not isinstance(speakers, int) or isinstance(speakers, bool) or not 1 <= speakers <= MAX_SPEAKERS:
        raise ApiError(400, "bad_request", f'"speakers" must be an integer 1..{MAX_SPEAKERS}, got {speakers!r}')
    return body


async def handle_offer(request: web.Request) -> web.Response:
    """POST /offer {sdp, type, avatar?, speakers?} -> {sdp, type: answer, session_id}."""
    ctx = context_of(request)
    if ctx.stopping:
        raise ApiError(503, "stopping", "the server is shutting down")
    body = await _read_offer(request)
    desc = _parse_offer_sdp(body["sdp"])
    name = body.get("avatar", ctx.avatars.default)
    try:
        validate_name(name)
        avatar = await asyncio.to_thread(ctx.avatars.get, name)
    except AvatarError as exc:
        raise ApiError(404 if exc.code == "unknown_avatar" else 400, exc.code, exc.message) from exc
    client = ctx.security.owner(request)  # the per-client session cap counts per owner
    try:
        ctx.sessions.reserve(TRANSPORT, client)
    except TooManySessions as exc:
        raise ApiError(429, "too_many_sessions", str(exc)) from exc
    peer = PeerSession(ctx, body.get("speakers", 1), client)
    try:
        answer = await peer.negotiate(body["sdp"], desc, avatar)
    except BaseException:
        await peer.close("negotiation failed")
        raise
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": peer.id})


async def handle_hangup(request: web.Request) -> web.Response:
    """DELETE /offer/{session_id}: close that peer and its session now -> 204.

    A peer that leaves before ICE completes (a closed tab, a client that gives up) sends nothing the
    server could see, and would hold its session slot until the connect timeout. Only the client that
    made the offer (same token, or same address without tokens) may hang it up; any other gets 404,
    as for an unknown or already closed session, so ids cannot be probed."""
    ctx = context_of(request)
    session_id = request.match_info["session_id"]
    owner = ctx.security.owner(request)
    peer = next((c for c in ctx.connections
                 if isinstance(c, PeerSession) and c.id == session_id and c.client == owner), None)
    if peer is None:
        raise ApiError(404, "unknown_session", "no open WebRTC session with this id for this client")
    await peer.close("hung up by the client")
    return web.Response(status=204)


class PeerSession:
    """One WebRTC client: peer connection, engine session, tracks, data channel, stats."""

    def __init__(self, ctx: ServerContext, speakers: int, client: str = "") -> None:
        self.ctx = ctx
        self.id = uuid.uuid4().hex[:12]
        self.speakers = speakers
        self.client = client
        self.pc = RTCPeerConnection(rtc_configuration(ctx.config))
        self.session: Session | None = None
        self.pump: FramePump | None = None
        self.video: AvatarVideoTrack | None = None
        self.audio: SpeechAudioTrack | None = None
        self.channel: Any = None
        self._mic_tracks: list[MediaStreamTrack] = []
        self._tasks: set[asyncio.Task] = set()
        self._switching = asyncio.Lock()
        self._closed = False
        self._slot_held = True
        now = asyncio.get_running_loop().time()
        self._last_activity = now  # speech or a control message
        self._last_media = now  # a microphone frame arrived
        ctx.connections.add(self)
        ctx.metrics.connections.labels(TRANSPORT).inc()

    # ------------------------------------------------------------------ setup
    async def negotiate(self, sdp: str, desc: SessionDescription, avatar) -> RTCSessionDescription:
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc rejects bad offers with assorted errors
            raise ApiError(400, "bad_sdp", f"the SDP offer was rejected: {type(exc).__name__}: {exc}") from exc
        try:
            self.session = await self.ctx.sessions.open(avatar, self.speakers, TRANSPORT, self.id)
        except SessionError as exc:
            raise ApiError(500, exc.code, exc.message) from exc
        self.session.add_state_listener(self._on_state)
        spec = self.session.spec
        self.video = AvatarVideoTrack(spec.fps)
        self.audio = SpeechAudioTrack(spec.samples_per_frame)
        self._attach_outputs(desc)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        self.pump = FramePump(self.session, self.video, self.audio, self._on_frame, self._on_session_end)
        self.pump.start()
        for speaker, track in enumerate(self._mic_tracks[: self.speakers]):
            self._spawn(self._consume_mic(track, speaker), f"mic-{speaker}")
        if len(self._mic_tracks) > self.speakers:
            log.info("peer %s: %d audio tracks for %d speaker(s); extra ignored", self.id,
                     len(self._mic_tracks), self.speakers)
        self._spawn(self._stats_loop(), "stats")
        self._spawn(self._connect_watchdog(), "watchdog")
        self._spawn(self._liveness_watchdog(), "liveness")
        log.info("peer %s: session %s open for %s (avatar %s)", self.id, self.session.id, self.client, avatar.name)
        return pc.localDescription

    def _attach_outputs(self, desc: SessionDescription) -> None:
        """Video on the video m-line; speech on the first audio m-line the client lets us send on."""
        directions = {m.rtp.muxId: (m.kind, m.direction or "sendrecv") for m in desc.media}
        for t in self.pc.getTransceivers():
            kind, direction = directions.get(t.mid, (t.kind, "inactive"))
            if direction not in ("sendrecv", "recvonly") or t.sender.track is not None:
                continue
            if kind == "video" and self.video is not None and not self.video_attached:
                t.sender.replaceTrack(self.video)
                t.direction = "sendrecv"  # aiortc answers with this AND the offer's reverse
            elif kind == "audio" and self.audio is not None and not self.audio_attached:
                t.sender.replaceTrack(self.audio)
                t.direction = "sendrecv"
        if not self.video_attached:
            raise ApiError(400, "bad_sdp", "no video m-line accepts video from the server: offer it recvonly or sendrecv")
        if not self.audio_attached:
            log.info("peer %s: no audio m-line accepts audio from the server; sending video only", self.id)

    @property
    def video_attached(self) -> bool:
        return any(t.sender.track is self.video for t in self.pc.getTransceivers())

    @property
    def audio_attached(self) -> bool:
        return any(t.sender.track is self.audio for t in self.pc.getTransceivers())

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=f"peer-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ events
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._mic_tracks.append(track)

    async def _consume_mic(self, track: MediaStreamTrack, speaker: int) -> None:
        overflow_reported = 0.0
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._last_media = loop.time()
            session = self.session
            if session is None:
                continue
            try:
                session.push_av_frame(frame, speaker)
            except AudioOverflow:
                self.ctx.metrics.audio_overflows.inc()
                if loop.time() - overflow_reported > 1.0:
                    overflow_reported = loop.time()
                    self.send({"type": "warning", "code": "audio_overflow",
                               "message": "speech buffer full: audio is arriving faster than real time"})
            except (AudioFormatError, ValueError) as exc:
                log.warning("peer %s: unusable microphone audio: %s", self.id, exc)
                self.send(messages.error("bad_audio", f"unusable microphone audio: {exc}"))
                return

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != "control":
            log.info("peer %s: ignoring data channel %r (only 'control' is used)", self.id, channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._send_ready()
        else:
            channel.on("open", self._send_ready)

    def _send_ready(self) -> None:
        if self.session is not None:
            self.send(messages.ready(self.session, websocket=False))
            self.send(messages.state(self.session.state.value))

    def _on_message(self, data: Any) -> None:
        try:
            msg = client_json.loads(data) if isinstance(data, str) else None
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._bad_message("control messages must be JSON objects with a string 'type'")
            return
        kind = msg["type"]
        self._last_activity = asyncio.get_running_loop().time()
        if kind == "interrupt":
            if self.session is not None:
                self.session.interrupt()
        elif kind == "ping":
            self.send({"type": "pong", "t": msg.get("t")})
        elif kind == "set_avatar":
            self._spawn(self._switch_avatar(msg.get("avatar")), "set-avatar")
        elif kind == "stats":
            self._send_stats()
        else:
            self._bad_message(f"unknown message type {kind[:40]!r}: use interrupt, set_avatar or ping")

    def _bad_message(self, text: str) -> None:
        self.ctx.metrics.error("bad_message")
        self.send(messages.error("bad_message", text))

    def _on_state(self, state: SessionState) -> None:
        self.send(messages.state(state.value))

    def _on_frame(self, frame) -> None:
        self.ctx.metrics.frame(TRANSPORT, frame)

    def _on_session_end(self, session: Session) -> None:
        if self._closed or session is not self.session:
            return
        if session.error is not None:
            self.ctx.metrics.error(session.error.code)
            self.send(messages.error(session.error.code, session.error.message))
            reason = f"session failed: {session.error.code}"
        else:
            reason = "session closed"
        self._spawn(self._close_soon(reason), "close")

    async def _close_soon(self, reason: str, delay: float = 0.5) -> None:
        await asyncio.sleep(delay)  # let the error message leave on the data channel
        await self.close(reason)

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("peer %s: connection %s", self.id, state)
        if state == "connected":
            self._last_media = asyncio.get_running_loop().time()
        if state in ("failed", "closed"):
            await self.close(f"connection {state}")
        elif state == "disconnected":
            self._spawn(self._disconnect_watchdog(), "disconnect")

    async def _disconnect_watchdog(self) -> None:
        await asyncio.sleep(self.ctx.config.ice_disconnect_grace_s)
        if self.pc.connectionState in ("disconnected", "failed"):
            await self.close("connection lost")

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.ctx.config.ice_connect_timeout_s)
        if self.pc.connectionState != "connected":
            await self.close(f"not connected after {self.ctx.config.ice_connect_timeout_s:.0f} s")

    async def _liveness_watchdog(self) -> None:
        """Close a peer that vanished (connected, microphone silent at the RTP level) or sits idle."""
        cfg = self.ctx.config
        loop = asyncio.get_running_loop()
        period = min(1.0, cfg.rtc_media_timeout_s / 4, cfg.rtc_idle_timeout_s / 4)
        while not self._closed:
            await asyncio.sleep(period)
            now = loop.time()
            session = self.session
            if session is not None and session.state == SessionState.SPEAKING:  # a muted mic still sends silence
                self._last_activity = now
            if (self._mic_tracks and self.pc.connectionState == "connected"
                    and now - self._last_media > cfg.rtc_media_timeout_s):
                await self.close(f"no microphone audio for {cfg.rtc_media_timeout_s:.0f} s: the peer is gone")
                return
            if now - self._last_activity > cfg.rtc_idle_timeout_s:
                self.ctx.metrics.error("idle_timeout")
                self.send(messages.error("idle_timeout", f"no speech and no control message for "
                                         f"{cfg.rtc_idle_timeout_s:.0f} s; reconnect when you have speech"))
                await self._close_soon("idle timeout")
                return

    # ------------------------------------------------------------------ control
    async def _switch_avatar(self, name: Any) -> None:
        async with self._switching:
            try:
                validate_name(name)
                avatar = await asyncio.to_thread(self.ctx.avatars.get, name)
            except AvatarError as exc:
                self.ctx.metrics.error(exc.code)
                self.send(messages.error(exc.code, exc.message))
                return
            if self._closed or self.pump is None or self.session is None:
                return
            try:
                new = await self.ctx.sessions.open(avatar, self.speakers, TRANSPORT, None)
            except SessionError as exc:
                self.ctx.metrics.error(exc.code)
                self.send(messages.error(exc.code, f"could not switch to avatar {name!r}: {exc.message}"))
                return
            if self._closed:
                await self.ctx.sessions.finish(new, "peer closed during switch")
                return
            new.add_state_listener(self._on_state)
            old = self.session
            self.session = new
            await self.pump.swap(new)
            await self.ctx.sessions.finish(old, "avatar switch")
            log.info("peer %s: switched to avatar %s (session %s)", self.id, name, new.id)
            self._send_ready()

    def send(self, msg: dict[str, Any]) -> None:
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return
        try:
            ch.send(json.dumps(msg))
        except Exception:  # noqa: BLE001 - a closing channel must not break the session
            log.debug("peer %s: data channel send failed", self.id, exc_info=True)

    def _send_stats(self) -> None:
        if self.session is not None and self.pump is not None:
            extra = self.video.dropped if self.video is not None else 0
            self.send(messages.stats(self.session, self.pump.frames, extra))

    async def _stats_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.ctx.config.stats_interval_s)
            self._send_stats()

    # ------------------------------------------------------------------ teardown
    async def close(self, reason: str) -> None:
        """Close everything this peer holds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        log.info("peer %s closing: %s", self.id, reason)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.pump is not None:
            await self.pump.stop()
        if self.session is not None:
            await self.ctx.sessions.finish(self.session, reason)
        if self.video is not None and self.video.dropped:
            self.ctx.metrics.dropped.labels("track").inc(self.video.dropped)
        try:
            await asyncio.wait_for(self.pc.close(), 5)
        except Exception:  # noqa: BLE001 - closing must always complete
            log.warning("peer %s: peer connection close failed", self.id, exc_info=True)
        if self._slot_held:
            self._slot_held = False
            self.ctx.sessions.release(TRANSPORT, self.client)
        self.ctx.connections.discard(self)
        self.ctx.metrics.connections.labels(TRANSPORT).dec()

    async def shutdown(self) -> None:
        """Tell the client (data channel `error` code `stopping`), give it a moment to leave, close."""
        if not self._closed:
            self.send(messages.error("stopping", "the server is shutting down"))
            await asyncio.sleep(0.2)
        await self.close("server shutting down")
