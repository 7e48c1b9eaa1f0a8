"""The fa-tui workbench: a Textual app with three modes — Compose, Runs, Monitor — over one
runs directory.

It never touches a training process except through its run directory and fa_tui.launch: a
background thread polls the directory (fa_tui.core.store) about twice a second and posts a
`RunsUpdated` message; the active screen redraws from that snapshot. Quitting the app leaves
every run running, and queued runs are started by the runs directory's scheduler
(fa_tui/scheduler.py), which outlives the app. Torch is never imported (the worker is a
separate process).
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
from fa_tui.core.queue import QueueDir
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
    IDLE_FACTOR = 4
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
        self.queue = QueueDir(self.runs_dir)

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
        """Refresh the snapshot every `poll_s` (or at once after `wake()`), until the app exits;
        while no run is queued or running, every IDLE_FACTOR × `poll_s` instead (nothing can
        change but by another process creating a run, which then shows within 2 s), so an
        open workbench costs next to nothing. Only the poster runs here; drawing happens on
        the UI thread when the message arrives."""
        worker = get_current_worker()
        failures = 0
        while not worker.is_cancelled:
            wait = self.poll_s
            try:
                if self.polls % 10 == 0 and self.queue.batches() and \
                        self.queue.scheduler_pid() is None:      # it died: the queue goes on
                    from fa_tui.scheduler import ensure_scheduler
                    ensure_scheduler(self.runs_dir)
                snapshot = self.store.refresh(self.monitored)
                self.post_message(RunsUpdated(snapshot))
                if not self.queue.batches() and not any(r.active for r in snapshot.rows):
                    wait = self.poll_s * self.IDLE_FACTOR
                failures = 0
            except Exception as e:  # noqa: BLE001 -- the poller never dies (it also starts
                failures += 1       # queued runs): a run deleted mid-poll, no fork, a bug
                if failures == 2:    # twice in a row: not a passing race; say it once
                    self.call_from_thread(self.notify, f"{type(e).__name__}: {e}",
                                          title="Cannot read the runs", severity="warning",
                                          markup=False)
            self._wake.wait(wait)
            self._wake.clear()

    def start(self, runs: list[RunDir], jobs: int = 1, gpus: Sequence[str] = (),
              resume: bool = False, estimates: dict[str, int] | None = None) -> list[str]:
        """Queue `runs` (or resume them), `jobs` at a time, with the runs directory's
        scheduler, which starts them and outlives the app; callable from any thread. Returns
        the names queued."""
        from fa_tui.launch import submit          # pydantic: not on the start-up path
        submit(self.runs_dir, runs, jobs, gpus, resume, estimates)
        self.wake()
        return [run.name for run in runs]

    def wake(self) -> None:
        """Poll now, e.g. after a launch or a stop, instead of within half a second."""
        self._wake.set()

    @on(RunsUpdated)
    def _updated(self, message: RunsUpdated) -> None:
        same = _same(self.snapshot, message.snapshot)
        self.snapshot = message.snapshot
        self.polls += 1
        if same:                     # nothing on any screen would change: no redraw at all
            return
        screen = self.screen_stack[-1] if self.screen_stack else None
        if hasattr(screen, "show") and screen.is_mounted:   # else on_screen_resume shows it
            try:
                screen.show(message.snapshot)
            except NoMatches:        # shutting down: the screen's widgets are already gone
                pass

    def notify(self, message: str, *, title: str = "", severity="information",
               timeout: float | None = None, markup: bool = False) -> None:
        """A toast, never read as Rich markup: messages quote presets and paths, whose
        `[sweep]` or `[section]` markup would swallow."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # --- navigation ---------------------------------------------------------------------------
    @on(MonitorRuns)
    def _monitor(self, message: MonitorRuns) -> None:
        self.monitor(message.names)

    def monitor(self, names: Iterable[str]) -> None:
        self.monitored = tuple(names)
        self.wake()
        self.switch_mode("monitor")

    def compare(self, names: Iterable[str]) -> None:
        """Open the comparison view on `names` (their events are then polled, as Monitor's)."""
        from fa_tui.screens.compare import CompareScreen
        self.monitored = tuple(names)
        self.wake()
        self.push_screen(CompareScreen(list(self.monitored)))

    @on(RunsLaunched)
    def _launched(self, message: RunsLaunched) -> None:
        waiting = len(self.queue.waiting())
        self.notify(f"Launched {len(message.names)} run(s): {', '.join(message.names[:3])}"
                    + (" …" if len(message.names) > 3 else "")
                    + (f"; {waiting} wait their turn (queued)" if waiting else ""))
        self.wake()
        self.switch_mode("runs")

    def action_help(self) -> None:
        from fa_tui.screens.compare import CompareScreen
        from fa_tui.screens.compose import ComposeScreen
        from fa_tui.screens.dialogs import ConfirmScreen
        from fa_tui.screens.export import ExportScreen
        from fa_tui.screens.help import HelpScreen
        from fa_tui.screens.monitor import MonitorScreen
        sections = {"Everywhere": self.BINDINGS, "Compose": ComposeScreen.BINDINGS,
                    "Runs": RunsScreen.BINDINGS, "Monitor": MonitorScreen.BINDINGS,
                    "Compare": CompareScreen.BINDINGS,
                    "Confirmation": ConfirmScreen.BINDINGS, "Export": ExportScreen.BINDINGS}
        self.push_screen(HelpScreen(sections))

    def action_queue_jobs(self) -> None:
        """Ask for a number and set it as `jobs` of every waiting launch (what `fa-tui queue
        --jobs N` does); the scheduler applies it at its next poll."""
        from fa_tui.screens.dialogs import PromptScreen
        waiting = len(self.queue.waiting())
        if not waiting:
            self.notify("No run is waiting in the queue.")
            return
        current = max((b.jobs for b in self.queue.batches()), default=1)
        self.push_screen(PromptScreen(f"Runs at a time ({waiting} waiting)", str(current),
                                      "a whole number, at least 1"), self._set_jobs)

    def _set_jobs(self, text: str | None) -> None:
        if text is None:
            return
        if not text.isdigit() or int(text) < 1:
            self.notify(f"{text!r}: expected a whole number, at least 1", severity="error")
            return
        try:
            changed = self.queue.set_jobs(int(text))
        except OSError as e:
            self.notify(f"Cannot change the queue: {e.strerror or e}", severity="error")
            return
        self.notify(f"{text} at a time for {changed} waiting launch(es)")
        self.wake()

    def keys_for_people(self, binding: Binding) -> str:
        """`/`, `d or delete`, `ctrl+l`: how a binding's keys are written on a keyboard."""
        if binding.key_display:
            return binding.key_display
        return " or ".join(self.get_key_display(Binding(k.strip(), binding.action))
                           for k in binding.key.split(","))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own entries (theme, screenshot, quit — not its key panel: Help lists every
        key), the screens, Help, and the current screen's actions with their keys."""
        for command in super().get_system_commands(screen):
            if command.title != "Keys":
                yield command
        for mode, what in (("compose", "compose and launch runs or sweeps"),
                           ("runs", "every run in the runs directory"),
                           ("monitor", "live curves, ranks and angles of the chosen runs")):
            yield SystemCommand(f"Go to {mode.title()}", f"The {mode} screen: {what}",
                                lambda mode=mode: self.switch_mode(mode))
        yield SystemCommand("Help", "Every key of every screen (also ? or F1)", self.action_help)
        yield SystemCommand("Queue: runs at a time",
                            "Change how many runs of the waiting launches run at once",
                            self.action_queue_jobs)
        where = type(screen).__name__.removesuffix("Screen")
        for binding in getattr(screen, "BINDINGS", []):
            if isinstance(binding, Binding) and binding.show and binding.description:
                yield SystemCommand(binding.description,
                                    f"{where}: press {self.keys_for_people(binding)}",
                                    lambda b=binding: screen.run_action(b.action))


def _same(a: Snapshot, b: Snapshot) -> bool:
    """Whether two snapshots show the same thing: rows (frozen, compared by value), event
    versions, log tails and skipped-line counts. Cheap next to any redraw."""
    return (a.rows == b.rows and a.versions == b.versions and a.skipped == b.skipped
            and a.logs.keys() == b.logs.keys()
            and all(len(a.logs[k]) == len(b.logs[k]) and a.logs[k][-1:] == b.logs[k][-1:]
                    for k in a.logs))


def run_app(runs_dir: Path) -> None:
    """Entry point of `fa-tui` with no sub-command."""
    FaApp(runs_dir).run()
