"""The project's one timebase: speech at 16 kHz, video at 25 fps, so every video frame owns exactly 640
samples. The reference's wav2vec2 features, the engine's windows, the protocol's defaults and the clients
all count in these units; they are defined here, once (a test keeps the literals out of everywhere else).
"""

SAMPLE_RATE = 16_000
"""Speech samples per second everywhere inside the product (input is resampled to it on arrival)."""

VIDEO_FPS = 25
"""Output video frames per second (InfiniteTalk's and the reference's frame rate)."""

SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS
"""640: the audio one video frame carries."""
