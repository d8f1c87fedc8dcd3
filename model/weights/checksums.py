"""sha256 manifests for weight files, so that a changed or truncated file is refused at start-up.

A manifest is a small JSON written next to the weights the first time they load:
`{"version": 1, "files": {"<name relative to the manifest>": {"size": int, "sha256": hex}}}`.
Sizes are always compared (free, catches truncation); hashes cost one read of every file (~1 GB/s on one
core), so callers may skip them with `full=False` once a deployment trusts its disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import WeightLoadError, format_files

logger = logging.getLogger(__name__)

MANIFEST_NAME = "weights.sha256.json"


def sha256_file(path: str | Path, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _entry_name(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def build_manifest(paths: Iterable[str | Path], base_dir: str | Path) -> dict:
    """Hash every file; names are stored relative to `base_dir` (the manifest's folder)."""
    base = Path(base_dir)
    files = {}
    for p in paths:
        p = Path(p)
        files[_entry_name(p, base)] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return {"version": 1, "files": files}


def write_manifest(paths: Iterable[str | Path], manifest_path: str | Path) -> dict:
    """Hash `paths` and write the manifest (atomically) to `manifest_path`; returns it."""
    manifest_path = Path(manifest_path)
    manifest = build_manifest(paths, manifest_path.parent)
    tmp = manifest_path.with_suffix(manifest_path.suffix + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    logger.info("recorded sha256 of %d weight files in %s", len(manifest["files"]), manifest_path)
    return manifest


def read_manifest(manifest_path: str | Path) -> dict:
    try:
        manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
        if not isinstance(manifest.get("files"), dict):
            raise ValueError('no "files" object')
        return manifest
    except (OSError, ValueError) as e:
        raise WeightLoadError(
            f"cannot read the weights manifest {manifest_path}: {e}. Delete it to record a new one.",
            files=[str(manifest_path)],
        ) from e


def verify_files(
    paths: Iterable[str | Path],
    manifest: Mapping | str | Path,
    *,
    base_dir: str | Path | None = None,
    full: bool = True,
) -> None:
    """Refuse files whose size or sha256 differ from `manifest` (a dict, or the path of its JSON).

    `base_dir`: the folder the manifest's names are relative to (default: the manifest file's folder, or
    the current directory for a dict). Raises one WeightLoadError listing every bad file.
    """
    if isinstance(manifest, (str, Path)):
        base = Path(base_dir) if base_dir is not None else Path(manifest).parent
        where = str(manifest)
        manifest = read_manifest(manifest)
    else:
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        where = "the given manifest"
    paths = [Path(p) for p in paths]
    entries: Mapping = manifest["files"]
    by_name = {Path(k).name: v for k, v in entries.items()}
    problems: list[str] = []
    bad: list[str] = []
    for p in paths:
        entry = entries.get(_entry_name(p, base)) or by_name.get(p.name)
        if entry is None:
            problems.append(f"{p} is not in {where}")
        elif not p.is_file():
            problems.append(f"{p} is missing")
        elif p.stat().st_size != entry["size"]:
            problems.append(f"{p} has {p.stat().st_size} bytes, recorded {entry['size']} (truncated or replaced)")
        elif full and sha256_file(p) != entry["sha256"]:
            problems.append(f"{p} has a different sha256 than recorded (changed or corrupted)")
        else:
            continue
        bad.append(str(p))
    if problems:
        raise WeightLoadError(
            f"weight files do not match {where}: " + "; ".join(problems[:5])
            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
            + ". Re-download the files, or delete the manifest if the change is intended.",
            files=bad,
        )
    logger.info("verified %s against %s", format_files(str(p) for p in paths), where)
