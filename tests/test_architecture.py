"""The layers of docs/ARCHITECTURE.md: a module may import only its own layer and the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "solo_qscore"

# lowest first; a module of layer i may import solo_qscore modules of layers 0..i
LAYERS = [
    ("util", ["solo_qscore._progress", "solo_qscore.adapters.lightning"]),  # progress bars; Lightning's two names
    ("data", ["solo_qscore.data"]),  # datasets and loaders: torch/torchvision only
    ("core", ["solo_qscore.core"]),
    ("losses", ["solo_qscore.losses"]),
    ("probe", ["solo_qscore.probe"]),
    ("analysis", ["solo_qscore.analysis"]),
    ("plotting", ["solo_qscore.plotting"]),
    ("report", ["solo_qscore.report"]),
    ("config", ["solo_qscore.config"]),
    ("callbacks", ["solo_qscore.callbacks"]),
    ("adapters", ["solo_qscore.adapters"]),
    ("run", ["solo_qscore.train"]),
    ("cli", ["solo_qscore.cli", "solo_qscore.__main__"]),
    ("package", ["solo_qscore"]),  # the top-level __init__ re-exports the public names
]
# what the core may import from outside the package: no framework (solo-learn, Lightning, Hydra)
FRAMEWORKS = ("solo", "lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb")


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of docs/ARCHITECTURE.md")
    return best


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    for folder, name in ((REPO / "callbacks", "solo_qscore.callbacks"),):
        for path in sorted(folder.rglob("*.py")):
            stem = path.stem
            out.append((name if stem == "__init__" else f"{name}.{stem}", path))
    return out


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names
                      if (PACKAGE / Path(*node.module.split(".")[1:]) / f"{alias.name}.py").exists()]
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_module_imports_a_higher_layer(module, path):
    own = layer_of(module)
    for name in imports(path):
        if name == "solo_qscore" or not name.startswith("solo_qscore"):
            continue
        if name.startswith("solo_qscore.method_configs"):
            continue
        assert layer_of(name) <= own, f"{module} ({LAYERS[own][0]}) imports {name} ({LAYERS[layer_of(name)][0]})"


@pytest.mark.parametrize(("module", "path"), [(m, p) for m, p in modules() if m.startswith(("solo_qscore.core",
                                                                                          "solo_qscore.losses"))])
def test_the_core_imports_no_framework(module, path):
    for name in imports(path):
        assert name.split(".")[0] not in FRAMEWORKS, f"{module} imports {name}"


def test_the_layer_test_fails_on_a_violation(tmp_path):
    """The check itself: a core module importing the CLI is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from solo_qscore.cli.app import main\n")
    names = [n for n in imports(bad) if n.startswith("solo_qscore")]
    assert any(layer_of(n) > layer_of("solo_qscore.core.qscore") for n in names)
