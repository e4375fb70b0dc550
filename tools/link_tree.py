"""Write build/static/, a tree of links in which si_bench.* is laid out as it installs.

harness/ installs as si_bench and tasks/, trainers/, reports/ as its subpackages (pyproject's package-dir),
through setuptools' editable finder, which only a running interpreter can follow. Editors, mypy and structure
viewers read this tree instead (mypy_path and pyright's extraPaths in pyproject.toml). Folders are linked
whole where no other package nests in them, so a new module appears without rerunning this; a new file at the
top of harness/ needs a rerun (`make install` and `make test` do it).
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "static"
SKIP = {"__pycache__"}


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Installed package -> its folder, as pyproject's [tool.setuptools.package-dir] maps them."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(os.path.relpath(source, target.parent), target_is_directory=source.is_dir())


def write(out: Path = OUT, root: Path = ROOT) -> None:
    mapping = package_dirs(root)
    shutil.rmtree(out, ignore_errors=True)
    for name, folder in sorted(mapping.items()):
        target = out.joinpath(*name.split("."))
        if any(other.startswith(name + ".") for other in mapping):
            # Another package lives inside this one: a real folder holding links to this folder's entries.
            for entry in sorted(folder.iterdir()):
                if entry.name not in SKIP:
                    link(target / entry.name, entry)
        else:
            link(target, folder)


if __name__ == "__main__":
    write()
