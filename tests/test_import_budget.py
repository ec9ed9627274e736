"""What `import pizzagpt_sdk` loads: only what a first call needs, checked by listing modules.

Every module imported on `import pizzagpt_sdk` costs every user, in start-up time and memory, on
every start, whether they use it or not; docs/performance.md has the figures. httpx and anyio are
the runtime dependencies, so what they load is paid anyway: the budget is what the SDK loads on
top of them. The rule is checked by listing the modules in a fresh interpreter, never by timing
(benchmarks/run.py measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Loaded by no first call: kept out of `import pizzagpt_sdk`, each for its own reason.
NOT_LOADED = [
    "pizzagpt_sdk.testing",  # the fake and its pytest plugin: tests only
    "pizzagpt_sdk._cli",  # the `pizzagpt` command
    "pizzagpt_sdk.__main__",
    "pizzagpt_sdk.engines._httpx2",  # the engines beside the default: opt-in
    "pizzagpt_sdk.engines._aiohttp",
    "pizzagpt_sdk.engines._curl_cffi",
    "argparse",  # the CLI's
    "httpx2",  # the optional engines' libraries, each an extra
    "aiohttp",
    "curl_cffi",
    "pydantic",
    "trio",  # anyio imports a backend only when it runs one
    "pytest",
    "respx",
    "tqdm",  # the progress bar's, imported when a bar is shown
    "concurrent.futures",  # Client.map's thread pool: no call but map() needs it
    "asyncio",  # anyio's asyncio backend, imported when a loop runs
]
# Beside httpx's and anyio's modules and its own, what the SDK may load when imported.
ALLOWED_BEYOND_HTTPX = {"dataclasses"}

_LIST_MODULES = textwrap.dedent(
    """
    import json, sys
    import httpx, anyio
    dependencies = set(sys.modules)
    {statement}
    print(json.dumps({{"dependencies": sorted(dependencies), "all": sorted(sys.modules)}}))
    """
)


def loaded_by(statement: str) -> tuple[set[str], set[str]]:
    """The modules loaded by `import httpx, anyio`, and by that and then `statement`."""
    result = subprocess.run(
        [sys.executable, "-c", _LIST_MODULES.format(statement=statement)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listing = json.loads(result.stdout)
    return set(listing["dependencies"]), set(listing["all"])


@pytest.fixture(scope="module")
def sdk_modules() -> tuple[set[str], set[str]]:
    # With the clients, which the package imports on first use, and the default engine.
    return loaded_by(
        "from pizzagpt_sdk import AsyncClient, Client\nimport pizzagpt_sdk.engines._httpx"
    )


@pytest.mark.parametrize("module", NOT_LOADED)
def test_importing_the_sdk_does_not_load(
    sdk_modules: tuple[set[str], set[str]], module: str
) -> None:
    _, loaded = sdk_modules
    assert module not in loaded, f"`import pizzagpt_sdk` imports {module}"


def test_importing_the_sdk_loads_little_beyond_httpx_and_anyio(
    sdk_modules: tuple[set[str], set[str]],
) -> None:
    dependencies, loaded = sdk_modules
    extra = {
        module
        for module in loaded - dependencies
        if module != "pizzagpt_sdk" and not module.startswith("pizzagpt_sdk.")
    }
    # A private C accelerator comes with its module (`_heapq` with `heapq`): name the module.
    extra = {module for module in extra if not module.startswith("_")}
    assert extra <= ALLOWED_BEYOND_HTTPX, (
        f"`import pizzagpt_sdk` loads {sorted(extra - ALLOWED_BEYOND_HTTPX)} beyond httpx and "
        "anyio: import it where it is used, or allow it here with the reason"
    )


def test_the_core_and_the_testing_kit_stay_apart() -> None:
    _, loaded = loaded_by("import pizzagpt_sdk.core")
    assert not {"pizzagpt_sdk.testing", "pizzagpt_sdk._cli", "pizzagpt_sdk.engines"} & loaded


ENGINE_LIBRARIES = {"httpx2": "httpx2", "aiohttp": "aiohttp", "curl_cffi": "curl_cffi"}


@pytest.mark.parametrize("engine", sorted(ENGINE_LIBRARIES))
def test_an_engine_loads_its_library_and_no_other_engines(engine: str) -> None:
    pytest.importorskip(ENGINE_LIBRARIES[engine])
    _, loaded = loaded_by(
        "import asyncio, pizzagpt_sdk\n"
        f"client = pizzagpt_sdk.AsyncClient(base_url='http://127.0.0.1', engine={engine!r})\n"
        "asyncio.run(client.aclose())"
    )
    assert ENGINE_LIBRARIES[engine] in loaded
    others = {library for name, library in ENGINE_LIBRARIES.items() if name != engine}
    # (httpx2's pool imports trio when it is installed, to tell which loop runs: its choice.)
    assert not (others | {"pydantic", "pizzagpt_sdk.testing", "pizzagpt_sdk._cli"}) & loaded
