"""Package list for setuptools; everything else (metadata, dependencies, package data) is in setup.cfg.

Packages are found, not listed: ``solo_qscore`` and every package below it, plus two folders at the
repository root that install under ``solo_qscore``: ``callbacks/`` as ``solo_qscore.callbacks`` and
``method_configs/`` as ``solo_qscore.method_configs``, with every folder below them (the config
folders such as ``cifar/augmentations`` hold only YAML files; listing them as namespace packages is
what setuptools asks for data folders inside a package). A ``package_dir`` mapping cannot be
expressed with ``packages = find:`` in setup.cfg, hence this file; it works for wheels and for
editable installs (setuptools >= 64).
"""

from setuptools import find_namespace_packages, find_packages, setup

# installed name -> folder in the repository
MAPPED = {
    "solo_qscore.callbacks": "callbacks",
    "solo_qscore.method_configs": "method_configs",
}

packages = find_packages(include=["solo_qscore", "solo_qscore.*"])
for name, folder in MAPPED.items():
    found = find_namespace_packages(where=folder, exclude=["__pycache__", "*.__pycache__"])
    packages += [name] + [f"{name}.{sub}" for sub in found]

setup(packages=packages, package_dir=dict(MAPPED))
