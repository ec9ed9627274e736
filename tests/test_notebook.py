"""The quick-start notebook runs in a real Jupyter kernel, against the offline fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "docs" / "notebooks" / "quickstart.ipynb"


def outputs(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.extend(str(value) for value in output.get("data", {}).values())
    return "\n".join(parts)


def test_the_quickstart_notebook_runs_in_a_kernel(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    # Any cell error raises CellExecutionError; no cell may take long, nothing may hang.
    NotebookClient(
        notebook, timeout=60, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "event loop running: True" in outputs(code[1])  # the sync client in a running loop
    assert "offline PizzaGPT fake" in outputs(code[1])
    markdown = [o for o in code[2]["outputs"] if "text/markdown" in o.get("data", {})]
    assert "**Sources**" in markdown[0]["data"]["text/markdown"]
    assert "finish reason: stop" in outputs(code[3])
    assert "5 messages in the conversation" in outputs(code[4])
    assert "3/3" in outputs(code[5]) or "100%" in outputs(code[5])
