"""The project's own plumbing, as a new user meets it: the noxfile, the extras, the reference."""

from __future__ import annotations

import ast
import re
import shlex
from importlib import metadata
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


def requirements(extra: str) -> set[str]:
    """The names an extra of the installed package requires (from its metadata)."""
    names = set()
    for line in metadata.requires("pizzagpt-sdk") or []:
        requirement, _, marker = line.partition(";")
        if re.search(rf"extra == [\"']{extra}[\"']", marker):
            names.add(re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower())
    return names


def test_the_extras_bring_what_the_docs_promise() -> None:
    assert "anyio" in requirements("trio")  # anyio[trio]: the trio that anyio supports
    assert {"tqdm", "ipywidgets"} <= requirements("progress")  # the notebook widget
    assert "aiohttp" in requirements("aiohttp")


INSTALL = re.compile(r"pip install ([^`&#\n]+)")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_install_lines_work_from_a_checkout() -> None:
    """Until the package is published, `pip install pizzagpt-sdk` finds nothing: the docs
    install the checkout (`.`, `".[extra]"`), with extras that exist; tools are pinned."""
    extras = set(metadata.metadata("pizzagpt-sdk").get_all("Provides-Extra") or [])
    targets = [
        (page.name, target)
        for page in PAGES
        if page.name != "changelog.md"
        for match in INSTALL.finditer(page.read_text(encoding="utf-8"))
        for target in shlex.split(match.group(1))
    ]
    assert len(targets) >= 6
    wrong = []
    for page, target in targets:
        name, _, wanted = target.partition("[")
        if name == ".":
            wrong += [
                f"{page}: {target}" for e in filter(None, wanted[:-1].split(",")) if e not in extras
            ]
        elif "==" not in target:  # a tool, pinned
            wrong.append(f"{page}: {target}")
    assert wrong == []
