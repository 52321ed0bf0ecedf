"""Import boundaries between crowdmed's packages (see docs/architecture.md).

The static checks read ``src/crowdmed`` with :mod:`ast` and name every offending ``file:line``;
one dynamic check imports the NumPy layers with torch, torchvision, monai and matplotlib
blocked.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "crowdmed"

#: Packages that work with NumPy, SciPy and pandas alone.
NUMPY_LAYERS = ("data", "simulate", "aggregation", "quality", "metrics", "crowdsourcing")
#: The NumPy modules of the pathology package (the detector needs torch).
NUMPY_PATHOLOGY = ("candidates", "patches", "stain", "synthetic")
#: Top-level helper modules (``crowdmed/_io.py``, ``crowdmed/typing.py``, ...) count as "base".
BASE = "base"
#: crowdmed packages each package may import (besides itself and ``base``), anywhere in a file.
#: ``crowdmed`` is the package's own ``__init__.py`` (a short list of re-exports).
ALLOWED: dict[str, set[str]] = {
    "crowdmed": {"data", "aggregation"},
    "crowdmed.__main__": {"cli"},
    BASE: {"data"},
    "data": set(),
    "aggregation": {"data"},
    "metrics": {"data"},
    "simulate": {"data", "crowdsourcing"},
    "quality": {"data", "aggregation", "metrics"},
    "crowdsourcing": {"data", "aggregation", "quality"},
    "report": {"data", "aggregation", "quality", "metrics"},
    "nn": {"data", "aggregation"},
    "pathology": {"data", "metrics", "nn", "training"},
    "training": {"data", "aggregation", "metrics", "nn", "pathology"},
    "pipelines": {
        "data",
        "simulate",
        "aggregation",
        "quality",
        "metrics",
        "crowdsourcing",
        "nn",
        "training",
        "pathology",
        "report",
    },
    "cli": {
        "data",
        "simulate",
        "aggregation",
        "quality",
        "metrics",
        "crowdsourcing",
        "nn",
        "training",
        "pathology",
        "pipelines",
        "report",
    },
}
HEAVY = ("torch", "torchvision", "monai", "matplotlib")
TORCH_LAYERS = ("nn", "training", "pipelines", "report", "cli")


def _modules() -> list[tuple[Path, str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((path, ".".join(parts), ast.parse(path.read_text(encoding="utf-8"))))
    return out


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC.parent).as_posix()}:{node.lineno}"


def _package(module: str) -> str:
    """``crowdmed.data.labels`` -> ``data``; a top-level module (``crowdmed._io``) -> ``base``."""
    if module in ("crowdmed", "crowdmed.__main__"):
        return module
    parts = module.split(".")
    if len(parts) < 2 or not (PACKAGE / parts[1]).is_dir():
        return BASE
    return parts[1]


def _imports(path: Path, module: str, tree: ast.Module) -> list[tuple[ast.AST, str, list[str]]]:
    """Every import as ``(node, absolute module, imported names)`` (names empty for ``import``)."""
    out: list[tuple[ast.AST, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, target] if target else base)
            out.append((node, target, [alias.name for alias in node.names]))
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_module(dotted: str) -> bool:
    path = SRC.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _may_use_helper(module: str, helper: str) -> bool:
    """A ``_``-prefixed helper module serves its own package (and the packages inside it).

    The top-level helpers (``crowdmed._io``, ``crowdmed._validation``, ...) belong to the root
    package and so serve every module.
    """
    package = helper.rsplit(".", 1)[0]
    return module == package or module.startswith(package + ".")


def _private_imports() -> list[str]:
    """Private names taken from a module that is not itself a ``_``-prefixed helper module."""
    bad = []
    for path, module, tree in _modules():
        aliases: dict[str, str] = {}  # local name -> crowdmed module it is bound to
        for node, target, _ in _imports(path, module, tree):
            if not target.startswith("crowdmed"):
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                continue
            helper = _is_private(target.split(".")[-1])
            if helper and not _may_use_helper(module, target):
                bad.append(f"{_where(path, node)} imports {target}, another package's helper")
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if _is_module(full):
                    aliases[alias.asname or alias.name] = full
                    if _is_private(alias.name) and not _may_use_helper(module, full):
                        bad.append(f"{_where(path, node)} imports {full}, another package's helper")
                    continue
                if _is_private(alias.name) and not helper:
                    bad.append(f"{_where(path, node)} imports {full}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                owner = ast.unparse(node.value)
                owner = aliases.get(owner, owner)
                if (
                    owner.startswith("crowdmed.")
                    and _is_module(owner)
                    and not _is_private(owner.split(".")[-1])
                ):
                    bad.append(f"{_where(path, node)} uses {owner}.{node.attr}")
    return bad


def test_no_module_imports_another_modules_private_names():
    """``_name`` is private to its module; shared helpers live in ``_``-prefixed modules."""
    bad = _private_imports()
    assert not bad, (
        f"{len(bad)} imports of private names (move the helper into a `_`-prefixed module, "
        "e.g. crowdmed/_validation.py or the package's _common.py, under a public name):\n"
        + "\n".join(bad)
    )


def test_only_the_cli_imports_typer():
    bad = [
        _where(path, node)
        for path, module, tree in _modules()
        if _package(module) != "cli"
        for node, target, _ in _imports(path, module, tree)
        if target.split(".")[0] == "typer"
    ]
    assert not bad, "typer imported outside crowdmed.cli:\n" + "\n".join(bad)


def test_numpy_layers_never_import_torch_or_matplotlib():
    """Not even inside a function: these layers must work without the ``torch`` extra."""
    bad = []
    for path, module, tree in _modules():
        layer = _package(module)
        pathology_numpy = layer == "pathology" and module.split(".")[-1] in NUMPY_PATHOLOGY
        if layer not in (*NUMPY_LAYERS, BASE) and not pathology_numpy:
            continue
        for node, target, _ in _imports(path, module, tree):
            heavy = target.split(".")[0] in HEAVY
            if heavy or (target.startswith("crowdmed.") and _package(target) in TORCH_LAYERS):
                bad.append(f"{_where(path, node)} imports {target}")
    assert not bad, "NumPy layers import torch, matplotlib or a torch layer:\n" + "\n".join(bad)


def test_packages_import_only_lower_layers():
    """The table ALLOWED above is the one in docs/architecture.md."""
    bad = []
    for path, module, tree in _modules():
        layer = _package(module)
        if layer not in ALLOWED:
            bad.append(
                f"{path.relative_to(SRC.parent).as_posix()}: package {layer!r} not in ALLOWED"
            )
            continue
        for node, target, _ in _imports(path, module, tree):
            if not target.startswith("crowdmed."):
                continue
            other = _package(target)
            if other not in (layer, BASE) and other not in ALLOWED[layer]:
                bad.append(f"{_where(path, node)}: {layer} imports {target}")
    assert not bad, "imports across layers that docs/architecture.md does not allow:\n" + "\n".join(
        bad
    )


BLOCKED_IMPORT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {heavy!r}:
            raise ImportError('blocked ' + name)
        return None
sys.meta_path.insert(0, Block())
import importlib
import numpy as np
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # an optional extra (e.g. the server's) not installed
        if not exc.name or exc.name.split('.')[0] in {heavy!r} + ('crowdmed',):
            raise
import crowdmed
crowdmed.DawidSkene().fit(np.array([[0, 1, 1], [1, 1, 0]]))
print('ok')
"""


def test_numpy_layers_import_with_torch_blocked():
    modules = [
        module
        for _, module, _ in _modules()
        if _package(module) in (*NUMPY_LAYERS, BASE) and module != "crowdmed.__main__"
    ]
    modules += [f"crowdmed.pathology.{name}" for name in NUMPY_PATHOLOGY]
    assert {"crowdmed.aggregation", "crowdmed.crowdsourcing.votes"} <= set(modules)
    code = BLOCKED_IMPORT.format(heavy=HEAVY, modules=modules)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_static_checks_catch_violations(tmp_path, monkeypatch):
    """The checks above find a planted private import and a planted typer import."""
    fake = tmp_path / "src" / "crowdmed"
    (fake / "data").mkdir(parents=True)
    (fake / "quality").mkdir()
    for folder in (fake, fake / "data", fake / "quality"):
        (folder / "__init__.py").write_text("")
    (fake / "data" / "labels.py").write_text("def _short(x):\n    return x\n")
    (fake / "data" / "_common.py").write_text("def _helper(x):\n    return x\n")
    (fake / "quality" / "gold.py").write_text(
        "from crowdmed.data._common import _helper\n"  # line 1: data's helper, not quality's
        "from crowdmed.data.labels import _short\n"  # line 2: not allowed
        "import crowdmed.data.labels as lab\n"
        "x = lab._short\n"  # line 4: not allowed
        "import typer\n"  # line 5: typer outside the CLI
        "import torch\n"  # line 6: torch in a NumPy layer
        "from crowdmed.data._common import helper\n"  # line 7: allowed only inside data
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _private_imports() == [
        "src/crowdmed/quality/gold.py:1 imports crowdmed.data._common, another package's helper",
        "src/crowdmed/quality/gold.py:2 imports crowdmed.data.labels._short",
        "src/crowdmed/quality/gold.py:7 imports crowdmed.data._common, another package's helper",
        "src/crowdmed/quality/gold.py:4 uses crowdmed.data.labels._short",
    ]
    with pytest.raises(AssertionError, match=re.escape("src/crowdmed/quality/gold.py:5")):
        test_only_the_cli_imports_typer()
    with pytest.raises(
        AssertionError, match=re.escape("src/crowdmed/quality/gold.py:6 imports torch")
    ):
        test_numpy_layers_never_import_torch_or_matplotlib()
