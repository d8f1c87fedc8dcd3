"""Weight loading: local safetensors (and torch .pth) in the layouts people have, lazily, into meta-built modules.

    # any module built under torch.device("meta") whose names are the reference names
    report = load_module(vae, "Wan2.1_VAE.pth", device="cuda", dtype=torch.float32)
    paths = ["Wan2.1-I2V-14B-480P/", "InfiniteTalk/single/infinitetalk.safetensors"]   # base first, then adapter
    report = load_module(dit, paths, device="cuda", dtype=torch.bfloat16,
                         loras=[LoraSpec("lightx2v_rank32.safetensors", strength=1.0)])

This package knows files, not networks: it imports nothing of `model.dit` (the DiT built from its files
is `model.infinitetalk.dit_loader.load_infinitetalk_dit`), and fp8 math comes from `model.fp8` below it.

`python -m model.weights.inspect PATH...` says what files are (layout, dtypes, inferred DiT config).
"""

from .checksums import MANIFEST_NAME, build_manifest, read_manifest, sha256_file, verify_files, write_manifest
from .config_infer import infer_dit_config
from .errors import WeightLoadError
from .fp8 import dequantize, plan_quantization
from .layouts import (
    DIFFUSERS_TO_WAN,
    KNOWN_PREFIXES,
    Layout,
    classify_content,
    convert_comfyui_to_wan,
    convert_diffusers_to_wan,
    detect_layout,
    diffusers_key_to_wan,
    strip_prefix,
)
from .loader import LoadReport, load_module
from .lora import LoraPatch, LoraPlan, LoraSpec, open_lora, plan_lora
from .sources import (
    MultiFileSource,
    SafetensorsFile,
    ShardedCheckpoint,
    TensorInfo,
    TensorSource,
    TorchFile,
    open_source,
    read_shapes,
)

__all__ = [
    "DIFFUSERS_TO_WAN",
    "KNOWN_PREFIXES",
    "MANIFEST_NAME",
    "Layout",
    "LoadReport",
    "LoraPatch",
    "LoraPlan",
    "LoraSpec",
    "MultiFileSource",
    "SafetensorsFile",
    "ShardedCheckpoint",
    "TensorInfo",
    "TensorSource",
    "TorchFile",
    "WeightLoadError",
    "build_manifest",
    "classify_content",
    "convert_comfyui_to_wan",
    "convert_diffusers_to_wan",
    "dequantize",
    "detect_layout",
    "diffusers_key_to_wan",
    "infer_dit_config",
    "load_module",
    "open_lora",
    "open_source",
    "plan_lora",
    "plan_quantization",
    "read_manifest",
    "read_shapes",
    "sha256_file",
    "strip_prefix",
    "verify_files",
    "write_manifest",
]
