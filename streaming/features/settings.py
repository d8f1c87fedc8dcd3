"""Settings of the live wav2vec2 feature extractor."""

from __future__ import annotations

from dataclasses import dataclass

from model.audio import TARGET_LUFS


@dataclass(frozen=True)
class FeatureSettings:
    """How the live extractor trades latency and compute for closeness to the whole-clip features.

    All lengths are in video frames (25 fps: one frame = 40 ms = 640 samples = 2 conv frames).

    left_context_frames: encoder tokens before each block that the bidirectional encoder sees.
    encoder: "cached" encodes each token once, with its block, and lets later blocks attend to
        its cached per-layer keys/values; "recompute" re-encodes [left context | block |
        look-ahead] for every block, as (context + block + look-ahead) / block times the work.
    lookahead_frames: tokens after each block the encoder waits for. Adds directly to latency.
    block_frames: frames emitted per encoder run (the encoder runs once per block on
        left context + block + look-ahead tokens). Larger blocks cost less per second of audio but
        make a block's first frame wait up to block_frames - 1 more frames.
    stats_horizon_s: memory of the running normalisation statistics: cumulative (like the whole
        clip) for this many seconds, then exponential forgetting with this time constant, so a
        long session follows a changed microphone level. None: cumulative forever.
    stats_warmup_frames: at most this many frames, from the first frame with sound, wait for each
        other and are all normalised with the statistics of that audio. Capped further at what the
        blocks reading them wait for anyway (1 to block_frames + lookahead_frames frames, by where
        the sound starts), so the warm-up never adds latency.
    quiet_rms: frames quieter than this (raw RMS; 1e-3 = -60 dBFS) are "quiet": they update the
        running statistics only as the first `pause_frames` of a pause after sound, so idle
        audio (silence pushed while no one speaks, for minutes) never drags them toward silence.
    loudness: estimate the reference's -23 LUFS gain live (it only changes an epsilon).
    loudness_window_s: window of the live loudness meter (None: whole session).
    """

    left_context_frames: int = 50
    encoder: str = "cached"
    lookahead_frames: int = 8
    block_frames: int = 4
    stats_horizon_s: float | None = 60.0
    stats_warmup_frames: int = 25
    quiet_rms: float = 1e-3
    pause_frames: int = 25
    loudness: bool = True
    loudness_window_s: float | None = None
    target_lufs: float = TARGET_LUFS

    def __post_init__(self) -> None:
        if self.left_context_frames < 0 or self.lookahead_frames < 0:
            raise ValueError("left_context_frames and lookahead_frames must be >= 0")
        if self.encoder not in ("cached", "recompute"):
            raise ValueError(f"encoder must be 'cached' or 'recompute', got {self.encoder!r}")
        if self.block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {self.block_frames}")
        if self.stats_warmup_frames < 1:
            raise ValueError(f"stats_warmup_frames must be >= 1, got {self.stats_warmup_frames}")
        if self.quiet_rms < 0 or self.pause_frames < 0:
            raise ValueError("quiet_rms and pause_frames must be >= 0")
        if self.stats_horizon_s is not None and self.stats_horizon_s <= 0:
            raise ValueError(f"stats_horizon_s must be > 0 seconds or None, got {self.stats_horizon_s}")

    @property
    def max_delay_frames(self) -> int:
        """Most frames a frame waits after its own 40 ms of audio is complete before it is emitted."""
        return self.lookahead_frames + self.block_frames - 1
