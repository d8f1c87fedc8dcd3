"""Rules that keep the house: imports point one way, tests share code only through tests/helpers/, bench
scripts run on the installed package, and the timebase (16 kHz, 25 fps) is written down once.

Read from the source with `ast`, so imports inside functions count too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("model", "streaming", "server")  # each may import only the ones before it
PRODUCT = (*LAYERS, "client_demo")
TIMEBASE = "model/timebase.py"


def _files(*tops: str) -> Iterator[Path]:
    for top in tops:
        yield from sorted((ROOT / top).rglob("*.py"))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports(path: Path, text: str | None = None) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of every import in the file (or `text` as that file), relative ones resolved."""
    package = _module(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module(path)[: -len(".__init__")]
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name, node.lineno
            for alias in node.names:  # `from . import x` may import a module x
                yield f"{name}.{alias.name}", node.lineno


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _forbidden(top: str) -> set[str]:
    """What code under `top` may not import: tests/ never; a layer nothing above it (nor the clients)."""
    if top in LAYERS:
        return {"tests", "client_demo", *LAYERS[LAYERS.index(top) + 1 :]}
    return {"tests"}  # client_demo and bench may use the whole package


def test_the_product_imports_point_one_way_and_never_into_tests() -> None:
    bad = [f"{_rel(path)}:{line} imports {name}"
           for top in (*PRODUCT, "bench") for path in _files(top)
           for name, line in imports(path) if name.split(".")[0] in _forbidden(top)]
    assert not bad, "imports against server -> streaming -> model (or into tests/):\n" + "\n".join(bad)


def test_no_test_module_imports_another_shared_code_lives_in_helpers() -> None:
    bad = []
    for path in _files("tests"):
        if path.parent.name in ("helpers", "bounds"):
            continue
        for name, line in imports(path):
            parts = name.split(".")
            if parts[0] == "tests" and len(parts) > 1 and parts[1] not in ("helpers",) and name != _module(path):
                bad.append(f"{_rel(path)}:{line} imports {name}")
    assert not bad, "test modules import each other; move the shared code to tests/helpers/:\n" + "\n".join(bad)


def _sys_path_edits(path: Path) -> Iterator[int]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
        if isinstance(target, ast.Attribute) and target.attr == "path" and getattr(target.value, "id", "") == "sys":
            yield node.lineno


def test_bench_scripts_run_on_the_installed_package() -> None:
    bad = [f"{_rel(p)}:{line}" for p in _files("bench", *PRODUCT) for line in _sys_path_edits(p)]
    assert not bad, "sys.path edited (install the package: pip install -e .):\n" + "\n".join(bad)


def _timebase_literals(path: Path) -> Iterator[str]:
    """16 kHz anywhere, and 25 as the value of anything named *fps*."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 16000:
            yield f"{_rel(path)}:{node.lineno}: 16000"
        pairs: list[tuple[str, ast.AST | None]] = []
        if isinstance(node, ast.keyword) and node.arg:
            pairs.append((node.arg, node.value))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            pairs += [(getattr(t, "id", getattr(t, "attr", "")), node.value) for t in targets]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
            pairs += list(zip((a.arg for a in args), defaults + node.args.kw_defaults, strict=False))
        for name, value in pairs:
            if "fps" in name.lower() and isinstance(value, ast.Constant) and value.value == 25:
                yield f"{_rel(path)}:{node.lineno}: {name} = 25"


def test_the_timebase_is_defined_once() -> None:
    found = [hit for p in _files(*PRODUCT, "bench") if _rel(p) != TIMEBASE for hit in _timebase_literals(p)]
    assert not found, f"16 kHz / 25 fps written out (use {TIMEBASE}):\n" + "\n".join(found)
    timebase = (ROOT / TIMEBASE).read_text()
    assert "SAMPLE_RATE = 16_000" in timebase and "VIDEO_FPS = 25" in timebase


@pytest.mark.parametrize("source, found", [
    ("import streaming.session\n", ["streaming.session"]),
    ("def f():\n    from ..helpers.x import y\n", ["tests.helpers.x", "tests.helpers.x.y"]),
    ("from . import leaks\n", ["tests.server", "tests.server.leaks"]),
])
def test_the_import_reader_sees_lazy_and_relative_imports(source, found) -> None:
    probe = ROOT / "tests" / "server" / "test_probe.py"  # read as if it were this file; never written
    assert [name for name, _ in imports(probe, source)] == found


_RUN_AS_MODULE = re.compile(r"""-m["']?,?\s*["']?((?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*)""")
_OUR_TOPS = (*PRODUCT, "tests", "bench")


def test_every_module_run_with_dash_m_exists() -> None:
    """A helper moved without updating the `python -m` lines that start it fails only when that subprocess starts; catch it here."""
    sources = [*_files("tests", "bench", "scripts", *PRODUCT), *sorted((ROOT / "docs").glob("*.md")),
               *sorted((ROOT / "scripts").glob("*.sh")), ROOT / "README.md", ROOT / ".ci" / "run"]
    missing = []
    for path in sources:
        for name in _RUN_AS_MODULE.findall(path.read_text()):
            if name.split(".")[0] in _OUR_TOPS and not (ROOT / (name.replace(".", "/") + ".py")).is_file() \
                    and not (ROOT / name.replace(".", "/") / "__main__.py").is_file():
                missing.append(f"{_rel(path)}: -m {name}")
    assert not missing, "modules run with -m that do not exist:\n" + "\n".join(missing)
