"""The house's size limits (issue 13): no module in ``runner/`` over 500 lines and no class over 300, so
that a part which grows past one concept is split before it becomes the next 800-line module."""

from __future__ import annotations

import ast
from pathlib import Path

import runner

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
PACKAGE = Path(runner.__file__).parent


def class_lines(tree: ast.Module) -> list[tuple[str, int, int]]:
    """Every class in a module, nested ones too: its name, first line (its first decorator's, if any) and
    length to its last line, blank lines and docstrings included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            last = node.end_lineno or node.lineno
            found.append((node.name, first, last - first + 1))
    return found


def test_no_module_in_runner_is_over_500_lines() -> None:
    too_long = [
        f"{path.relative_to(PACKAGE)}: {n} lines"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert too_long == []


def test_no_class_in_runner_is_over_300_lines() -> None:
    too_long = [
        f"{path.relative_to(PACKAGE)}:{first}: class {name}: {n} lines"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, first, n in class_lines(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if n > MAX_CLASS_LINES
    ]
    assert too_long == []


def test_a_class_is_counted_from_its_decorator_to_its_last_line() -> None:
    """The counter itself, on a class whose length is known: it cannot pass by counting too little."""
    source = "@dataclass\nclass A:\n    x: int\n\n    def f(self) -> None:\n        pass\n\n\ny = 1\n"
    assert class_lines(ast.parse(source)) == [("A", 1, 6)]


def test_the_version_is_written_once() -> None:
    """``runner/version.py`` is the one place: the installed metadata (hatch reads it from there) and the
    API client's User-Agent say the same."""
    from importlib.metadata import version

    from runner.api.client import USER_AGENT

    assert version("runcomfy-batch") == runner.__version__
    assert USER_AGENT == f"runcomfy-batch/{runner.__version__}"
