"""Typed messages between the poller, the screens and the app."""
from __future__ import annotations

from textual.message import Message

from fa_tui.core.store import Snapshot


class RunsUpdated(Message):
    """A fresh picture of the runs directory, from the poller thread."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class MonitorRuns(Message):
    """Show these runs in Monitor."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names


class RunsLaunched(Message):
    """New run directories exist and their workers were started."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names
