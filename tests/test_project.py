"""The project's own plumbing, as a new user meets it: the noxfile, the extras, the reference."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent


def nox_options() -> dict[str, object]:
    """The `nox.options.NAME = value` assignments of noxfile.py (nox is not a test dependency)."""
    options: dict[str, object] = {}
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)):
            continue
        if ast.unparse(node.targets[0].value) == "nox.options":
            options[node.targets[0].attr] = ast.literal_eval(node.value)
    return options


def test_a_missing_python_fails_the_nox_run() -> None:
    """Skipping a Python nox cannot find would pass the run while testing less."""
    assert nox_options()["error_on_missing_interpreters"] is True
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "PYENV_VERSION=" in readme  # and how to make every Python visible
