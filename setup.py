"""Build shim: where the packages are; everything else is in pyproject.toml.

The wheel has one top-level package, `tfgraft`: the library (`tfgraft/`),
the entry points of `train/` as `tfgraft.train` (`python -m
tfgraft.train.<job>`, the `tfgraft-train` command) and the recipes of
`configs/` as `tfgraft/configs`. A clone keeps `python -m train.<job>`
with `configs/` (README "Install").
"""

import setuptools

setuptools.setup(
    packages=setuptools.find_packages(include=["tfgraft", "tfgraft.*"])
    + ["tfgraft.train", "tfgraft.configs"],
    package_dir={"tfgraft.train": "train", "tfgraft.configs": "configs"},
)
