"""Shared fixtures: where the golden parity vectors and the test speech live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _first_existing(*candidates: Path) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def golden_root() -> Path:
    """Folder of reference parity vectors: $INFINITETALK_GOLDEN, else ../shared/golden beside the repo."""
    env = os.environ.get("INFINITETALK_GOLDEN")
    if env:
        return Path(env)
    return _first_existing(REPO_ROOT.parent / "shared" / "golden", Path("/work/shared/golden"))


def flashhead_golden_root() -> Path:
    """Folder of SoulX-FlashHead parity vectors: $FLASHHEAD_GOLDEN, else ../shared/golden_flashhead."""
    env = os.environ.get("FLASHHEAD_GOLDEN")
    if env:
        return Path(env)
    return _first_existing(REPO_ROOT.parent / "shared" / "golden_flashhead", Path("/work/shared/golden_flashhead"))


def flashhead_vectors_root() -> Path:
    """Vectors of tools/flashhead_vectors.py: $FLASHHEAD_VECTORS, else the committed set in tests/data."""
    env = os.environ.get("FLASHHEAD_VECTORS")
    return Path(env) if env else REPO_ROOT / "tests" / "data" / "flashhead_vectors"


def audio_root() -> Path:
    """Folder of real test speech (16 kHz mono WAV): $INFINITETALK_TEST_AUDIO, else ../shared/audio."""
    env = os.environ.get("INFINITETALK_TEST_AUDIO")
    if env:
        return Path(env)
    return _first_existing(REPO_ROOT.parent / "shared" / "audio", Path("/work/shared/audio"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    d = golden_root()
    if not d.is_dir():
        pytest.fail(f"golden vectors not found at {d}; set INFINITETALK_GOLDEN")
    return d


@pytest.fixture(scope="session")
def flashhead_golden_dir() -> Path:
    d = flashhead_golden_root()
    if not d.is_dir():
        pytest.fail(f"FlashHead parity vectors not found at {d}; set FLASHHEAD_GOLDEN")
    return d


@pytest.fixture(scope="session")
def flashhead_vectors_dir() -> Path:
    d = flashhead_vectors_root()
    if not d.is_dir():
        pytest.fail(f"FlashHead generator vectors not found at {d}; set FLASHHEAD_VECTORS")
    return d


@pytest.fixture(scope="session", params=["golden", "generated"])
def flashhead_set_dir(request) -> Path:
    """Each FlashHead DiT/loop parity set in turn: FLASHHEAD_GOLDEN, then FLASHHEAD_VECTORS."""
    name = "flashhead_golden_dir" if request.param == "golden" else "flashhead_vectors_dir"
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    d = audio_root()
    if not d.is_dir():
        pytest.fail(f"test speech not found at {d}; set INFINITETALK_TEST_AUDIO")
    return d
