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
    # The installed metadata: after changing pyproject.toml, `pip install -e .` again.
    assert {"trio", "progress", "aiohttp"} <= extras
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


def public_modules() -> dict[str, Path]:
    """Every public module of the package by its dotted name: no part of its path is private."""
    modules = {}
    for path in sorted((ROOT / "pizzagpt_sdk").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            modules[".".join(parts)] = path
    return modules


def exported(path: Path) -> list[str]:
    """A module's `__all__`, read without importing it (an extra's module needs its extra)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "__all__":
            assert isinstance(node, ast.Assign | ast.AnnAssign)
            assert node.value is not None
            names: list[str] = ast.literal_eval(node.value)
            return names
    raise AssertionError(f"{path.relative_to(ROOT)} is public and has no __all__")


def test_every_public_name_is_in_the_api_reference() -> None:
    """Each name a public module exports has a `::: module.Name` entry in docs/reference.md (or
    its module one, `::: module`, which renders every member), under a public path. A name that
    several modules export (`pizzagpt_sdk.RetryPolicy`, `pizzagpt_sdk.core.RetryPolicy`) needs
    one entry."""
    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    entries = set(re.findall(r"^::: ([\w.]+)", reference, re.MULTILINE))
    modules = public_modules()
    assert {"pizzagpt_sdk", "pizzagpt_sdk.core", "pizzagpt_sdk.testing"} <= modules.keys()
    documented = {
        entry.rpartition(".")[2] for entry in entries if entry.rpartition(".")[0] in modules
    }
    missing = [
        f"{module}.{name}"
        for module, path in modules.items()
        if module not in entries
        for name in exported(path)
        if not name.startswith("__") and name not in documented
    ]
    assert missing == [], "add a `::: module.Name` entry to docs/reference.md for each"


def test_the_readme_says_where_the_docs_session_writes_the_site() -> None:
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert 'site = session.create_tmp() + "/site"' in noxfile  # nox's <envdir>/docs/tmp
    assert "`.nox/docs/tmp/site`" in (ROOT / "README.md").read_text(encoding="utf-8")
