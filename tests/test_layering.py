"""The dependency rule of design §2, enforced by walking imports with ast."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_FREE = ("runtime", "sensors", "calibration")
# The one place in the torch-free packages allowed to import torch, inside functions only.
TORCH_BACKEND = ROOT / "runtime" / "backends" / "pyt.py"


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(module name, at module level?) for every import in ``tree``."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, top))
            visit(child, inner)

    visit(tree, True)
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_walker_sees_nested_imports() -> None:
    tree = ast.parse("import numpy\ndef f():\n    import torch\nclass C:\n    from export import model\n")
    assert _imports(tree) == [("numpy", True), ("torch", False), ("export", True)]


def test_torch_free_packages_never_import_torch() -> None:
    offenders = []
    for package in TORCH_FREE:
        for path in _files(package):
            for name, top in _imports(ast.parse(path.read_text())):
                if name.split(".")[0] != "torch":
                    continue
                if path == TORCH_BACKEND and not top:
                    continue
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_runtime_imports_only_stdlib_numpy_and_itself_at_module_level() -> None:
    allowed_roots = {"numpy", "runtime", "__future__"}
    offenders = []
    for path in _files("runtime"):
        for name, top in _imports(ast.parse(path.read_text())):
            root = name.split(".")[0]
            if root in {"export", "sensors", "calibration", "benchmarks"}:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            elif top and root not in allowed_roots and not _is_stdlib(root):
                offenders.append(f"{path.relative_to(ROOT)} imports {name} at module level")
    assert not offenders, offenders


def test_export_package_init_stays_empty() -> None:
    # `python -m export.engine` runs on devices without torch: the package must not pull it in.
    assert (ROOT / "export" / "__init__.py").read_text().strip() == ""


def test_benchmarks_import_torch_only_inside_functions() -> None:
    offenders = [
        f"{p.relative_to(ROOT)} imports {n}"
        for p in _files("benchmarks")
        for n, top in _imports(ast.parse(p.read_text()))
        if top and n.split(".")[0] in {"torch", "export"}
    ]
    assert not offenders, offenders


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names
