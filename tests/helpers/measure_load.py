"""Child process for the peak-memory test: build TinyWan on meta, load a checkpoint, print JSON.

    python -m tests.helpers.measure_load CHECKPOINT '{"dim": 256, ...}' '{"dtype": "bfloat16"}'

Peak RSS is the kernel's high-water mark (VmHWM), reset just before loading (/proc/self/clear_refs),
so imports and model construction do not count; resident bytes of the loaded model are reported too.
"""

from __future__ import annotations

import json
import re
import sys

import torch

from model.weights import load_module

from .tiny_wan import TinyWanConfig, meta_model


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def main() -> None:
    path, cfg, opts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    if "dtype" in opts:
        opts["dtype"] = getattr(torch, opts["dtype"])
    model = meta_model(TinyWanConfig(**cfg))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    report = load_module(model, path, **opts)
    peak = _status_kb("VmHWM")
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(json.dumps({"rss_before_kb": before, "peak_kb": peak, "after_kb": _status_kb("VmRSS"),
                      "model_bytes": model_bytes, "bytes_read": report.bytes_read, "seconds": report.seconds}))


if __name__ == "__main__":
    main()
