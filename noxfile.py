"""The one entry point for checks: `nox` runs lint, typecheck, tests (Python 3.10-3.13) and docs."""

from __future__ import annotations

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Coverage is measured on one Python: the package has no code for one Python only, and measuring
# costs each run about 40 % more CPU.
COVERAGE_PYTHON = "3.13"

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
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
    session.run("mypy", "--strict")


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
    if session.python != COVERAGE_PYTHON:
        session.run("pytest", *session.posargs)
        return
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, with every warning an error (the API reference included)."""
    install_groups(session, "docs")
    session.install("-e", ".")
    site = session.create_tmp() + "/site"
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})
    session.log(f"The site is in {site}: open {site}/index.html")


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
    session.install(".[aiohttp]")  # as users get it: not editable, bytecode compiled
    session.run("python", "benchmarks/run.py", *session.posargs)
