"""Every runtime dependency in pyproject.toml is imported by product code (issue 11).

The product is the packages that pyproject installs; every import counts, function-local
ones too (a dependency used only on a cold path still earns its place). The map from a
distribution to its import names is the installed metadata's, not a table kept here.
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def product_dirs() -> list[Path]:
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    return [ROOT / d for d in dirs.values()]


def imported_top_levels(dirs: list[Path]) -> set[str]:
    found: set[str] = set()
    for d in dirs:
        for path in d.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def dist_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def test_every_runtime_dependency_is_imported_by_product_code() -> None:
    by_dist: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for d in dists:
            by_dist.setdefault(dist_name(d), set()).add(module)
    imported = imported_top_levels(product_dirs())
    deps = [dist_name(r) for r in PYPROJECT["project"]["dependencies"]]
    assert deps, "no runtime dependencies read from pyproject.toml"
    unused = {d: sorted(by_dist.get(d, set())) for d in deps
              if not by_dist.get(d, set()) & imported}
    assert not unused, (f"declared in [project] dependencies but imported by no product "
                        f"code (dependency -> its modules): {unused}; move it to an extra")


def test_the_check_sees_imports() -> None:
    # the walk must find what is surely there, or the test above could pass on nothing
    imported = imported_top_levels(product_dirs())
    assert {"aetcd", "yaml", "prometheus_client", "socket", "pyroute2"} <= imported
    assert "netaddr" not in imported and "scapy" not in imported
