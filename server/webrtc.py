"""WebRTC transport: `POST /offer` signalling and one `PeerSession` per browser/peer.

The lifecycle (slot, session, control, audio, tasks, teardown) is `Connection`'s; here is what is
WebRTC's: negotiation, the avatar video track and the delayed speech track (both fed by one
`FramePump`), the microphone track(s), the `control` data channel, the avatar switch and the
watchdogs. A peer that fails ICE, closes, never connects within `ice_connect_timeout_s`, stops
sending microphone audio for `rtc_media_timeout_s` (it vanished: ICE consent alone would take
~30 s to notice), or stays idle (no speech, no control message) for `rtc_idle_timeout_s` is closed
together with its session.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from streaming.audio_input import AudioFormatError
from streaming.generator import Avatar
from streaming.output import OutputFrame
from streaming.session import MAX_SPEAKERS, SessionError, SessionState

from . import client_json, messages
from .avatar_routes import read_limited
from .avatars import AvatarError, validate_name
from .connection import Connection, ConnectionClosed, ControlHandler, Goodbye
from .context import ServerContext, context_of
from .errors import ApiError
from .ice import rtc_configuration
from .sessions import TooManySessions
from .tracks import AvatarVideoTrack, FramePump, SpeechAudioTrack
from .transports import Transport
from .ws_protocol import ProtocolError, parse_input_mode, parse_json_message

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 256 * 1024
ERROR_FLUSH_S = 0.5  # an `error` gets this long to leave on the data channel before the peer closes


def add_routes(app: web.Application) -> None:
    app.router.add_post("/offer", handle_offer)
    app.router.add_delete("/offer/{session_id}", handle_hangup)


TRANSPORT = Transport("webrtc", frames_in_band=False, add_routes=add_routes)


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
    try:
        body["generated"] = parse_input_mode(body.get("input", "live"), speakers)
    except ProtocolError as exc:
        raise ApiError(400, "bad_request", exc.message) from exc
    return body


def _refused(exc: TooManySessions) -> ApiError:
    """429 for the limits, 503 + Retry-After when a cluster has no free worker slot."""
    headers = None if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    return ApiError(exc.http_status, exc.code, str(exc), headers)


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
    peer = PeerSession(ctx, body.get("speakers", 1), ctx.security.owner(request))
    peer.generated_speech = body["generated"]
    try:
        peer.admit()
    except TooManySessions as exc:
        raise _refused(exc) from exc
    peer.register()
    try:
        answer = await peer.negotiate(body["sdp"], desc, avatar)
    except BaseException as exc:
        await peer.close(Goodbye("negotiation failed"))
        if isinstance(exc, ConnectionClosed):
            raise ApiError(503, "stopping", "the server is shutting down") from exc
        if isinstance(exc, TooManySessions):  # cluster mode: the last free worker slot went meanwhile
            raise _refused(exc) from exc
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
    await peer.close(Goodbye("hung up by the client"))
    return web.Response(status=204)


class PeerSession(Connection):
    """One WebRTC client: peer connection, tracks, microphone input, data channel, watchdogs."""

    transport = TRANSPORT
    log = log
    overflow_message = "speech buffer full: audio is arriving faster than real time"

    def __init__(self, ctx: ServerContext, speakers: int, client: str = "") -> None:
        super().__init__(ctx, client)
        self.speakers = speakers
        self.pc: RTCPeerConnection | None = None  # made by negotiate(), once admitted
        self.pump: FramePump | None = None
        self.video: AvatarVideoTrack | None = None
        self.audio: SpeechAudioTrack | None = None
        self.channel: Any = None
        self._mic_tracks: list[MediaStreamTrack] = []
        self._switching = asyncio.Lock()
        now = asyncio.get_running_loop().time()
        self._last_activity = now  # speech or a control message
        self._last_media = now  # a microphone frame arrived

    @property
    def frames_sent(self) -> int:
        return self.pump.frames if self.pump is not None else 0

    @property
    def frames_dropped(self) -> int:
        return self.video.dropped if self.video is not None else 0

    # ------------------------------------------------------------------ setup
    async def negotiate(self, sdp: str, desc: SessionDescription, avatar: Avatar) -> RTCSessionDescription:
        self.pc = pc = RTCPeerConnection(rtc_configuration(self.ctx.config))
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc rejects bad offers with assorted errors
            raise ApiError(400, "bad_sdp", f"the SDP offer was rejected: {type(exc).__name__}: {exc}") from exc
        try:
            session = await self.start_session(avatar, self.speakers)
        except SessionError as exc:
            raise ApiError(500, exc.code, exc.message) from exc
        self.video = AvatarVideoTrack(session.spec.fps)
        self.audio = SpeechAudioTrack(session.spec.samples_per_frame)
        self._attach_outputs(desc)
        await pc.setLocalDescription(await pc.createAnswer())
        self.pump = FramePump(session, self.video, self.audio, self._frame_out, self.session_ended)
        self.pump.start()
        for speaker, track in enumerate(self._mic_tracks[: self.speakers]):
            self.spawn(self._consume_mic(track, speaker), f"mic-{speaker}")
        if len(self._mic_tracks) > self.speakers:
            log.info("webrtc %s: %d audio tracks for %d speaker(s); extra ignored", self.id,
                     len(self._mic_tracks), self.speakers)
        self.spawn(self._connect_watchdog(), "watchdog")
        self.spawn(self._liveness_watchdog(), "liveness")
        return pc.localDescription

    def _attach_outputs(self, desc: SessionDescription) -> None:
        """Video on the video m-line; speech on the first audio m-line the client lets us send on."""
        assert self.pc is not None
        directions = {m.rtp.muxId: (m.kind, m.direction or "sendrecv") for m in desc.media}
        for t in self.pc.getTransceivers():
            kind, direction = directions.get(t.mid, (t.kind, "inactive"))
            if direction not in ("sendrecv", "recvonly") or t.sender.track is not None:
                continue
            if kind == "video" and self.video is not None and not self._attached(self.video):
                t.sender.replaceTrack(self.video)
                t.direction = "sendrecv"  # aiortc answers with this AND the offer's reverse
            elif kind == "audio" and self.audio is not None and not self._attached(self.audio):
                t.sender.replaceTrack(self.audio)
                t.direction = "sendrecv"
        if not self._attached(self.video):
            raise ApiError(400, "bad_sdp", "no video m-line accepts video from the server: offer it recvonly or sendrecv")
        if not self._attached(self.audio):
            log.info("webrtc %s: no audio m-line accepts audio from the server; sending video only", self.id)

    def _attached(self, track: MediaStreamTrack | None) -> bool:
        assert self.pc is not None
        return any(t.sender.track is track for t in self.pc.getTransceivers())

    # ------------------------------------------------------------------ input
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._mic_tracks.append(track)

    async def _consume_mic(self, track: MediaStreamTrack, speaker: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._last_media = loop.time()
            try:
                self.push_av_frame(frame, speaker)
            except (AudioFormatError, ValueError) as exc:
                log.warning("webrtc %s: unusable microphone audio: %s", self.id, exc)
                self.send(messages.error("bad_audio", f"unusable microphone audio: {exc}"))
                return

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != "control":
            log.info("webrtc %s: ignoring data channel %r (only 'control' is used)", self.id, channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self.send_ready()
        else:
            channel.on("open", self.send_ready)

    def _on_message(self, data: Any) -> None:
        """A control message; a bad one gets `error` `bad_message` and the channel stays open."""
        try:
            if not isinstance(data, str):
                raise ProtocolError("bad_message", "control messages must be JSON text, not binary")
            msg = parse_json_message(data)
            self._last_activity = asyncio.get_running_loop().time()
            self.handle_control(msg)
        except ProtocolError as exc:
            self.report(exc.code, exc.message)

    def control_handlers(self) -> dict[str, ControlHandler]:
        return {**super().control_handlers(), "set_avatar": self._set_avatar}

    def _set_avatar(self, msg: dict[str, Any]) -> None:
        self.spawn(self._switch_avatar(msg.get("avatar")), "set-avatar")

    async def _switch_avatar(self, name: Any) -> None:
        """The session restarts with another avatar on the same peer and tracks (a new `ready`)."""
        async with self._switching:
            try:
                validate_name(name)
                avatar = await asyncio.to_thread(self.ctx.avatars.get, name)
            except AvatarError as exc:
                self.report(exc.code, exc.message)
                return
            if self.pump is None or self.session is None:
                return
            try:
                new = await self.open_session(avatar, self.speakers)
            except SessionError as exc:
                self.report(exc.code, f"could not switch to avatar {name!r}: {exc.message}")
                return
            except TooManySessions as exc:  # cluster mode: the new session needs a free worker slot
                self.report(exc.code, f"could not switch to avatar {name!r}: {exc}")
                return
            except ConnectionClosed:
                return
            old, self.session = self.session, new
            try:
                await self.pump.swap(new)
            finally:  # even when cancelled by close(): the old session is ours to finish
                await self.ctx.sessions.finish(old, "avatar switch")
            log.info("webrtc %s: switched to avatar %s (session %s)", self.id, name, new.id)
            self.send_ready()

    # ------------------------------------------------------------------ output
    def _frame_out(self, frame: OutputFrame) -> None:
        self.count_frame(frame)
        self.send_events(frame)

    def send(self, msg: dict[str, Any]) -> None:
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return
        try:
            ch.send(json.dumps(msg))
        except Exception:  # noqa: BLE001 - a closing channel must not break the session
            log.debug("webrtc %s: data channel send failed", self.id, exc_info=True)

    # ------------------------------------------------------------------ watchdogs
    async def _on_connection_state(self) -> None:
        assert self.pc is not None
        state = self.pc.connectionState
        log.info("webrtc %s: connection %s", self.id, state)
        if state == "connected":
            self._last_media = asyncio.get_running_loop().time()
        if state in ("failed", "closed"):
            await self.close(Goodbye(f"connection {state}"))
        elif state == "disconnected":
            self.spawn(self._disconnect_watchdog(), "disconnect")

    async def _disconnect_watchdog(self) -> None:
        await asyncio.sleep(self.ctx.config.ice_disconnect_grace_s)
        if self.pc is not None and self.pc.connectionState in ("disconnected", "failed"):
            await self.close(Goodbye("connection lost"))

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.ctx.config.ice_connect_timeout_s)
        if self.pc is not None and self.pc.connectionState != "connected":
            await self.close(Goodbye(f"not connected after {self.ctx.config.ice_connect_timeout_s:.0f} s"))

    async def _liveness_watchdog(self) -> None:
        """Close a peer that vanished (connected, microphone silent at the RTP level) or sits idle."""
        cfg = self.ctx.config
        loop = asyncio.get_running_loop()
        period = min(1.0, cfg.rtc_media_timeout_s / 4, cfg.rtc_idle_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            session = self.session
            if session is not None and session.state == SessionState.SPEAKING:  # a muted mic still sends silence
                self._last_activity = now
            if (self._mic_tracks and self.pc is not None and self.pc.connectionState == "connected"
                    and now - self._last_media > cfg.rtc_media_timeout_s):
                await self.close(Goodbye(f"no microphone audio for {cfg.rtc_media_timeout_s:.0f} s: the peer is gone"))
                return
            if now - self._last_activity > cfg.rtc_idle_timeout_s:
                await self.close(Goodbye.with_error("idle_timeout", f"no speech and no control message for "
                                                    f"{cfg.rtc_idle_timeout_s:.0f} s; reconnect when you have speech"))
                return

    # ------------------------------------------------------------------ the close
    async def _say_goodbye(self, goodbye: Goodbye) -> None:
        if goodbye.error is not None and self.channel is not None:
            self.send(goodbye.error)
            await asyncio.sleep(ERROR_FLUSH_S)
        if self.pump is not None:
            await self.pump.stop()

    async def _close_transport(self) -> None:
        if self.video is not None and self.video.dropped:
            self.ctx.metrics.dropped.labels("track").inc(self.video.dropped)
        if self.pc is not None:
            await asyncio.wait_for(self.pc.close(), 5)

    async def shutdown(self) -> None:
        """Tell the client (data channel `error` code `stopping`), give it a moment to leave, close."""
        await self.close(Goodbye.with_error("stopping", "the server is shutting down", reason="server shutting down"))
