"""The architecture stays one-way: the layer order of docs/design.md, no import cycles, no private
imports across packages, no literal defaults or help texts in the CLI, one installed namespace."""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

# Folder -> installed package (pyproject's package-dir).
PACKAGES = {"harness": "si_bench", "tasks": "si_bench.tasks", "trainers": "si_bench.trainers",
            "reports": "si_bench.reports"}

# Lowest first; a module may import its own layer and the layers below it, never one above.
LAYERS = [
    ("foundation", {"si_bench", "si_bench.errors", "si_bench.faults", "si_bench.locks", "si_bench.options",
                    "si_bench.progress", "si_bench.resample"}),
    ("data and store", {"si_bench.store", "si_bench.merge", "si_bench.datasets"}),
    ("measures, selection, fit", {"si_bench.measures", "si_bench.select", "si_bench.fit", "si_bench.trajectories"}),
    ("backends and evaluation", {"si_bench.models", "si_bench.devices", "si_bench.sampling", "si_bench.backends",
                                 "si_bench.hf_backend", "si_bench.vllm_backend", "si_bench.mock_backend",
                                 "si_bench.tasks", "si_bench.lmeval", "si_bench.verify", "si_bench.evaluation",
                                 "si_bench.lm_eval_import"}),
    ("trainers", {"si_bench.trainers", "si_bench.sweep"}),
    ("reports", {"si_bench.reports"}),
    ("api", {"si_bench.api"}),
    ("cli", {"si_bench.cli", "si_bench.__main__"}),
]
OLD_TOP_LEVEL = {"harness", "tasks", "trainers", "reports"}


def module_files() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = module_files()


def imports_of(name: str, path: Path) -> set[str]:
    """Every si_bench module this one imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            top = target.split(".")[0]
            assert top not in OLD_TOP_LEVEL, f"{name} imports {target}: use the si_bench namespace"
            if target in MODULES:
                found.add(target)
    return found - {name}


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    best = None
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and (best is None or len(member) > len(best[1])):
                best = (index, member)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS and to docs/design.md"
    return best[0]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    mine = layer_of(module)
    upward = sorted(t for t in GRAPH[module] if layer_of(t) > mine)
    assert not upward, f"{module} ({LAYERS[mine][0]}) imports {upward} from a higher layer"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_no_private_imports_across_packages():
    for module, targets in GRAPH.items():
        for target in targets:
            private = [p for p in target.split(".") if p.startswith("_") and p != "__main__"]
            if private:
                owner = target.split("." + private[0])[0]
                assert module == owner or module.startswith(owner + "."), f"{module} imports private {target}"


def test_cli_passes_no_literal_to_typer():
    """Defaults and help texts live in the config classes; the CLI is built from them (cli/_options.py)."""
    for module, path in MODULES.items():
        if not module.startswith("si_bench.cli") or module == "si_bench.cli._options":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("Option", "Argument"):
                raise AssertionError(f"{module} line {node.lineno}: typer.{node.func.attr}(...); declare the option "
                                     "on the command's config class instead")


def test_wheel_installs_one_namespace(tmp_path):
    """`pip install .` puts only si_bench on the path: nothing claims `import tasks` or `import harness`."""
    import shutil
    import subprocess
    import sys

    source = tmp_path / "src"  # a copy: setuptools writes build/ beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *PACKAGES):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("si_bench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"si_bench"}
    assert any(n.startswith("si_bench/tasks/") and n.endswith(".yaml") for n in archive.namelist())
    assert any(n.startswith("si_bench/data/gsm8k/") for n in archive.namelist())
