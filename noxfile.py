"""The one entry point for checks: `nox` runs lint, typecheck, tests (Python 3.10-3.13) and docs."""

from __future__ import annotations

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Each integration's module is measured by its own session, where its peer is installed.
INTEGRATION_MODULES = [
    "pizzagpt_sdk/g4f.py",
    "pizzagpt_sdk/_llm_plugin.py",
    "pizzagpt_sdk/langchain.py",
    "pizzagpt_sdk/_shared_clients.py",
    "pizzagpt_sdk/serve/*",
]
# Coverage is measured on one Python: the package has no code for one Python only, and measuring
# costs each run about 40 % more CPU.
COVERAGE_PYTHON = "3.13"

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "docs", "g4f", "integrations-14", "serve"]
nox.options.reuse_existing_virtualenvs = True
# A Python that cannot be found fails the run: skipping it would pass while testing less.
nox.options.error_on_missing_interpreters = True


def install_groups(session: nox.Session, *groups: str) -> None:
    session.install(*nox.project.dependency_groups(PYPROJECT, *groups))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: formatting, then the rules chosen in pyproject.toml (TID251 guards the core)."""
    install_groups(session, "lint")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    install_groups(session, "typecheck")
    session.install("-e", ".")
    # Workers for mypy's own processes (mypy 2): 30 s instead of 45 s on two cores, cache cold.
    session.run("mypy", "--strict", "--num-workers", "auto")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """pytest; on COVERAGE_PYTHON with branch coverage (subprocesses too), failing under 95 %."""
    install_groups(session, "test")
    session.install("-e", ".")
    # Let Python cache compiled modules even where PYTHONDONTWRITEBYTECODE is set: the suite
    # starts over a hundred Python processes (the CLI, the docs' examples, pytest in pytest, a
    # Jupyter kernel), and without the cache each compiles all it imports again: 223 s of CPU
    # instead of 141 s for those tests.
    session.env["PYTHONDONTWRITEBYTECODE"] = None
    # Half the suite's time is spent waiting (timeouts, deadlines, retry sleeps, servers that
    # trickle): six workers overlap those waits on two cores (on Python 3.11: 114 s with four
    # workers handed tests in fixed shares, 76 s with six that steal work once idle). Override
    # with `-- -n 0`.
    options = ["--numprocesses=6", "--dist=worksteal"]
    if session.python != COVERAGE_PYTHON:
        # An engine's code is the same on every Python, and its library pinned to one version:
        # COVERAGE_PYTHON runs every engine in every world; the other Pythons run every test on
        # the default engine, httpx (in both worlds, on asyncio and trio), in half the time
        # (Python 3.10: 65 s instead of 90 s). What differs between Pythons in the package
        # (asyncio's uncancel(), httpx2's floor) is reached through httpx on asyncio, and mypy
        # checks every engine against Python 3.10's standard library.
        options.append("--engines=default")
    if session.python != COVERAGE_PYTHON:
        # The docs' examples are text, the same on every Python: COVERAGE_PYTHON runs each one
        # (in a process of its own, about 2 s apiece); the code they call is tested here too.
        session.run(
            "pytest", "--ignore=tests/integrations", *options,
            "--deselect=tests/test_docs.py::test_python_examples_run", *session.posargs,
        )  # fmt: skip
        return
    session.run("coverage", "erase")
    session.run(
        "coverage", "run", "-m", "pytest", "--ignore=tests/integrations", *options,
        *session.posargs,
    )  # fmt: skip
    session.run("coverage", "combine", "--quiet")
    # The integrations' modules are measured by their own sessions, with their peers installed.
    session.run("coverage", "report", f"--omit={','.join(INTEGRATION_MODULES)}")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, with every warning an error (the API reference included)."""
    install_groups(session, "docs")
    session.install("-e", ".")
    site = session.create_tmp() + "/site"
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})
    session.log(f"The site is in {site}: open {site}/index.html")


@nox.session(python="3.12")
def g4f(session: nox.Session) -> None:
    """The gpt4free provider (the g4f extra), driven by gpt4free's own clients, with coverage."""
    install_groups(session, "g4f")
    session.install("-e", ".[g4f]")
    session.run("coverage", "erase")
    session.run(
        "coverage", "run", "-m", "pytest", "tests/integrations/test_g4f.py", *session.posargs
    )
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--include=pizzagpt_sdk/g4f.py", "--fail-under=90")


@nox.session(python="3.12")
def serve(session: nox.Session) -> None:
    """`pizzagpt serve` driven over real sockets by the openai package, with coverage."""
    install_groups(session, "test", "serve")
    session.install("-e", ".[serve]")
    session.run("coverage", "erase")
    session.run(
        "coverage", "run", "-m", "pytest", "tests/integrations/test_serve.py", *session.posargs
    )
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--include=pizzagpt_sdk/serve/*", "--fail-under=90")


@nox.session
def soak(session: nox.Session) -> None:
    """Load and soak, not in the default run: 10,000 requests at 256 in flight through one
    AsyncClient with zero errors, then RSS growth under 5 MB from request 10,000 to 50,000."""
    install_groups(session, "test")  # trio, for --backend trio
    session.install("-e", ".")
    session.run(
        "python", "benchmarks/soak.py",
        "--requests", "10000", "--in-flight", "256", "--rss-requests", "50000",
        "--rss-bound", "5", "--time-limit", "1200",
        *session.posargs,
    )  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks, not in the default run: `nox -s bench [-- --quick]` prints the table."""
    install_groups(session, "bench")
    # gpt4free 6.7.1 is the last release with the Pizzagpt provider, and it fails to import:
    # benchmarks/peers.py loads that one file, so none of gpt4free's dependencies are needed.
    session.install("--no-deps", "g4f==6.7.1")
    session.install(".[aiohttp,httpx2,impersonate]")  # as users get it: not editable, compiled
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python="3.12", name="integrations-14")
def integrations_14(session: nox.Session) -> None:
    """The `llm` plugin and the LangChain model, tested with their real peers: `llm`'s API and
    CLI, and langchain-tests' standard suites, against the loopback fake (issue 14)."""
    install_groups(session, "integrations-14")
    session.install("-e", ".[llm,langchain]")
    session.run("coverage", "erase")
    session.run(
        "coverage", "run", "-m", "pytest",
        # langchain-tests brings pytest-asyncio, whose start-up warning the strict warning
        # filter turns into an error; the async tests run on anyio's plugin, on asyncio.
        "-p", "no:asyncio",
        # The standard suite's init-time benchmark: run once, not timed over many rounds.
        "--benchmark-disable",
        "tests/integrations/test_llm_plugin.py", "tests/integrations/test_langchain.py",
        *session.posargs,
    )  # fmt: skip
    session.run("coverage", "combine", "--quiet")
    session.run(
        "coverage", "report", "--fail-under=90",
        "--include=pizzagpt_sdk/_llm_plugin.py,pizzagpt_sdk/langchain.py,pizzagpt_sdk/_shared_clients.py",
    )  # fmt: skip
