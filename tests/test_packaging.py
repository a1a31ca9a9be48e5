"""What users install: the wheel built from the source tree holds every module and every data file
of the package folders, and works from where it is unpacked (not from this checkout)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

# import root -> source folder (DESIGN.md; setup.py finds the subpackages below each)
ROOTS = {"sslzoo": "sslzoo", "sslzoo/zoo": "zoo", "sslzoo/training": "training", "sslzoo/demo": "demo",
         "sslzoo/cards": "cards"}
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", ".*.tmp")


def _is_junk(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc" or (path.name.startswith(".") and path.suffix == ".tmp")


def source_files() -> set[str]:
    """Every file of the package folders, named as it must appear in the wheel."""
    want = set()
    for prefix, folder in ROOTS.items():
        for p in (REPO / folder).rglob("*"):
            if p.is_file() and not _is_junk(p.relative_to(REPO)):
                want.add(f"{prefix}/{p.relative_to(REPO / folder).as_posix()}")
    return want


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the source tree (no build/ or egg-info left in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    for folder in set(ROOTS.values()):
        shutil.copytree(REPO / folder, src / folder, ignore=JUNK)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = dist.glob("sslzoo-*.whl")
    return whl


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n for n in names if not n.startswith("sslzoo-")}  # less the .dist-info
    want = source_files()
    assert any(n.startswith("sslzoo/zoo/pretexts/") for n in want)  # a subpackage is among them
    assert any(n.endswith(".safetensors") for n in want) and any(n.endswith(".md") for n in want)
    missing = sorted(want - packaged)
    assert not missing, f"in the source tree but not in the wheel: {missing}"
    stray = sorted(n for n in packaged - want)
    assert not stray, f"in the wheel but not in the source tree: {stray}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_unpacked_wheel_imports_every_module_and_reads_its_data(wheel, tmp_path):
    """Every module imports from the unpacked wheel, which shadows this checkout's editable install;
    the shipped weights, example images and card templates are read from there."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__")
                     for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py"))
    script = f"""
import importlib, importlib.util, sys
from pathlib import Path
site = Path({str(site)!r})
for name in {modules!r}:
    if name.endswith(".__main__"):  # runs the program when imported: found, not run
        origin = importlib.util.find_spec(name).origin
    else:
        origin = importlib.import_module(name).__file__
    assert Path(origin).resolve().is_relative_to(site), (name, origin)
from sslzoo import zoo
from sslzoo.cards import render_card
for name in zoo.list_models("*"):
    if zoo.lookup(name)[1].source.startswith("package:"):
        m = zoo.load(name)
        assert Path(zoo.resolve(name)).resolve().is_relative_to(site)
        assert render_card(m.config)
assert zoo.example_images() and all(Path(p).resolve().is_relative_to(site) for p in zoo.example_images())
print("ok", len({modules!r}))
"""
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok ")
