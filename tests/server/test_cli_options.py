"""Every backend flag of `serve`, `render` and `bench` is generated from one options dataclass, and the
command line picks the backend the way it says (issue 14, items 2 and 8)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from model.families import ModelOptions
from model.options import group, option, option_fields
from server.cli import parser
from streaming.backends import Backend, register, unregister
from streaming.backends.flags import backend_from_args
from streaming.backends.infinitetalk import InfiniteTalkOptions
from streaming.backends.lite import LiteSettings

RENDER = ["render", "--avatar", "astronaut", "--audio", "a.wav", "-o", "out.mp4"]


def subcommand(p: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def group_flags(p: argparse.ArgumentParser, title_prefix: str) -> dict[str, set[str]]:
    """Argument group title -> its long flags, for the groups whose title starts with `title_prefix`."""
    return {g.title: {s for a in g._group_actions for s in a.option_strings if s.startswith("--")}
            for g in p._action_groups if g.title.startswith(title_prefix)}


def own_flags(p: argparse.ArgumentParser, title_prefix: str) -> set[str]:
    """Flags of the groups NOT starting with `title_prefix` (what the command itself defines)."""
    return {s for g in p._action_groups if not g.title.startswith(title_prefix)
            for a in g._group_actions for s in a.option_strings}


def test_the_backend_flags_of_serve_render_and_bench_are_exactly_the_options_dataclass_fields():
    model_flags = {o.flag for o in option_fields(InfiniteTalkOptions)}
    assert {o.name for o in option_fields(ModelOptions)} == {f.name for f in dataclasses.fields(ModelOptions)}
    assert {"--weights", "--preset", "--steps", "--size", "--lora", "--vae-split-halo", "--idle"} <= model_flags
    p = parser()
    for command in ("serve", "render", "bench"):
        sub = subcommand(p, command)
        lite = {"backend lite": {"--lite-width", "--lite-height"}} if command != "bench" else {}
        assert group_flags(sub, "backend ") == {"backend infinitetalk": model_flags, **lite}, command
        assert not own_flags(sub, "backend ") & model_flags, f"{command} defines a model flag by hand"
        dests = [a.dest for a in sub._actions if a.dest != "help"]
        assert len(dests) == len(set(dests)), f"{command}: two flags write the same field"
    bench = subcommand(p, "bench")
    from streaming.benchmark.options import BenchOptions

    assert group_flags(bench, "bench") == {"bench": {o.flag for o in option_fields(BenchOptions)}}


def test_no_flags_parse_to_the_dataclass_defaults_and_every_flag_reaches_its_field():
    p = parser()
    backend, opts = backend_from_args(p.parse_args([*RENDER, "--backend", "infinitetalk"]))
    assert backend.name == "infinitetalk" and opts == InfiniteTalkOptions()
    args = p.parse_args([
        "serve", "--weights", "W", "--weights-config", "W.json", "--preset", "flashtalk", "--verify-weights", "size",
        "--device", "cpu", "--dtype", "fp16", "--fp8", "row", "--compile", "--cuda-graphs", "--sequence-parallel",
        "--vae-split", "--vae-split-halo", "3", "--teacache", "0.2", "--size", "48x64", "--frames", "21",
        "--motion-frames", "5", "--steps", "3", "--shift", "2.5", "--text-scale", "1.5", "--audio-scale", "2",
        "--colour-strength", "0.5", "--seed", "7", "--lora", "a.safetensors:0.5", "--lora", "b.safetensors",
        "--prompt", "p", "--negative-prompt", "n", "--audio-features", "rolling", "--idle", "source",
    ])
    backend, opts = backend_from_args(args)
    want = ModelOptions(
        weights=Path("W"), weights_config=Path("W.json"), preset="flashtalk", verify_weights="size", device="cpu",
        dtype="fp16", fp8="row", compile=True, cuda_graphs=True, sequence_parallel=True, vae_split=True,
        vae_split_halo=3, teacache=0.2, size=(48, 64), frames=21, motion_frames=5, steps=3, shift=2.5,
        text_scale=1.5, audio_scale=2.0, colour_strength=0.5, seed=7,
        loras=((Path("a.safetensors"), 0.5), (Path("b.safetensors"), 1.0)), prompt="p", negative_prompt="n",
    )
    assert backend.name == "infinitetalk"  # picked by --weights / --preset, no --backend given
    assert opts == InfiniteTalkOptions(want, audio_features="rolling", idle="source")
    changed = {f.name for f in dataclasses.fields(ModelOptions) if getattr(want, f.name) != f.default}
    assert changed == {f.name for f in dataclasses.fields(ModelOptions)}  # the command above sets every field


@dataclasses.dataclass(frozen=True)
class _Extended:
    """A backend's options with fields the real ones lack (what a developer adding an option writes)."""

    model: ModelOptions = group(ModelOptions)
    warp: float | None = option(None, "warp factor")
    mode: Literal["calm", "lively"] = option("calm", "how much the avatar moves")
    mirrored: bool = option(False, "mirror the video")


@pytest.fixture
def extended_backend():
    backend = register(Backend("test-extended", "test options", _Extended, create=lambda o: None))
    yield backend
    unregister(backend.name)


def test_a_field_added_to_a_backends_options_dataclass_is_a_flag_of_serve_and_render(extended_backend):
    p = parser()
    for command in ("serve", "render"):
        flags = group_flags(subcommand(p, command), "backend ")
        assert flags["backend test-extended"] == {"--warp", "--mode", "--mirrored"}, command  # model flags: once
        assert "--steps" in flags["backend infinitetalk"]
    args = p.parse_args(["serve", "--backend", "test-extended", "--warp", "2.5", "--mode", "lively", "--mirrored",
                         "--steps", "3"])
    backend, opts = backend_from_args(args)
    assert backend is extended_backend
    assert opts == _Extended(ModelOptions(steps=3), warp=2.5, mode="lively", mirrored=True)
    with pytest.raises(SystemExit):
        p.parse_args(["serve", "--backend", "test-extended", "--mode", "wild"])  # a Literal's values are the choices


def test_without_weights_serve_and_render_use_lite_and_a_weights_flag_picks_infinitetalk():
    p = parser()
    for argv in (["serve"], RENDER):
        backend, opts = backend_from_args(p.parse_args(argv))
        assert backend.name == "lite" and opts == LiteSettings()
    for extra in (["--weights", "W"], ["--weights-config", "W.json"], ["--preset", "tiny-random"]):
        assert backend_from_args(p.parse_args([*RENDER, *extra]))[0].name == "infinitetalk", extra
    assert backend_from_args(p.parse_args([*RENDER, "--backend", "lite"]))[0].name == "lite"


@pytest.mark.parametrize("argv", [[*RENDER, "--seed", "3"], ["serve", "--backend", "lite", "--steps", "2"]])
def test_a_flag_of_another_backend_is_refused_saying_which_backend_takes_it(argv):
    with pytest.raises(ValueError, match=r"is an option of backend infinitetalk, not of lite: .*--backend infinitetalk"):
        backend_from_args(parser().parse_args(argv))


def test_the_lite_output_size_is_a_flag_of_lite_and_refused_for_infinitetalk():
    backend, opts = backend_from_args(parser().parse_args(["serve", "--lite-width", "256", "--lite-height", "192"]))
    assert backend.name == "lite" and (opts.width, opts.height) == (256, 192)
    with pytest.raises(ValueError, match="--lite-width is an option of backend lite"):
        backend_from_args(parser().parse_args(["serve", "--backend", "infinitetalk", "--lite-width", "256"]))
    with pytest.raises(ValueError, match="16x16"):
        backend_from_args(parser().parse_args(["serve", "--lite-width", "8"]))
