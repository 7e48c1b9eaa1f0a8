"""The fa-tui workbench: a Textual app with three modes — Compose, Runs, Monitor — over one
runs directory.

It never touches a training process except through its run directory and fa_tui.launch: a
background thread polls the directory (fa_tui.core.store) about twice a second and posts a
`RunsUpdated` message; the active screen redraws from that snapshot. Quitting the app leaves
every run running. Torch is never imported (the worker is a separate process).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.worker import get_current_worker

from fa_contract.rundir import RunDir
from fa_tui.core.queue import LaunchQueue
from fa_tui.core.store import RunStore, Snapshot
from fa_tui.screens.messages import MonitorRuns, RunsLaunched, RunsUpdated
from fa_tui.screens.runs import RunsScreen


def _compose_screen() -> Screen:
    from fa_tui.screens.compose import ComposeScreen   # pydantic: loaded when first shown
    return ComposeScreen()


def _monitor_screen() -> Screen:
    from fa_tui.screens.monitor import MonitorScreen
    return MonitorScreen()


class FaApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "fa-tui"
    MODES = {"compose": _compose_screen, "runs": RunsScreen, "monitor": _monitor_screen}
    DEFAULT_MODE = "runs"
    BINDINGS = [
        Binding("1,f2", "switch_mode('compose')", "Compose", key_display="1"),
        Binding("2,f3", "switch_mode('runs')", "Runs", key_display="2"),
        Binding("3,f4", "switch_mode('monitor')", "Monitor", key_display="3"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, runs_dir: Path, *, poll_s: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.poll_s = poll_s
        self.store = RunStore(self.runs_dir, clock=clock)
        self.snapshot = Snapshot()
        self.monitored: tuple[str, ...] = ()
        self.polls = 0
        self._wake = threading.Event()
        self.queue = LaunchQueue()

    def on_mount(self) -> None:
        self.sub_title = str(self.runs_dir)
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.notify(f"Cannot create the runs directory {self.runs_dir}: {e.strerror}. "
                        "Pass --runs-dir or set FA_TUI_RUNS.", severity="error", timeout=30)
        self._poll()

    # --- the poller ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _poll(self) -> None:
        """Refresh the snapshot every `poll_s` (or at once after `wake()`), until the app exits.
        Only the poster runs here; drawing happens on the UI thread when the message arrives."""
        worker = get_current_worker()
        failures = 0
        while not worker.is_cancelled:
            try:
                self.queue.step()
                self.post_message(RunsUpdated(self.store.refresh(self.monitored)))
                failures = 0
            except Exception as e:  # noqa: BLE001 -- the poller never dies (it also starts
                failures += 1       # queued runs): a run deleted mid-poll, no fork, a bug
                if failures == 2:    # twice in a row: not a passing race; say it once
                    self.call_from_thread(self.notify, f"{type(e).__name__}: {e}",
                                          title="Cannot read the runs", severity="warning",
                                          markup=False)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def start(self, runs: list[RunDir], jobs: int = 1, gpus: Sequence[str] = (),
              resume: bool = False) -> list[str]:
        """Start `runs` (or resume them), `jobs` at a time, through the launch queue that the
        poller keeps going; callable from any thread. Returns the names started now."""
        from fa_tui.launch import spawn          # pydantic: not on the start-up path
        started = self.queue.add(runs, spawn, jobs, gpus, resume)
        self.wake()
        return started

    def wake(self) -> None:
        """Poll now, e.g. after a launch or a stop, instead of within half a second."""
        self._wake.set()

    @on(RunsUpdated)
    def _updated(self, message: RunsUpdated) -> None:
        self.snapshot = message.snapshot
        self.polls += 1
        screen = self.screen_stack[-1] if self.screen_stack else None
        if hasattr(screen, "show") and screen.is_mounted:   # else on_screen_resume shows it
            try:
                screen.show(message.snapshot)
            except NoMatches:        # shutting down: the screen's widgets are already gone
                pass

    # --- navigation ---------------------------------------------------------------------------
    @on(MonitorRuns)
    def _monitor(self, message: MonitorRuns) -> None:
        self.monitor(message.names)

    def monitor(self, names: Iterable[str]) -> None:
        self.monitored = tuple(names)
        self.wake()
        self.switch_mode("monitor")

    @on(RunsLaunched)
    def _launched(self, message: RunsLaunched) -> None:
        waiting = self.queue.waiting
        self.notify(f"Launched {len(message.names)} run(s): {', '.join(message.names[:3])}"
                    + (" …" if len(message.names) > 3 else "")
                    + (f"; {waiting} wait their turn (queued)" if waiting else ""))
        self.wake()
        self.switch_mode("runs")

    def action_help(self) -> None:
        from fa_tui.screens.compose import ComposeScreen
        from fa_tui.screens.dialogs import ConfirmScreen
        from fa_tui.screens.export import ExportScreen
        from fa_tui.screens.help import HelpScreen
        from fa_tui.screens.monitor import MonitorScreen
        sections = {"Everywhere": self.BINDINGS, "Compose": ComposeScreen.BINDINGS,
                    "Runs": RunsScreen.BINDINGS, "Monitor": MonitorScreen.BINDINGS,
                    "Confirmation": ConfirmScreen.BINDINGS, "Export": ExportScreen.BINDINGS}
        self.push_screen(HelpScreen(sections))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, what in (("compose", "compose and launch runs or sweeps"),
                           ("runs", "every run in the runs directory"),
                           ("monitor", "live curves, ranks and angles of the chosen runs")):
            yield SystemCommand(mode.title(), f"Show {mode}: {what}",
                                lambda mode=mode: self.switch_mode(mode))
        yield SystemCommand("Help", "List every key", self.action_help)
        for binding in getattr(screen, "BINDINGS", []):
            if isinstance(binding, Binding) and binding.show and binding.description:
                yield SystemCommand(binding.description, f"{binding.key_display or binding.key}"
                                    f" on this screen",
                                    lambda b=binding: screen.run_action(b.action))


def run_app(runs_dir: Path) -> None:
    """Entry point of `fa-tui` with no sub-command."""
    FaApp(runs_dir).run()
