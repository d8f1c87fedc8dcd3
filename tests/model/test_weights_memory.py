"""Loading a multi-hundred-MB sharded checkpoint peaks at about one copy of the model (measured in a child)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.tiny_wan import TinyWanConfig, reference_state
from tests.helpers.weights_factory import write_sharded

REPO = Path(__file__).resolve().parents[2]
# ~300 MB in fp32: tiny dims, many layers.
BIG = TinyWanConfig(dim=256, ffn_dim=1024, num_layers=56, text_dim=16, freq_dim=16, img_dim=16)


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory) -> Path:
    ref = reference_state(BIG, seed=0)
    index = write_sharded(ref, tmp_path_factory.mktemp("big") / "Wan-big", 3)
    del ref
    return index.parent


def measure(path: Path, **opts) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tests.helpers.measure_load", str(path), json.dumps(BIG.__dict__), json.dumps(opts)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("opts", [{}, {"dtype": "bfloat16"}], ids=["fp32", "fp32-to-bf16"])
def test_peak_rss_stays_near_one_model_copy(big_checkpoint, opts):
    on_disk = sum(p.stat().st_size for p in big_checkpoint.glob("*.safetensors"))
    assert on_disk > 250e6
    r = measure(big_checkpoint, **opts)
    assert r["bytes_read"] > 250e6
    growth = (r["peak_kb"] - r["rss_before_kb"]) * 1024
    assert growth < 1.5 * r["model_bytes"], r
    assert growth > 0.9 * r["model_bytes"], r  # the model really became resident (the measure works)
