"""The quick-start notebook runs in a real Jupyter kernel, against the offline fake, and is
stored executed: its outputs are what a fresh run prints.

After changing the notebook, store it executed again: `python -m tests.test_notebook`.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "docs" / "notebooks" / "quickstart.ipynb"


def execute(notebook: Any, cwd: Path) -> Any:
    """Run every cell in a fresh kernel; any cell error raises CellExecutionError."""
    executed = copy.deepcopy(notebook)
    # No cell may take long, nothing may hang. Streams are coalesced as a notebook shows them
    # (a progress bar's "\r" redraws become their last state), and no timings are recorded.
    NotebookClient(
        executed,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        coalesce_streams=True,
        record_timing=False,
    ).execute()
    executed.metadata["language_info"] = {"name": "python"}  # not the version that ran it
    return executed


def outputs(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts.extend(str(data[kind]) for kind in sorted(data))  # in the order nbformat stores
    return "\n".join(parts)


def comparable(notebook: Any) -> list[str]:
    """Each code cell's outputs, the fake's free port left out."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    return [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", outputs(cell)) for cell in cells]


def test_the_quickstart_notebook_runs_in_a_kernel(tmp_path: Path) -> None:
    stored = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    notebook = execute(stored, tmp_path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "event loop running: True" in outputs(code[1])  # the sync client in a running loop
    assert "offline PizzaGPT fake" in outputs(code[1])
    markdown = [o for o in code[2]["outputs"] if "text/markdown" in o.get("data", {})]
    assert "**Sources**" in markdown[0]["data"]["text/markdown"]
    assert "finish reason: stop" in outputs(code[3])
    assert "5 messages in the conversation" in outputs(code[4])
    # The bar's last state, as the cell shows it (the text bar; tqdm's widget says 100%).
    assert re.search(r"\] 3/3\n", outputs(code[5])) or "100%" in outputs(code[5])
    # The docs show the stored notebook: it must hold what a run prints, not be stale or empty.
    assert comparable(stored) == comparable(notebook), (
        "store it again: python -m tests.test_notebook"
    )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        notebook = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
        nbformat.write(execute(notebook, Path(directory)), NOTEBOOK)  # type: ignore[no-untyped-call]
    print(f"stored {NOTEBOOK}, executed")
