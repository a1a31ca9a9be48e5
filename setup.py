"""Packages are *found*, never listed: each import root maps onto a top-level folder
(DESIGN.md: sslzoo.zoo -> zoo/, ...), and every folder with an ``__init__.py`` below it is a
subpackage. Package data is everything else in those folders, by pattern (pyproject.toml).
The rest of the metadata lives in pyproject.toml."""
from setuptools import find_packages, setup

ROOTS = {"sslzoo": "sslzoo", "sslzoo.zoo": "zoo", "sslzoo.training": "training",
         "sslzoo.demo": "demo", "sslzoo.cards": "cards"}

packages = [sub for name, folder in ROOTS.items() for sub in [name, *(f"{name}.{p}" for p in find_packages(folder))]]
setup(packages=packages, package_dir=ROOTS)
