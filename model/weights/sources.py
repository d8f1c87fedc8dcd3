"""Lazy access to the tensors of weight files: one file, a sharded set (index json) or a folder.

Nothing is read until `read(key)` is called, and each call returns one fresh, owned CPU tensor.

Why not hand out `safetensors.safe_open(...).get_tensor` tensors directly: with safetensors >= 0.5 those
tensors are views of a memory map, and every page touched stays resident (and counts in the process's RSS)
until the file is closed. Loading a 28 GB single-file checkpoint that way peaks at file size + model size.
`SafetensorsFile` therefore opens the file with `safe_open` (which validates the whole header, including
truncation) but reads each tensor's bytes with `os.preadv` into a buffer it owns, so the peak is one copy of
the model plus the tensor in flight (measured in tests/model/test_weights_memory.py and
bench/load_weights.py). `reader="mmap"` keeps the plain safe_open path for comparison.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors import safe_open

from .errors import WeightLoadError

logger = logging.getLogger(__name__)

# safetensors dtype tags -> torch dtypes (the format's spec; F8 names as written by torch/safetensors).
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header size


@dataclass(frozen=True)
class TensorInfo:
    """What a file says about one tensor, known without reading its data."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    path: str

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * _itemsize(self.dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@runtime_checkable
class TensorSource(Protocol):
    """A set of named tensors that can be listed for free and read one at a time."""

    @property
    def name(self) -> str: ...

    @property
    def paths(self) -> tuple[str, ...]: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...

    def keys(self) -> list[str]: ...

    def info(self, key: str) -> TensorInfo: ...

    def read(self, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor, in a fresh CPU buffer, or (with `out`, a 1-D uint8 CPU tensor at least as large) as a
        typed view of `out`'s first bytes: the loader's reusable staging buffers."""
        ...

    def close(self) -> None: ...


def typed_view(buf: torch.Tensor, dtype: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
    """The first bytes of a uint8 buffer seen as a tensor of `dtype` and `shape`."""
    n = 1
    for s in shape:
        n *= s
    return buf[: n * _itemsize(dtype)].view(dtype).reshape(tuple(shape))


class _OneFile:
    """A source that is one file: it is named by its path."""

    path: str

    @property
    def name(self) -> str:
        return self.path

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,)


class SafetensorsFile(_OneFile):
    """One .safetensors file. Header parsed and validated at open; tensors read on demand."""

    def __init__(self, path: str | Path, *, reader: str = "pread") -> None:
        if reader not in ("pread", "mmap"):
            raise ValueError(f"reader must be 'pread' or 'mmap', got {reader!r}")
        self.path = str(path)
        self.reader = reader
        if not os.path.isfile(self.path):
            raise WeightLoadError(f"weight file not found: {self.path}", files=[self.path])
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self._size = os.fstat(self._fd).st_size
            self._entries, self._metadata, self._data_start = self._parse_header()
            try:  # safetensors' own validation (overlaps, coverage, truncation) as a second opinion
                self._st = safe_open(self.path, framework="pt", device="cpu")
            except Exception as e:  # noqa: BLE001 - any failure here means a broken file
                raise WeightLoadError(
                    f"{self.path} is not a valid safetensors file (corrupted or truncated?): {e}. "
                    "Re-download it (and compare its sha256 with the publisher's).",
                    files=[self.path],
                ) from e
        except BaseException:
            os.close(self._fd)
            raise
        if reader == "pread":
            self._st = None  # only the header check was needed

    # ---- header ---------------------------------------------------------------------------------
    def _fail(self, why: str) -> WeightLoadError:
        return WeightLoadError(
            f"{self.path} is corrupted or truncated: {why}. Re-download it (and compare its sha256 with "
            "the publisher's).",
            files=[self.path],
        )

    def _read_exact(self, n: int, offset: int) -> bytes:
        data = os.pread(self._fd, n, offset)
        if len(data) != n:
            raise self._fail(f"wanted {n} bytes at offset {offset}, file has {self._size} bytes")
        return data

    def _parse_header(self) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], dict[str, str], int]:
        if self._size < 8:
            raise self._fail(f"only {self._size} bytes, not even a header length")
        (n,) = struct.unpack("<Q", self._read_exact(8, 0))
        if n > _MAX_HEADER or 8 + n > self._size:
            raise self._fail(f"header claims {n} bytes but the file has {self._size} bytes")
        try:
            header = json.loads(self._read_exact(n, 8).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._fail(f"header is not valid JSON ({e})") from e
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        data_start = 8 + n
        entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for key, e in header.items():
            try:
                tag, shape, (b, end) = e["dtype"], tuple(int(s) for s in e["shape"]), e["data_offsets"]
            except (KeyError, TypeError, ValueError) as err:
                raise self._fail(f"malformed entry for {key!r}") from err
            if tag not in SAFETENSORS_DTYPES:
                raise WeightLoadError(
                    f"{self.path}: tensor {key!r} has dtype {tag}, which this loader does not handle "
                    f"(known: {', '.join(SAFETENSORS_DTYPES)})",
                    files=[self.path],
                )
            numel = 1
            for s in shape:
                numel *= s
            if end - b != numel * _itemsize(SAFETENSORS_DTYPES[tag]):
                raise self._fail(f"tensor {key!r}: {end - b} bytes stored for shape {list(shape)} {tag}")
            if data_start + end > self._size:
                raise self._fail(
                    f"tensor {key!r} ends at byte {data_start + end} but the file has {self._size} bytes"
                )
            entries[key] = (tag, shape, int(b), int(end))
        return entries, {str(k): str(v) for k, v in meta.items()}, data_start

    # ---- TensorSource ---------------------------------------------------------------------------
    @property
    def metadata(self) -> Mapping[str, str]:
        return self._metadata

    def keys(self) -> list[str]:
        return list(self._entries)

    def info(self, key: str) -> TensorInfo:
        tag, shape, _, _ = self._entries[key]
        return TensorInfo(key, shape, SAFETENSORS_DTYPES[tag], self.path)

    def offset(self, key: str) -> int:
        """Byte offset of the tensor's data (to read a file front to back)."""
        return self._data_start + self._entries[key][2]

    def read(self, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
        tag, shape, b, end = self._entries[key]
        dtype = SAFETENSORS_DTYPES[tag]
        if self._st is not None:
            t = self._st.get_tensor(key)
            return t.clone() if out is None else typed_view(out, dtype, shape).copy_(t)
        buf = torch.empty(end - b, dtype=torch.uint8) if out is None else out[: end - b]
        if end > b:
            view = memoryview(buf.numpy())
            done = 0
            while done < end - b:
                got = os.preadv(self._fd, [view[done:]], self._data_start + b + done)
                if got <= 0:
                    raise self._fail(f"file ended while reading {key!r}")
                done += got
        return typed_view(buf, dtype, shape)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._st = None

    def __repr__(self) -> str:
        return f"SafetensorsFile({self.path!r}, {len(self._entries)} tensors)"


class _FileSet:
    """Several safetensors files answering as one source: `_files` in order, `_where[key]` -> its file."""

    _files: list[SafetensorsFile]
    _where: dict[str, SafetensorsFile]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self._files)

    @property
    def metadata(self) -> Mapping[str, str]:
        merged: dict[str, str] = {}
        for f in self._files:
            merged.update(f.metadata)
        return merged

    def keys(self) -> list[str]:
        return list(self._where)

    def info(self, key: str) -> TensorInfo:
        return self._where[key].info(key)

    def offset(self, key: str) -> int:
        return self._where[key].offset(key)

    def read(self, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
        return self._where[key].read(key, out)

    def close(self) -> None:
        for f in self._files:
            f.close()


class ShardedCheckpoint(_FileSet):
    """A model split over several safetensors files, as listed by an index json's `weight_map`."""

    def __init__(self, index_path: str | Path, *, reader: str = "pread") -> None:
        self.index_path = str(index_path)
        try:
            with open(self.index_path, encoding="utf-8") as f:
                index = json.load(f)
            weight_map = index["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightLoadError(
                f"cannot read the shard index {self.index_path}: {e}. It must be a JSON object with a "
                '"weight_map" {tensor name: shard file name}.',
                files=[self.index_path],
            ) from e
        folder = Path(self.index_path).parent
        shard_names = sorted(set(weight_map.values()))
        absent = [s for s in shard_names if not (folder / s).is_file()]
        if absent:
            raise WeightLoadError(
                f"{self.index_path} lists {len(shard_names)} shard files but {len(absent)} are missing from "
                f"{folder}: {', '.join(absent[:5])}. Download the complete set.",
                files=[str(folder / s) for s in absent],
            )
        self._shards: dict[str, SafetensorsFile] = {}
        self._files = []
        try:
            for s in shard_names:
                self._shards[s] = SafetensorsFile(folder / s, reader=reader)
                self._files.append(self._shards[s])
        except BaseException:
            self.close()
            raise
        self._where: dict[str, SafetensorsFile] = {}
        not_there: list[str] = []
        for key, s in weight_map.items():
            shard = self._shards[s]
            if key in shard._entries:
                self._where[key] = shard
            else:
                not_there.append(f"{key} (in {s})")
        if not_there:
            self.close()
            raise WeightLoadError(
                f"{self.index_path} and its shards disagree: {len(not_there)} listed tensors are not in their "
                f"shard, e.g. {', '.join(not_there[:3])}. The index or a shard is from another version.",
                files=[self.index_path],
            )
        extra = sum(len(sh._entries) for sh in self._shards.values()) - len(self._where)
        if extra:
            logger.warning("%s: %d tensors in the shards are not in the index; ignoring them", self.index_path, extra)

    @property
    def name(self) -> str:
        return self.index_path


class MultiFileSource(_FileSet):
    """Several standalone safetensors files treated as one set (a folder without an index)."""

    def __init__(self, paths: Sequence[str | Path], *, reader: str = "pread", name: str = "") -> None:
        self._files = [SafetensorsFile(p, reader=reader) for p in paths]
        self._name = name or ", ".join(f.path for f in self._files)
        self._where: dict[str, SafetensorsFile] = {}
        for f in self._files:
            for k in f.keys():
                if k in self._where:
                    other = self._where[k].path
                    self.close()
                    raise WeightLoadError(
                        f"tensor {k!r} is in both {other} and {f.path}; pass the files separately "
                        "(later files override earlier ones) instead of as one folder",
                        files=[other, f.path],
                    )
                self._where[k] = f

    @property
    def name(self) -> str:
        return self._name



class TorchFile(_OneFile):
    """A torch pickle (.pth/.pt/.bin) read with `torch.load(mmap=True, weights_only=True)`.

    The original Wan2.1 release ships its VAE (Wan2.1_VAE.pth) and CLIP
    (models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth) this way. `weights_only` refuses arbitrary
    pickled code; `mmap` keeps it lazy. A `{"state_dict": {...}}` or `{"model": {...}}` wrapper is unwrapped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise WeightLoadError(f"weight file not found: {self.path}", files=[self.path])
        try:
            obj = torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise self._broken(e) from e
            logger.warning("%s is an old-format torch file; loading it fully into memory", self.path)
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as e2:  # noqa: BLE001
                raise self._broken(e2) from e2
        except Exception as e:  # noqa: BLE001 - pickle/zip errors of every kind
            raise self._broken(e) from e
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
        if not isinstance(obj, dict):
            raise WeightLoadError(f"{self.path} holds a {type(obj).__name__}, not a state dict", files=[self.path])
        self._tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}

    def _broken(self, e: BaseException) -> WeightLoadError:
        return WeightLoadError(
            f"cannot read {self.path} as a torch weights file (corrupted, truncated, or it contains "
            f"non-tensor objects that weights_only refuses): {e}",
            files=[self.path],
        )

    @property
    def metadata(self) -> Mapping[str, str]:
        return {}

    def keys(self) -> list[str]:
        return list(self._tensors)

    def info(self, key: str) -> TensorInfo:
        t = self._tensors[key]
        return TensorInfo(key, tuple(t.shape), t.dtype, self.path)

    def read(self, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
        t = self._tensors[key]
        return t.clone() if out is None else typed_view(out, t.dtype, t.shape).copy_(t)

    def close(self) -> None:
        self._tensors = {}


_TORCH_EXT = (".pth", ".pt", ".bin", ".ckpt")


def open_source(path: str | Path, *, reader: str = "pread") -> TensorSource:
    """Open a weight file, a shard index json, or a folder of them, without reading any tensor.

    A folder is opened through its `*.safetensors.index.json` if it has exactly one, else as the set of its
    `*.safetensors` files (a tensor present in two files is an error).
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        indexes = sorted(p.glob("*.safetensors.index.json"))
        if len(indexes) == 1:
            return ShardedCheckpoint(indexes[0], reader=reader)
        if len(indexes) > 1:
            raise WeightLoadError(
                f"{p} has several shard indexes ({', '.join(i.name for i in indexes)}); pass the one you mean",
                files=[str(i) for i in indexes],
            )
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise WeightLoadError(f"no .safetensors files (or index json) in {p}", files=[str(p)])
        if len(files) == 1:
            return SafetensorsFile(files[0], reader=reader)
        return MultiFileSource(files, reader=reader, name=str(p))
    if not p.exists():
        raise WeightLoadError(f"weight file not found: {p}", files=[str(p)])
    if name.endswith(".json"):
        return ShardedCheckpoint(p, reader=reader)
    if name.endswith(".safetensors"):
        return SafetensorsFile(p, reader=reader)
    if name.endswith(_TORCH_EXT):
        return TorchFile(p)
    if name.endswith(".gguf"):
        raise WeightLoadError(
            f"{p} is a GGUF file; this loader reads safetensors (and torch .pth). Use the fp16/bf16 or fp8 "
            "safetensors release of the same model.",
            files=[str(p)],
        )
    # unknown extension: sniff a safetensors header
    return SafetensorsFile(p, reader=reader)


def read_shapes(paths: Sequence[str | Path] | str | Path) -> dict[str, tuple[int, ...]]:
    """`{key: shape}` of every tensor in the given files/folders (headers only; later files override)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    shapes: dict[str, tuple[int, ...]] = {}
    for p in paths:
        src = open_source(p)
        try:
            shapes.update({k: src.info(k).shape for k in src.keys()})
        finally:
            src.close()
    return shapes
