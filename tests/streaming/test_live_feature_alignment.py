"""Live: the speech features that drive each frame are the features of that frame's own audio.

Random weights cannot show lip sync, so this checks the invariant behind it. A live-paced session
runs with the tiny model; for every speech frame, the wav2vec2 row the backend gave the DiT is
compared with the whole-clip features of the audio timeline the windows were made from. A feature
stream that took padding for audio, skipped samples or shifted frames fails it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ..helpers.engine_runs import read_wav
from ..helpers.live_alignment import live_alignment_cosines
from ..helpers.tiny_infinitetalk import tiny_bundle, tiny_generator
from ..helpers.w2v_family import Member, W2VShape, build

# Beside the bundle's own wav2vec2, another of its family (transformers' init, the DiT's 2 x 32 sizes,
# another seed and positional conv). Over 9 such models, any positional conv (tests/bounds/feature_bounds_sweep.py
# --live), the worst was mean .959, 5th percentile .830: the bounds below hold. Golden-init models are
# not this family: there the worst of 8 was .83 / .67 (docs/live_features.md).
OTHER = Member(W2VShape(conv_dim=24, pos_kernel=12, pos_groups=2), seed=14, init="hf")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("wav2vec2", ["bundle's own", "another of its family"])
async def test_live_features_of_each_frame_are_those_of_its_audio(bundle, speech_dir, wav2vec2, tmp_path):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 3]
    if wav2vec2 != "bundle's own":
        bundle = dataclasses.replace(bundle, wav2vec2=build(OTHER, tmp_path))
    gen = tiny_generator(bundle)
    cos, windows = await live_alignment_cosines(gen, bundle.wav2vec2, speech)
    assert windows >= 4, "too few speech windows ran"
    # Incremental features follow the whole clip closely (docs/live_features.md); a row made from
    # padding or from other samples than the frame's own falls far below.
    # Measured: mean .97, 5th percentile .90 (before the look-ahead fix: .89 and .30).
    assert float(cos.quantile(0.05)) > 0.7 and float(cos.mean()) > 0.93, cos
