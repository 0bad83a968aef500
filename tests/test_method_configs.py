"""Checks for the shipped run configurations ``method_configs/<dataset>/<method>.yaml``.

The allowed sections/keys come from the YAML block in ``docs/CONFIG_SCHEMA.md``; the allowed
``method_kwargs`` come from the ``__init__`` signatures of solo-learn 1.0.2's method classes, read
with :mod:`ast` from the installed sources (importing ``solo`` needs Lightning 1.x, so it is never
imported here).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "method_configs"
SCHEMA_DOC = ROOT / "docs" / "CONFIG_SCHEMA.md"

DATASETS = ("cifar10", "cifar100", "stl10", "imagenet100")
METHODS = ("simclr", "mocov2plus", "byol", "dino", "simsiam", "vicreg", "barlow_twins", "swav", "nnclr")

# solo-learn 1.0.2 module / class implementing each method
SOLO_CLASSES = {
    "simclr": ("simclr", "SimCLR"),
    "mocov2plus": ("mocov2plus", "MoCoV2Plus"),
    "byol": ("byol", "BYOL"),
    "dino": ("dino", "DINO"),
    "simsiam": ("simsiam", "SimSiam"),
    "vicreg": ("vicreg", "VICReg"),
    "barlow_twins": ("barlow_twins", "BarlowTwins"),
    "swav": ("swav", "SwAV"),
    "nnclr": ("nnclr", "NNCLR"),
}

EXPECTED_DATA = {
    "cifar10": dict(dataset="cifar10", root="datasets", fallback="fashion_mnist", image_size=32),
    "cifar100": dict(dataset="cifar100", root="datasets", fallback="fashion_mnist", image_size=32),
    "stl10": dict(dataset="stl10", root="datasets", fallback="fashion_mnist", image_size=96),
    "imagenet100": dict(dataset="imagefolder", root="datasets/imagenet100", fallback=None, image_size=224),
}
EXPECTED_CIFAR_STEM = {"cifar10": True, "cifar100": True, "stl10": False, "imagenet100": False}
EXPECTED_EPOCHS = {"cifar10": 1000, "cifar100": 1000, "stl10": 1000, "imagenet100": 400}

QSCORE_DEFAULTS = {
    "enabled": False, "eps": 4.0, "band": [50.0, 95.0], "lambda1": 1.0e-4, "lambda2": 1.0e-4,
    "statistics": "train_step",
}
IFM_DEFAULTS = {"enabled": False, "epsilon": 0.1, "alpha": 1.0}
WANDB_DEFAULTS = {"enabled": True, "project": "solo-qscore", "entity": None, "offline": True}

CONFIG_FILES = sorted(CONFIG_DIR.glob("*/*.yaml"))
IDS = [f"{p.parent.name}/{p.stem}" for p in CONFIG_FILES]


@cache
def schema() -> dict:
    block = re.search(r"```yaml\n(.*?)```", SCHEMA_DOC.read_text(), re.S)
    assert block, f"no ```yaml block in {SCHEMA_DOC}"
    return yaml.safe_load(block.group(1))


@cache
def load(path: Path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    assert isinstance(cfg, dict), f"{path} is not a mapping"
    return cfg


# ----------------------------------------------------------------------------- solo-learn signatures

@cache
def _solo_methods_dir() -> Path | None:
    spec = importlib.util.find_spec("solo")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "methods"


@cache
def _classes(module: str) -> dict[str, ast.ClassDef]:
    path = _solo_methods_dir() / f"{module}.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _init_params(cls: ast.ClassDef) -> tuple[list[str], set[str]]:
    """(all named parameters, parameters without a default) of ``cls.__init__``."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            positional = [a.arg for a in args.posonlyargs + args.args][1:]  # drop self
            n_required = len(positional) - len(args.defaults)
            required = set(positional[:n_required])
            required |= {a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None}
            return positional + [a.arg for a in args.kwonlyargs], required
    return [], set()


def _base_names(cls: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases]


@cache
def solo_signature(method: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(method-specific params, required method-specific params, BaseMethod params) for ``method``.

    Method-specific = the class's own ``__init__`` plus every solo-learn base class between it and
    ``BaseMethod`` (i.e. ``BaseMomentumMethod``'s ``base_tau_momentum`` ...). ``BaseMethod``'s own
    arguments are filled from the other config sections and must not appear in ``method_kwargs``.
    """
    module, name = SOLO_CLASSES[method]
    specific: set[str] = set()
    required: set[str] = set()
    generic: set[str] = set()
    cls = _classes(module)[name]
    while True:
        params, req = _init_params(cls)
        if cls.name == "BaseMethod":
            generic |= set(params)
            break
        specific |= set(params)
        required |= req
        bases = [b for b in _base_names(cls) if b in _classes("base") or b in _classes(module)]
        assert bases, f"{cls.name} does not derive from a solo-learn base class"
        cls = _classes(module).get(bases[0]) or _classes("base")[bases[0]]
    return frozenset(specific), frozenset(required), frozenset(generic)


# ----------------------------------------------------------------------------- tests

def test_every_method_and_dataset_has_a_config():
    expected = {f"{d}/{m}" for d in DATASETS for m in METHODS}
    assert set(IDS) == expected


def test_schema_doc_parses():
    sections = schema()
    assert {"method", "method_kwargs", "optimizer", "augmentations", "qscore", "ifm"} <= set(sections)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_sections_and_keys_follow_the_schema(path):
    cfg, ref = load(path), schema()
    assert set(cfg) == set(ref), f"sections differ from docs/CONFIG_SCHEMA.md: {set(cfg) ^ set(ref)}"
    for section, ref_value in ref.items():
        if not isinstance(ref_value, dict) or section in ("method_kwargs", "trainer"):
            continue  # method_kwargs: checked against solo-learn; trainer: any Trainer kwarg
        assert isinstance(cfg[section], dict), section
        assert set(cfg[section]) == set(ref_value), f"{section}: {set(cfg[section]) ^ set(ref_value)}"
    aug_keys = set(ref["augmentations"][0])
    assert isinstance(cfg["augmentations"], list) and cfg["augmentations"]
    for pipeline in cfg["augmentations"]:
        assert set(pipeline) == aug_keys, set(pipeline) ^ aug_keys
    for key in ("max_epochs", "precision", "accelerator", "devices"):
        assert key in cfg["trainer"]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_identity_fields(path):
    cfg = load(path)
    dataset, method = path.parent.name, path.stem
    assert cfg["method"] == method
    assert cfg["name"] == f"{method}-{dataset}"
    assert cfg["output_dir"] == f"runs/{method}-{dataset}"
    assert cfg["seed"] == 5
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# source: vturrisi/solo-learn "), "first line must name the source script"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_method_kwargs_match_solo_learn_constructor(path):
    assert _solo_methods_dir() is not None and _solo_methods_dir().is_dir(), "solo-learn 1.0.2 is not installed"
    cfg = load(path)
    specific, required, generic = solo_signature(cfg["method"])
    kwargs = cfg["method_kwargs"]
    assert isinstance(kwargs, dict) and kwargs
    unknown = set(kwargs) - specific
    assert not unknown, f"not accepted by solo-learn's {cfg['method']} constructor: {sorted(unknown)}"
    assert not set(kwargs) & generic, "BaseMethod arguments belong to the other sections"
    missing = required - set(kwargs)
    assert not missing, f"required constructor arguments missing: {sorted(missing)}"
    # the shipped configs spell out every method-specific argument, defaults included
    assert set(kwargs) == specific, f"optional arguments not spelled out: {sorted(specific - set(kwargs))}"
    for key, value in kwargs.items():
        assert isinstance(value, (int, float, bool)), f"{key}={value!r} should be a number/bool"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_crops_and_data(path):
    cfg = load(path)
    dataset = path.parent.name
    data, augs = cfg["data"], cfg["augmentations"]
    assert sum(a["num_crops"] for a in augs) == data["num_large_crops"] + data["num_small_crops"]
    assert data["num_large_crops"] == 2 and data["num_small_crops"] == 0
    for key, value in EXPECTED_DATA[dataset].items():
        assert data[key] == value, key
    assert data["batch_size"] == 256
    for a in augs:
        assert a["crop_size"] == data["image_size"]
        assert 0 < a["min_scale"] <= a["max_scale"] <= 1
        for key in ("color_jitter_prob", "gray_scale_prob", "gaussian_prob", "solarization_prob",
                    "horizontal_flip_prob"):
            assert 0.0 <= a[key] <= 1.0, key
    assert cfg["backbone"]["cifar"] is EXPECTED_CIFAR_STEM[dataset]
    assert cfg["backbone"]["name"] == "resnet18"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_optimizer_scheduler_trainer(path):
    cfg = load(path)
    opt, sched = cfg["optimizer"], cfg["scheduler"]
    assert opt["name"] == "sgd" and opt["extra_args"] == {"momentum": 0.9}
    for key in ("lr", "classifier_lr", "weight_decay", "eta_lars"):
        assert isinstance(opt[key], float) and opt[key] > 0, key
    for key in ("lars", "grad_clip_lars", "exclude_bias_n_norm"):
        assert isinstance(opt[key], bool), key
    assert sched["name"] in ("warmup_cosine", "cosine")
    assert isinstance(sched["warmup_start_lr"], float) and isinstance(sched["min_lr"], float)
    assert cfg["trainer"] == {
        "max_epochs": EXPECTED_EPOCHS[path.parent.name], "precision": 32, "accelerator": "auto",
        "devices": 1,
    }


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_qscore_ifm_wandb_defaults(path):
    cfg = load(path)
    assert cfg["qscore"] == QSCORE_DEFAULTS
    assert cfg["ifm"] == IFM_DEFAULTS
    assert cfg["wandb"] == WANDB_DEFAULTS
    assert set(cfg["probe"]) == set(schema()["probe"])


@pytest.mark.parametrize("method", METHODS)
def test_cifar_derived_configs_share_the_cifar_hyper_parameters(method):
    """cifar100 and stl10 reuse the CIFAR script: only dataset geometry / names may differ."""
    def strip(cfg: dict) -> dict:
        cfg = {k: v for k, v in cfg.items() if k not in ("name", "output_dir", "data", "backbone")}
        cfg["augmentations"] = [{k: v for k, v in a.items() if k != "crop_size"}
                                for a in cfg["augmentations"]]
        return cfg

    ref = load(CONFIG_DIR / "cifar10" / f"{method}.yaml")
    for dataset in ("cifar100", "stl10"):
        other = load(CONFIG_DIR / dataset / f"{method}.yaml")
        assert strip(other) == strip(ref), dataset
        assert other["backbone"]["zero_init_residual"] == ref["backbone"]["zero_init_residual"]
        same = ("batch_size", "num_workers", "num_large_crops", "num_small_crops")
        assert {k: other["data"][k] for k in same} == {k: ref["data"][k] for k in same}
