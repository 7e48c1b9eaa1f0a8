"""The run-directory format version, in one place.

Every status.json and events.jsonl line carries `v`. A reader accepts versions up to
FORMAT_VERSION; a newer file is reported as written by a newer fa-tui, never read as if it were
this version (new keys within a version are fine: readers ignore keys they do not know)."""
from __future__ import annotations

from typing import Any

FORMAT_VERSION = 1


def version_problem(v: Any, where: str) -> str | None:
    """Why a file (or line) of format version `v` cannot be read, or None when it can."""
    if isinstance(v, bool) or not isinstance(v, int):
        return f"{where}: format version v = {v!r} is not a whole number"
    if v > FORMAT_VERSION:
        return (f"{where}: format version {v} is newer than this fa-tui's ({FORMAT_VERSION}); "
                f"upgrade fa-tui")
    if v < 1:
        return f"{where}: format version v = {v} is not a known version"
    return None
