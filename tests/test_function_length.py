"""No function of the package over MAX_LINES lines without a reason written beside it.

A function's length is the number of lines of its body, its docstring left out. A longer one needs a
comment line ``# long: <reason>`` directly above its ``def`` (or above its first decorator).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = (REPO / "solo_qscore", REPO / "callbacks")
MAX_LINES = 80
MARKER = "# long:"


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    if len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def has_reason(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> bool:
    top = min([node.lineno] + [d.lineno for d in node.decorator_list])  # 1-based line of the first decorator
    above = lines[top - 2].strip() if top >= 2 else ""
    return above.startswith(MARKER) and len(above) > len(MARKER) + 1


def long_functions() -> list[tuple[str, int, str, int, bool]]:
    found = []
    for root in ROOTS:
        for path in sorted(root.rglob("*.py")):
            text = path.read_text()
            lines = text.splitlines()
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_LINES:
                    found.append((str(path.relative_to(REPO)), node.lineno, node.name, body_lines(node),
                                  has_reason(node, lines)))
    return found


def test_every_long_function_says_why():
    missing = [f"{path}:{line} {name} ({n} lines)" for path, line, name, n, ok in long_functions() if not ok]
    assert not missing, f"functions over {MAX_LINES} lines without a '{MARKER} <reason>' comment above: {missing}"


def test_the_check_sees_a_long_function_and_its_reason():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES + 1))
    plain = f"def f():\n    \"\"\"doc\"\"\"\n{body}\n"
    node = ast.parse(plain).body[0]
    assert body_lines(node) == MAX_LINES + 1 and not has_reason(node, plain.splitlines())
    marked = f"# long: one table, row by row\n@decorator\n{plain}"
    assert has_reason(ast.parse(marked).body[0], marked.splitlines())
