"""Run the `py` examples of an integration's docs page against the loopback fake.

They are fenced `py`, not `python`, so that tests/test_docs.py (the main tests, without the
integrations' extras) leaves them to the integration's own session, which runs them here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pizzagpt_sdk.testing import FakePizzaGPT

DOCS = Path(__file__).parent.parent.parent / "docs"
FENCE = re.compile(r"^```py\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples(page: str) -> list[pytest.ParameterSet]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return [
        pytest.param(match.group(1), id=f"{page}:{text.count(chr(10), 0, match.start()) + 1}")
        for match in FENCE.finditer(text)
    ]


def run_example(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one example in this process (its imports are loaded already), with the SDK pointed
    at a fake server through its environment variables, as a user's script would be."""
    with FakePizzaGPT().serve() as server:
        for name in list(os.environ):
            if name.upper().endswith("_PROXY") or name.startswith("PIZZAGPT_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("PIZZAGPT_BASE_URL", server.url)
        monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
        exec(compile(code, "<docs example>", "exec"), {"__name__": "__main__"})
        assert server.connections > 0
