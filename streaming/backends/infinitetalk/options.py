"""Options of the infinitetalk backend: the model's (`ModelOptions`) plus how live speech is turned into
features and what the avatar does while nobody speaks. Light (no torch): the CLI makes its flags."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from model.families.options import ModelOptions
from model.options import group, option

if TYPE_CHECKING:
    from streaming.features import FeatureSettings

AudioFeatures = Literal["incremental", "rolling"]

PRESET_AUDIO_FEATURES: dict[str, AudioFeatures] = {"flashtalk": "rolling"}
"""Speech-feature path of the presets that do not use "incremental": FlashTalk streams with rolling features."""


@dataclass(frozen=True)
class InfiniteTalkOptions:
    """model: what to load and how to sample it. features: the live wav2vec2 extractor (None: its defaults)."""

    model: ModelOptions = group(ModelOptions)
    audio_features: AudioFeatures | None = option(
        None, "speech features: incremental (wav2vec2 with 0.52 s look-ahead, equal to the whole clip's; "
              "default) or rolling (SoulX-FlashTalk's: last 8 s re-encoded per window, no look-ahead; "
              "default of the flashtalk preset)")
    idle: Literal["generate", "source"] = option(
        "generate", "when nobody speaks: generate with silent audio, or play a video avatar's source")
    face_crop: bool = option(
        False, "flashhead presets: crop the avatar around the face first (the reference's --use_face_crop, with "
               "OpenCV's face box in place of mediapipe)")
    features: "FeatureSettings | None" = None

    def audio_features_for(self, preset: str | None) -> AudioFeatures:
        """The speech-feature path: as asked, else the preset's."""
        return self.audio_features or PRESET_AUDIO_FEATURES.get(preset or "", "incremental")
