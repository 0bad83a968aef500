"""The layers of docs/ARCHITECTURE.md (a module imports only its own layer and the layers below it), and
tests that mirror the package (every source module has its test module, or a concept test named with a reason)."""

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


# -- tests mirror the package (docs/ARCHITECTURE.md "Tests") ---------------------------------------
TESTS = REPO / "tests"
#: source roots and the test folder that mirrors each
MIRRORED_ROOTS = ((PACKAGE, TESTS), (REPO / "callbacks", TESTS / "callbacks"))
#: files that need no test module of their own: re-exports and the ``python -m`` entry point
NOT_MIRRORED = ("__init__.py", "__main__.py")
#: source modules covered by a concept test instead of a mirrored module: path -> (test module, reason)
CONCEPT_TESTS = {
    "solo_qscore/core/_kernels.py": (
        "tests/test_numerics.py",
        "the numba kernel is an implementation of the statistics and Q, checked against the torch path on the "
        "numerical edge cases (large means, constant rows, every SIMD lane); tests/core/test_statistics.py "
        "compares the two on ordinary data",
    ),
}


def mirrored_test(source: Path, root: Path, tests: Path) -> Path:
    """``root/pkg/_mod.py`` -> ``tests/pkg/test_mod.py`` (a leading underscore dropped)."""
    rel = source.relative_to(root)
    return tests.joinpath(*rel.parts[:-1], f"test_{source.stem.lstrip('_')}.py")


def unmirrored(repo: Path, roots, concept_tests: dict[str, tuple[str, str]]) -> list[str]:
    """Source modules with neither a mirrored test module nor an existing concept test (one line each)."""
    missing = []
    for root, tests in roots:
        for source in sorted(root.rglob("*.py")):
            if source.name in NOT_MIRRORED:
                continue
            key = source.relative_to(repo).as_posix()
            expected = mirrored_test(source, root, tests)
            if key in concept_tests:
                concept, reason = concept_tests[key]
                if not (repo / concept).is_file() or not reason.strip():
                    missing.append(f"{key}: its concept test {concept} is missing (or has no reason)")
            elif not expected.is_file():
                missing.append(f"{key}: no {expected.relative_to(repo).as_posix()} (or an entry in CONCEPT_TESTS)")
    return missing


def test_every_source_module_has_a_mirrored_test_module():
    missing = unmirrored(REPO, MIRRORED_ROOTS, CONCEPT_TESTS)
    assert not missing, "source modules without tests:\n" + "\n".join(missing)


def test_the_mirror_test_fails_on_a_violation(tmp_path):
    """The check itself, on a synthetic layout: a module without a test, a mirrored one, a concept-tested one."""
    pkg, tests = tmp_path / "pkg", tmp_path / "tests"
    for path in ("pkg/__init__.py", "pkg/core/__init__.py", "pkg/core/math.py", "pkg/core/_fast.py",
                 "pkg/core/untested.py", "pkg/_util.py", "tests/core/test_math.py", "tests/test_util.py",
                 "tests/test_speed.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    concept = {"pkg/core/_fast.py": ("tests/test_speed.py", "the fast path is checked with the numerics")}
    assert unmirrored(tmp_path, ((pkg, tests),), concept) == [
        "pkg/core/untested.py: no tests/core/test_untested.py (or an entry in CONCEPT_TESTS)"]
    stale = {"pkg/core/_fast.py": ("tests/test_gone.py", "a concept test that was removed")}
    assert unmirrored(tmp_path, ((pkg, tests),), stale) == [
        "pkg/core/_fast.py: its concept test tests/test_gone.py is missing (or has no reason)",
        "pkg/core/untested.py: no tests/core/test_untested.py (or an entry in CONCEPT_TESTS)"]
