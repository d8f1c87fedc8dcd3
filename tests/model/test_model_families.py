"""model/ builds a ready model from `ModelOptions`: the family registry picks the family, the family
resolves files, preset and size, and the pipeline is built whole (nothing patched in afterwards)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from model.families import ModelOptions
from model.families.registry import build_model, families, family_for, is_follower_rank
from model.infinitetalk.assemble import InfiniteTalkModel, window_settings
from model.infinitetalk.presets import PRESETS, get_preset
from model.infinitetalk.tiny import write_tiny_flashtalk_weights
from model.options import add_arguments, option


def test_the_registry_finds_the_infinitetalk_family_by_its_package_and_owns_every_preset():
    assert set(families()) == {"flashhead", "infinitetalk"}
    family = families()["infinitetalk"]
    assert set(family.presets) == set(PRESETS) and set(family.kinds) == {"infinitetalk", "flashtalk"}
    for preset in PRESETS:
        assert family_for(ModelOptions(preset=preset)) is family


def test_the_family_comes_from_the_preset_the_weights_config_kind_or_the_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'nope': choose one of .*flashhead-pro, .*infinitetalk, .*tiny-random"):
        family_for(ModelOptions(preset="nope"))
    root = write_tiny_flashtalk_weights(tmp_path / "ft")
    family = families()["infinitetalk"]
    assert family.detect(root) == "flashtalk" and family_for(ModelOptions(weights=root)) is family
    assert family.detect(tmp_path) is None  # an empty folder is nobody's: the default family reports it
    config = tmp_path / "w.json"
    config.write_text(json.dumps({"kind": "flashtalk"}))
    assert family_for(ModelOptions(weights_config=config)) is family


def test_without_weights_the_error_names_the_options_that_give_them_and_the_lite_backend():
    with pytest.raises(ValueError, match=r"needs --weights DIR .*--preset tiny-random.*--backend lite"):
        build_model(ModelOptions())


def test_bad_option_combinations_are_refused_when_the_options_are_made():
    with pytest.raises(ValueError, match="add --sequence-parallel"):
        ModelOptions(vae_split=True)
    with pytest.raises(ValueError, match="--vae-split-halo must be >= 0"):
        ModelOptions(sequence_parallel=True, vae_split=True, vae_split_halo=-1)


def test_tiny_random_builds_a_whole_pipeline_for_its_preset_with_the_options_overrides(monkeypatch):
    monkeypatch.setenv("RANK", "1")  # not a follower without --sequence-parallel, whatever the rank
    opts = ModelOptions(preset="tiny-random", steps=1, colour_strength=0.5, seed=4)
    assert not is_follower_rank(opts) and is_follower_rank(dataclasses.replace(opts, sequence_parallel=True))
    model = build_model(opts)
    assert isinstance(model, InfiniteTalkModel)
    assert model.preset == "tiny-random" and model.size == (64, 64)
    assert model.window == dataclasses.replace(get_preset("tiny-random"), steps=1, colour_strength=0.5)
    assert model.window == window_settings(opts)
    pipe = model.bundle.pipe
    assert pipe.dit_forward is pipe.dit and pipe.dit.sequence_parallel is None  # one process: nothing wrapped
    assert "TINY RANDOM MODEL" in model.bundle.description and "preset tiny-random" in model.bundle.description
    assert pipe.dit.dtype == torch.float32
    model.bundle.close()  # nothing beyond this process to release: a no-op, as often as called
    model.bundle.close()


def test_option_fields_say_what_is_wrong_when_they_cannot_become_flags():
    @dataclasses.dataclass(frozen=True)
    class NoParser:
        pair: tuple[int, int] | None = option(None, "two numbers")

    @dataclasses.dataclass(frozen=True)
    class OnByDefault:
        fast: bool = option(True, "go fast")

    @dataclasses.dataclass(frozen=True)
    class Clash:
        steps: int | None = option(None, "another --steps")

    for cls, message in ((NoParser, "no parser for"), (OnByDefault, "must default to False")):
        with pytest.raises(TypeError, match=message):
            add_arguments(argparse.ArgumentParser(), cls, "test")
    p, seen = argparse.ArgumentParser(), {}
    add_arguments(p, ModelOptions, "model", seen)
    add_arguments(p, ModelOptions, "model again", seen)  # the same fields again: skipped, no conflict
    with pytest.raises(ValueError, match="flag --steps is defined twice: ModelOptions.steps and Clash.steps"):
        add_arguments(p, Clash, "clash", seen)
    assert Path(p.parse_args(["--weights", "w"]).weights) == Path("w")
