"""`python -m pizzagpt_sdk`: the `pizzagpt` command (see `pizzagpt_sdk._cli`)."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
