"""build/static (tools/link_tree.py) lays si_bench out as it installs, so static tools resolve every module of
the package to its real file; mypy and pyright are pointed at it."""

from __future__ import annotations

import importlib.util
import tomllib

from conftest import ROOT
from test_architecture import module_files


def _link_tree():
    spec = importlib.util.spec_from_file_location("link_tree", ROOT / "tools" / "link_tree.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_module_resolves_to_its_file(tmp_path):
    _link_tree().write(out=tmp_path)
    modules = module_files()
    assert "si_bench.tasks" in modules and "si_bench.cli" in modules
    for name, path in modules.items():
        found = tmp_path.joinpath(*name.split("."))
        found = found / "__init__.py" if path.name == "__init__.py" else found.with_suffix(".py")
        assert found.resolve() == path.resolve(), name


def test_rewriting_replaces_the_old_tree(tmp_path):
    link_tree = _link_tree()
    stale = tmp_path / "si_bench" / "gone.py"
    stale.parent.mkdir()
    stale.write_text("")
    link_tree.write(out=tmp_path)
    assert not stale.exists()
    assert (tmp_path / "si_bench" / "store.py").resolve() == (ROOT / "harness" / "store.py").resolve()


def test_the_checkers_read_the_tree():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    where = _link_tree().OUT.relative_to(ROOT).as_posix()
    assert config["mypy"]["mypy_path"] == where
    assert config["pyright"]["extraPaths"] == [where]
    assert "typecheck" in (ROOT / "Makefile").read_text().split("\ntest:")[1].split("\n")[0]
