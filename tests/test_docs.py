"""Every example in the README and the docs runs, against the fake PizzaGPT on 127.0.0.1.

Python blocks run as scripts with `PIZZAGPT_BASE_URL` pointing at a fake server, so the
examples' plain `Client()` talks to it; blocks that define `test_` functions run under pytest
with the package's plugin; `pizzagpt --offline` shell lines run as they are.
"""

from __future__ import annotations

import doctest
import importlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pizzagpt_sdk.testing import FakePizzaGPT

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
TIMEOUT = 60


def blocks(language: str) -> list[pytest.ParameterSet]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text.count("\n", 0, match.start()) + 1
                found.append(pytest.param(match.group(2), id=f"{page.name}:{line}"))
    return found


@pytest.fixture(scope="module")
def environment() -> Iterator[dict[str, str]]:
    """The examples' environment: the SDK pointed at a fake server, no proxies, no secret.

    Nor coverage's: the code an example calls is measured by the tests, and measuring each
    example's own process too cost the coverage run 44 s of CPU (110 s instead of 67 s)."""
    with FakePizzaGPT().serve() as server:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.upper().endswith("_PROXY")
            and not name.startswith(("PIZZAGPT_", "COVERAGE_PROCESS_"))
        }
        env["PIZZAGPT_BASE_URL"] = server.url
        yield env


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@pytest.mark.parametrize("code", blocks("python"))
def test_python_examples_run(code: str, environment: dict[str, str], tmp_path: Path) -> None:
    if "pizzagpt_sdk.g4f" in code:
        pytest.importorskip("g4f", reason="needs the g4f extra: nox -s g4f runs it")
    # An example of an engine beside httpx needs its library (httpx2: Python 3.11 or newer).
    for library in ("httpx2", "aiohttp", "curl_cffi"):
        if re.search(rf"\b{library}\b", code):
            pytest.importorskip(library, reason=f"the example needs {library}")
    script = tmp_path / "test_example.py"
    script.write_text(code, encoding="utf-8")
    if re.search(r"^def test_", code, re.MULTILINE):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    else:
        command = [sys.executable, str(script)]
    result = run(command, environment, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def offline_commands() -> list[pytest.ParameterSet]:
    return [
        pytest.param(line, id=param.id)
        for param in blocks("sh")
        for line in str(param.values[0]).splitlines()
        if "pizzagpt --offline" in line and "batch" not in line
    ]


@pytest.mark.parametrize("line", offline_commands())
def test_offline_shell_examples_run(line: str, environment: dict[str, str]) -> None:
    command = shlex.split(line[line.index("pizzagpt --offline") :].split("#")[0])
    result = run([sys.executable, "-m", "pizzagpt_sdk", *command[1:]], environment, ROOT)
    assert result.returncode == 0, result.stderr
    assert "offline PizzaGPT fake" in result.stdout


@pytest.mark.parametrize(
    "module", ["pizzagpt_sdk._prompt", "pizzagpt_sdk._client", "pizzagpt_sdk._progress"]
)
def test_docstring_examples(module: str) -> None:
    failures, tried = doctest.testmod(importlib.import_module(module), verbose=False)
    assert failures == 0
    assert tried > 0 or module != "pizzagpt_sdk._prompt"
