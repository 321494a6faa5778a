"""The package layers, checked on the import graph (static: every import statement, at any
depth, lazy ones inside functions too) and on what importing really loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each package may import only the packages before it (and itself).
LAYERS = ["dynsweep", "trainers", "tracking", "analysis", "orchestrator"]
ALLOWED = {
    "dynsweep": set(),
    "trainers": {"dynsweep"},
    "tracking": {"dynsweep"},
    "analysis": {"dynsweep", "trainers", "tracking"},
    "orchestrator": {"dynsweep", "trainers", "tracking", "analysis"},
}


def imports_of(package: str) -> dict[str, set[tuple[str, int]]]:
    """{imported top-level package of ours: {(file, line)}} for every module of ``package``."""
    out: dict[str, set[tuple[str, int]]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name == "__main__.py":  # an entry point (python -m dynsweep) sits above all
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package:
                    where = (str(path.relative_to(ROOT)), node.lineno)
                    out.setdefault(top, set()).add(where)
    return out


def test_every_package_is_checked():
    above = {"tests", "benchmarks", "reproductions"}  # report scripts sit above every layer
    ours = {p.parent.name for p in ROOT.glob("*/__init__.py")} - above
    assert ours == set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_imports_follow_the_layers(package):
    wrong = {
        top: sorted(where)
        for top, where in imports_of(package).items()
        if top not in ALLOWED[package]
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}; found {wrong}"


def test_no_cycle_between_packages():
    graph = {p: set(imports_of(p)) for p in LAYERS}
    seen: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if seen.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join([*path, node])}")
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for nxt in graph[node]:
            visit(nxt, [*path, node])
        seen[node] = 2

    for package in LAYERS:
        visit(package, [])


def test_trainers_stay_free_of_ray_and_mlflow():
    found = []
    for path in sorted((ROOT / "trainers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                found += [(path.name, n) for n in names if n.split(".")[0] in ("ray", "mlflow")]
    assert not found


LIGHT = """
import sys
{code}
heavy = sorted(m for m in ("ray", "cleanfid") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize(
    "code",
    [
        "import orchestrator.spec",
        "import analysis.generative",
        "import dynsweep.progress",
        # a spec with an fid step: validating it imports the step class, not its libraries
        "from orchestrator.spec import ExperimentSpec\n"
        "ExperimentSpec.model_validate({'name': 'x', 'trainer': 'diffusion', 'config': {},"
        " 'analysis': [{'step': 'fid', 'params': {'samples': 16}}]})",
    ],
    ids=["spec", "generative", "progress", "spec-with-fid"],
)
def test_reading_a_config_loads_neither_ray_nor_cleanfid(code):
    out = subprocess.run(
        [sys.executable, "-c", LIGHT.format(code=code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "", f"{code!r} imported {out.stdout.strip()}"
