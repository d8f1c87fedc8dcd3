"""Generated speech over WebRTC: the offer declares it, `segment_end` and the playback events go over the
`control` data channel (a real aiortc client peer on loopback, the lite backend)."""

import time

from ..helpers.generated_speech import small_lite, speech_of
from ..helpers.rtc_client import RtcTestClient, WavMicrophone, resample_to_48k
from ..helpers.server_app import live_server


async def test_segment_end_and_playback_events_over_the_data_channel(speech_dir):
    speech = speech_of(speech_dir, 2.0)
    async with live_server(small_lite()) as srv:
        mic = WavMicrophone(resample_to_48k(speech))
        client = RtcTestClient(mic)
        try:
            answer = await client.connect(srv.url, input="generated")
            assert answer["status"] == 200
            await client.wait_for(lambda: client.of_type("ready"), 10)
            (ready,) = client.of_type("ready")
            assert ready["input"] == "generated" and ready["max_buffer_s"] == 300.0
            await client.wait_for(lambda: mic.finished, 10)
            marked = time.monotonic()
            client.send({"type": "segment_end"})
            await client.wait_for(lambda: client.of_type("playback_finished"), 5)
            client.send({"type": "segment_end", "now": True})  # malformed: an error, the channel stays open
            await client.wait_for(lambda: client.of_type("error"), 3)
        finally:
            await client.close()
    started, finished = client.of_type("playback_started")[0], client.of_type("playback_finished")[0]
    assert started == {"type": "playback_started", "segment": 0}
    assert finished["segment"] == 0 and finished["interrupted"] is False
    sent_s = marked - mic.t0  # the microphone's audio up to the marker (paced in real time)
    assert abs(finished["position_s"] - sent_s) < 0.3, (finished, sent_s)
    assert [t for t, m in client.messages if m is started][0] < [t for t, m in client.messages if m is finished][0]
    (error,) = client.of_type("error")
    assert error["code"] == "bad_message" and "segment_end takes no fields" in error["message"]
    assert client.of_type("buffer"), "no flow-control message"
