"""The layers of docs/ARCHITECTURE.md (a module imports only its own layer and the layers below it; no import
cycle; plotting draws arrays and imports no report), and tests that mirror the package both ways (every source
module has its test module, or a concept test named with a reason; every test module is a mirror or a concept test)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "solo_qscore"

# lowest first; a module of layer i may import solo_qscore modules of layers 0..i
LAYERS = [
    # progress bars; Lightning's two names; writing files whole
    ("util", ["solo_qscore._progress", "solo_qscore.adapters.lightning", "solo_qscore._files"]),
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
    ("run", ["solo_qscore.train", "solo_qscore.output_folder"]),
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


# -- no import cycles; plotting imports no report --------------------------------------------------
#: packages whose modules may still import each other in a cycle: prefix -> why (a cycle elsewhere fails)
KNOWN_CYCLES: dict[str, str] = {}


def module_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports anywhere in its file (in functions too; relative
    imports resolved; ``from pkg import name`` counts ``pkg`` and, when it is a module, ``pkg.name``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    out = set()
    for name in found:
        while name and name not in known:  # a name inside a module: the module
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def package_graph() -> dict[str, set[str]]:
    found = dict(modules())
    return {m: module_imports(m, p, set(found)) for m, p in found.items()}


def test_no_import_cycles():
    cycles = import_cycles(package_graph())
    unknown = [c for c in cycles if not any(all(m.startswith(p + ".") for m in c) for p in KNOWN_CYCLES)]
    assert not unknown, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in unknown)
    for prefix in KNOWN_CYCLES:  # a fixed cycle leaves the list
        assert any(all(m.startswith(prefix + ".") for m in c) for c in cycles), f"{prefix}: no cycle left"


def test_the_cycle_test_fails_on_a_cycle(tmp_path):
    """The check itself: a relative import back, inside a function, closes a cycle."""
    (tmp_path / "a.py").write_text("from pkg import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import x\n")
    (tmp_path / "c.py").write_text("import pkg.a\n")
    known = {"pkg.a", "pkg.b", "pkg.c"}
    graph = {m: module_imports(m, tmp_path / f"{m[4:]}.py", known) for m in known}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]


#: the most lines a module of the package may have (one concept per module), and the modules still over it
MAX_MODULE_LINES = 500
LONG_MODULES: dict[str, str] = {}


def test_no_module_over_500_lines():
    lines = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines()) for _, path in modules()}
    long = {path: n for path, n in lines.items() if n > MAX_MODULE_LINES and path not in LONG_MODULES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"
    fixed = [path for path in LONG_MODULES if lines.get(path, 0) <= MAX_MODULE_LINES]
    assert not fixed, f"no longer over {MAX_MODULE_LINES} lines: remove from LONG_MODULES: {fixed}"


def private_imports(module: str, path: Path, known: set[str]) -> list[str]:
    """``from <a module of the package> import _name``: a private name of another module (``_name`` itself a
    module, ``from solo_qscore import _files``, is allowed: a private module of its package)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        if base not in known:
            continue
        found += [f"{module} imports {base}.{alias.name}" for alias in node.names
                  if alias.name.startswith("_") and not alias.name.startswith("__")
                  and f"{base}.{alias.name}" not in known]
    return found


def test_no_module_imports_a_private_name_of_another():
    """What two modules share is public: a private helper used elsewhere moves to where it belongs."""
    found = dict(modules())
    private = [line for m, p in found.items() for line in private_imports(m, p, set(found))]
    assert not private, "private names imported from other modules:\n" + "\n".join(private)


def test_the_private_import_test_fails_on_one(tmp_path):
    """The check itself: a private function imported (relatively, in a function) fails; a private module passes."""
    (tmp_path / "a.py").write_text("def _load():\n    pass\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import _load\n")
    (tmp_path / "c.py").write_text("from pkg import _d\n")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg._d"}
    assert private_imports("pkg.b", tmp_path / "b.py", known) == ["pkg.b imports pkg.a._load"]
    assert private_imports("pkg.c", tmp_path / "c.py", known) == []


def test_plotting_imports_no_report():
    """Figures take arrays and return figures: the plotting layer knows nothing of a report."""
    graph = package_graph()
    for module, imported in graph.items():
        if module.startswith("solo_qscore.plotting"):
            assert not [m for m in imported if m.startswith("solo_qscore.report")], module


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


# -- and the other way: every test module mirrors a source module or is a concept test ------------------
#: test modules at the top of tests/ that check what crosses the layers (docs/ARCHITECTURE.md): path -> what
CONCEPT_MODULES = {
    "tests/test_architecture.py": "the layers, import cycles and the mirroring rule",
    "tests/test_function_length.py": "no function over 80 lines without a reason",
    "tests/test_packaging.py": "the wheel in a fresh virtualenv",
    "tests/test_reliability.py": "bad input end to end (docs/RELIABILITY.md)",
    "tests/test_numerics.py": "numerical edge cases of the core and the losses",
    "tests/test_wandb_record.py": "what an offline wandb run records",
    "tests/test_ddp_solo_main.py": "two DDP processes give the statistics and the probe of one",
    "tests/test_ddp_ifm.py": "IFM's loss and gradients across DDP processes",
}
#: test folders that mirror no source: smoke tests of the benchmark scripts (not part of the package)
UNMIRRORED_TEST_FOLDERS = ("tests/benchmarks",)


def unmatched_tests(repo: Path, roots, concept_modules, concept_tests: dict[str, tuple[str, str]],
                    folders=UNMIRRORED_TEST_FOLDERS) -> list[str]:
    """Test modules that mirror no source module and are no concept test (one line each)."""
    mirrors = {mirrored_test(source, root, tests).relative_to(repo).as_posix()
               for root, tests in roots for source in root.rglob("*.py") if source.name not in NOT_MIRRORED}
    allowed = mirrors | set(concept_modules) | {test for test, _ in concept_tests.values()}
    stray = []
    for path in sorted((repo / "tests").rglob("test_*.py")):
        key = path.relative_to(repo).as_posix()
        if key not in allowed and not key.startswith(tuple(f"{folder}/" for folder in folders)):
            stray.append(f"{key}: mirrors no source module (and is no entry of CONCEPT_MODULES)")
    return stray


def test_every_test_module_mirrors_a_source_module_or_is_a_concept_test():
    stray = unmatched_tests(REPO, MIRRORED_ROOTS, CONCEPT_MODULES, CONCEPT_TESTS)
    assert not stray, "test modules without their source module:\n" + "\n".join(stray)
    missing = [path for path in CONCEPT_MODULES if not (REPO / path).is_file()]
    assert not missing, f"concept tests listed but gone: {missing}"


def test_the_reverse_mirror_test_fails_on_a_stray_test(tmp_path):
    """The check itself: a test module whose source module was renamed, a concept test, a benchmark smoke test."""
    for path in ("pkg/__init__.py", "pkg/core/math.py", "tests/core/test_math.py", "tests/core/test_old_name.py",
                 "tests/test_layers.py", "tests/benchmarks/test_bench.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    roots = ((tmp_path / "pkg", tmp_path / "tests"),)
    assert unmatched_tests(tmp_path, roots, {"tests/test_layers.py": "the layers"}, {}) == [
        "tests/core/test_old_name.py: mirrors no source module (and is no entry of CONCEPT_MODULES)"]
