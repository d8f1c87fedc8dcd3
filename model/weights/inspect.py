"""Say what a set of weight files is, from their headers only: `python -m model.weights.inspect PATH...`.

Prints JSON: per source its files, layout (prefix, naming, content), quantization scheme and dtypes, and,
when the files hold a Wan DiT, the reference config inferred from the shapes (what to build the model with).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .config_infer import infer_dit_config
from .errors import WeightLoadError
from .fp8 import plan_quantization, refuse_unsupported
from .layouts import detect_layout
from .sources import open_source


def describe_checkpoint(paths: Sequence[str | Path], *, head_dim: int = 128) -> dict:
    """Layouts, dtypes and (for a DiT) the inferred config of `paths`, taken together in order."""
    sources, shapes = [], {}
    for p in paths:
        src = open_source(p)
        try:
            keys = src.keys()
            refuse_unsupported(keys, src.name)
            lay = detect_layout(keys, file=src.name)
            infos = {lay.to_reference(k): src.info(k) for k in keys}
            back = {lay.to_reference(k): k for k in keys}
            quant = plan_quantization(infos, lambda rk, s=src, b=back: s.read(b[rk]), src.metadata, file=src.name)
            sources.append({
                "name": src.name,
                "files": list(src.paths),
                "tensors": len(keys),
                "bytes": sum(i.nbytes for i in infos.values()),
                "prefix": lay.prefix,
                "naming": lay.naming,
                "content": list(lay.content),
                "quantization": quant.scheme,
                "dtypes": dict(Counter(str(i.dtype).replace("torch.", "") for i in infos.values())),
            })
            shapes.update({rk: i.shape for rk, i in infos.items() if rk not in quant.aux})
        finally:
            src.close()
    out: dict = {"sources": sources}
    try:
        out["dit_config"] = infer_dit_config(shapes, head_dim=head_dim)
    except WeightLoadError:
        pass  # not a DiT (VAE, CLIP, a LoRA...)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Describe weight files (layout, dtypes, inferred DiT config).")
    ap.add_argument("paths", nargs="+", help="files, shard index jsons or folders (base first, then adapters)")
    ap.add_argument("--head-dim", type=int, default=128)
    a = ap.parse_args(argv)
    try:
        print(json.dumps(describe_checkpoint(a.paths, head_dim=a.head_dim), indent=1))
    except WeightLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
