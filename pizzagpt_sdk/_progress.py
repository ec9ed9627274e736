"""A progress bar for `map()`: tqdm's when it is installed, a plain text one otherwise."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from ._batch import BatchProgress

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["ProgressBar"]

_WIDTH = 30


class ProgressBar:
    """Shows a batch's progress; pass it as `map(on_progress=...)`.

    With the `progress` extra (tqdm and ipywidgets) installed, it is tqdm's bar, a widget in
    notebooks (`tqdm.auto`); otherwise a one-line text bar on `file`. Close it (or use it in a
    `with` block) to end the line.

    Args:
        file: Where the text bar goes. Default: stderr.
        use_tqdm: `False` to use the text bar even when tqdm is installed; `None` (the default)
            uses tqdm when it can be imported.

    Examples:
        >>> with ProgressBar() as bar:  # doctest: +SKIP
        ...     answers = client.map(prompts, on_progress=bar)
    """

    def __init__(self, *, file: TextIO | None = None, use_tqdm: bool | None = None) -> None:
        self._file = file
        self._tqdm: Any = None
        self._use_tqdm = use_tqdm
        self._drawn = ""
        self._drawn_by: int | None = None

    def __call__(self, progress: BatchProgress) -> None:
        if self._tqdm is None and self._use_tqdm is not False:
            self._tqdm = _tqdm_bar(progress.total, self._file)
            self._use_tqdm = self._tqdm is not None
        if self._tqdm is not None:
            self._tqdm.update(progress.done - self._tqdm.n)
            self._tqdm.set_postfix(failed=progress.failed, refresh=False)
            return
        filled = _WIDTH * progress.done // max(progress.total, 1)
        failed = f", {progress.failed} failed" if progress.failed else ""
        self._drawn = (
            f"\r[{'#' * filled}{'.' * (_WIDTH - filled)}] {progress.done}/{progress.total}{failed}"
        )
        self._drawn_by = threading.get_ident()
        file = self._file or sys.stderr
        file.write(self._drawn)
        file.flush()

    def close(self) -> None:
        """End the bar: close tqdm's, or end the text bar's line.

        A text bar last drawn from another thread (`Client.map()` draws from its workers) is
        drawn again from this one before its line ends, so its last state shows even where a
        worker's output went astray.
        """
        # Where it goes astray: a Jupyter kernel on ipykernel 6 (the last for Python 3.10) finds
        # the cell of a thread's output by the thread's ident. A worker that reuses the ident of a
        # finished thread started by another thread (the fake server's connections, say) gets
        # that thread's cell, an earlier one, whose output nobody reads any more.
        if self._tqdm is not None:
            self._tqdm.close()  # tqdm draws its last state itself, from this thread
        elif self._drawn:
            last = self._drawn if self._drawn_by != threading.get_ident() else ""
            (self._file or sys.stderr).write(f"{last}\n")
            self._drawn = ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tqdm_bar(total: int, file: TextIO | None) -> Any:
    try:
        # An optional extra, never a runtime requirement (and untyped where installed).
        from tqdm.auto import tqdm  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    return tqdm(total=total, file=file, unit="prompt")
