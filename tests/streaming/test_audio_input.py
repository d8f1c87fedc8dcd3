import numpy as np
import pytest

from streaming.audio_fifo import AudioOverflow, SpeechFifo
from streaming.audio_input import AudioConverter, AudioFormatError, PcmFormat


def _tone(freq: float, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def _dominant_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spec.argmax()])


@pytest.mark.parametrize("rate,channels,fmt", [(48000, 2, "s16"), (44100, 1, "flt"), (8000, 1, "s16"), (16000, 1, "s32")])
def test_any_rate_and_layout_becomes_16k_mono_with_the_same_pitch(rate, channels, fmt):
    x = _tone(440.0, rate, 1.0, channels)
    if fmt == "s16":
        raw = (x * 32767).astype(np.int16)
    elif fmt == "s32":
        raw = (x * 2**31).astype(np.int32)
    else:
        raw = x
    conv = AudioConverter()
    pf = PcmFormat(rate, channels, fmt)
    data = raw.tobytes()
    out = [conv.convert_pcm(data[i : i + 999], pf) for i in range(0, len(data), 999)]  # odd chunking
    y = np.concatenate(out + [conv.flush()])
    assert y.dtype == np.float32
    assert abs(y.size - 16000) <= 2
    assert abs(_dominant_freq(y[1000:15000], 16000) - 440.0) < 3.0
    assert 0.3 < np.abs(y[1000:15000]).max() < 0.6


def test_16k_mono_s16_passes_through_sample_exact():
    x = (np.random.default_rng(0).standard_normal(3200) * 3000).astype(np.int16)
    conv = AudioConverter()
    y = np.concatenate([conv.convert_pcm(x[:1000].tobytes(), PcmFormat()), conv.convert_pcm(x[1000:].tobytes(), PcmFormat()), conv.flush()])
    np.testing.assert_array_equal(y, x.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_any_message_sizes_give_exactly_one_continuous_resampling(speech_dir, rate):
    # Issue 13: the resampler is not where samples were gained; split anywhere (mid-sample too), the
    # stream equals the whole input resampled at once, sample for sample.
    from ..helpers.audio_exact import one_resampling, to_rate_stereo
    from ..helpers.engine_runs import read_wav

    pcm = to_rate_stereo(read_wav(speech_dir / "dialogue_with_pause.wav")[: 16000 * 8], rate)
    fmt = PcmFormat(rate, 2, "s16")
    data, rng, conv, parts, pos = pcm.tobytes(), np.random.default_rng(rate), AudioConverter(), [], 0
    while pos < len(data):
        n = int(rng.integers(1, 9000))
        parts.append(conv.convert_pcm(data[pos : pos + n], fmt))
        pos += n
    np.testing.assert_array_equal(np.concatenate(parts + [conv.flush()]), one_resampling(pcm, fmt))


@pytest.mark.parametrize("kwargs", [{"sample_rate": 1000}, {"sample_rate": 16000.5}, {"channels": 0}, {"channels": 9}, {"sample_format": "mp3"}])
def test_bad_pcm_declarations_are_refused_with_a_clear_message(kwargs):
    with pytest.raises(AudioFormatError, match="not supported"):
        PcmFormat(**kwargs)


def test_fifo_is_bounded_and_keeps_arrival_times():
    fifo = SpeechFifo(max_samples=1000)
    fifo.push(np.ones(400), arrival=1.0)
    fifo.push(np.full(400, 2.0), arrival=2.0)
    with pytest.raises(AudioOverflow, match="real time"):
        fifo.push(np.ones(300), arrival=3.0)
    assert len(fifo) == 800
    assert fifo.arrival_of(399) == 1.0 and fifo.arrival_of(400) == 2.0
    taken = fifo.take(500)
    np.testing.assert_array_equal(taken[:400], 1.0)
    np.testing.assert_array_equal(taken[400:], 2.0)
    assert fifo.arrival_of(0) == 2.0 and len(fifo) == 300
    np.testing.assert_array_equal(fifo.peek(1000), np.full(300, 2.0))
    fifo.clear()
    assert len(fifo) == 0 and fifo.arrival_of(0) is None
