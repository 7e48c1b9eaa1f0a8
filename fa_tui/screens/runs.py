"""Runs: every run in the runs directory, live — including runs started from another shell
or machine — with filter, sort, multi-select, and stop / resume / delete / export."""
from __future__ import annotations

import shutil

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from fa_contract.rundir import RunDir
from fa_tui.core.runtable import SORT_KEYS, matches, sort_rows
from fa_tui.core.store import Snapshot
from fa_tui.screens.dialogs import ConfirmScreen
from fa_tui.screens.messages import MonitorRuns
from fa_tui.widgets.run_table import RunTable


class RunsScreen(Screen):
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("space", "mark", "Mark"),
        Binding("a", "mark_all", "Mark all", show=False),
        Binding("enter,m", "monitor", "Monitor"),
        Binding("c", "compare", "Compare"),
        Binding("s", "sort", "Sort"),
        Binding("o", "reverse", "Order", show=False),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("d,delete", "delete", "Delete"),
        Binding("e", "export", "Export"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot = Snapshot()
        self.sort_key = "started"
        self.reverse = True
        self._detail_shown: Text | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="/ filter: words, or rule:fa state:running …", id="filter",
                    compact=True)
        yield RunTable(id="runs")
        yield Static(id="detail")
        yield Footer()

    @property
    def table(self) -> RunTable:
        return self.query_one(RunTable)

    def on_mount(self) -> None:
        self.table.focus()

    def on_screen_resume(self) -> None:
        self.show(self.app.snapshot)

    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        query = self.query_one("#filter", Input).value
        rows = sort_rows([r for r in snapshot.rows if matches(r, query)], self.sort_key,
                         self.reverse)
        self.table.show(rows)
        marked = len(self.table.marked & {r.name for r in rows})
        self.sub_title = (f"{len(rows)}/{len(snapshot.rows)} runs · {marked} marked · "
                          f"sort {self.sort_key} {'▼' if self.reverse else '▲'}")
        self._detail()

    @on(DataTable.RowHighlighted)
    def _detail(self) -> None:
        name = self.table.cursor_name
        row = self.table.row(name) if name else None
        detail = Text()
        query = self.query_one("#filter", Input).value.strip()
        if row is None and query and self.snapshot.rows:
            detail.append(f"No run matches the filter {query!r} "
                          f"({len(self.snapshot.rows)} runs in all): esc clears it.", "dim")
        elif row is None:
            detail.append("No runs yet: press 1 to compose one, or start one with fa-tui run.",
                          "dim")
        else:
            detail.append(f"{row.name}  ", "bold")
            detail.append(row.state, "bold")
            if row.reason:
                detail.append(f"  {row.reason}")
            detail.append(f"\n{self.app.runs_dir / row.name}", "dim")
        if detail != self._detail_shown:                 # a repaint only on change
            self._detail_shown = detail
            self.query_one("#detail", Static).update(detail)

    # --- filter, marks, sort ------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.show(self.snapshot)

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.table.focus()

    def _none_selected(self, what: str) -> bool:
        """Say why `what` cannot act when the table shows no run (empty, or filtered out)."""
        if self.table.row_count:
            return False
        why = ("the filter hides every run (esc clears it)"
               if self.query_one("#filter", Input).value.strip() and self.snapshot.rows
               else "there are no runs yet (1 composes one)")
        self.notify(f"Nothing to {what}: {why}.", severity="warning", markup=False)
        return True

    def action_mark(self) -> None:
        if self._none_selected("mark"):
            return
        if self.table.cursor_name:
            self.table.toggle_mark(self.table.cursor_name)
            self.show(self.snapshot)
            self.table.action_cursor_down()

    def action_mark_all(self) -> None:
        shown = [r.name for r in self.snapshot.rows if self.table.row(r.name)]
        if self.table.marked >= set(shown):
            self.table.marked -= set(shown)
        else:
            self.table.marked |= set(shown)
        self.show(self.snapshot)

    def action_sort(self) -> None:
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self.show(self.snapshot)

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.show(self.snapshot)

    # --- actions on the selection -------------------------------------------------------------
    @on(DataTable.RowSelected)
    def action_monitor(self) -> None:
        if self._none_selected("monitor"):
            return
        names = self.table.selection()
        if names:
            self.post_message(MonitorRuns(names))

    def _runs(self) -> list[RunDir]:
        return [RunDir(self.app.runs_dir / name) for name in self.table.selection()]

    def action_compare(self) -> None:
        """Compare the marked runs, seeds of one condition counting as one group."""
        from fa_tui.core.compare import check_count
        from fa_tui.core.panels import entries
        if self._none_selected("compare"):
            return
        names = self.table.selection()
        problem = check_count(len(entries(names, self.app.snapshot.configs, True)))
        if problem:
            self.notify(problem, severity="warning", markup=False)
            return
        self.app.compare(names)

    def action_stop(self) -> None:
        if self._none_selected("stop"):
            return
        active = [r for r in self._runs() if (row := self.table.row(r.name)) and row.active]
        if not active:
            self.notify("Nothing to stop: no queued or running run selected.", severity="warning")
            return
        self._stop(active)

    @work(thread=True, group="actions")
    def _stop(self, runs: list[RunDir]) -> None:
        from fa_tui.launch import stop          # pydantic: not on the start-up path
        asked = [run.name for run in runs if stop(run)]
        others = [run.name for run in runs if run.name not in asked]
        if asked:
            self.app.call_from_thread(self.notify, f"Stop requested: {', '.join(asked)}")
        if others:
            self.app.call_from_thread(self.notify, "No worker of these runs on this machine: "
                                      + ", ".join(others), severity="warning")
        self.app.wake()

    def action_resume(self) -> None:
        """Resume stopped and failed runs (from their checkpoint, else from scratch) and start
        queued runs nobody started; the policy is the CLI's (fa_tui.launch.resume_refusal)."""
        from fa_tui.launch import resume_refusal
        if self._none_selected("resume"):
            return
        runs = self._runs()
        rows = {r.name: self.table.row(r.name) for r in runs}
        fresh = [r for r in runs if rows[r.name] and rows[r.name].state == "queued"]
        resume, refused = [], []
        for r in runs:
            if r in fresh:
                continue
            why = resume_refusal(r)
            (refused if why else resume).append(why or r)
        if refused:
            self.notify("\n".join(refused), title="Not resumed", severity="warning",
                        markup=False)
        if not resume and not fresh:
            if not refused:
                self.notify("Nothing to resume: select a stopped or failed run, or a queued "
                            "run.", severity="warning")
            return
        self._resume(resume, fresh)

    @work(thread=True, group="actions")
    def _resume(self, resume: list[RunDir], fresh: list[RunDir]) -> None:
        from fa_tui.slurm import SlurmError, resubmit, slurm_runs
        cluster = {r.path for r in slurm_runs([*resume, *fresh])}
        if cluster:          # SLURM runs: submitted again; a queued one is SLURM's to start
            again = [r for r in resume if r.path in cluster]
            try:
                if again:
                    resubmit(again)
                    self.app.call_from_thread(self.notify, "Submitted to SLURM: "
                                              + ", ".join(r.name for r in again))
            except (SlurmError, OSError) as e:
                self.app.call_from_thread(self.notify, str(e), title="Not submitted",
                                          severity="error")
            resume = [r for r in resume if r.path not in cluster]
            fresh = [r for r in fresh if r.path not in cluster]
        try:
            started = self.app.start(resume, jobs=len(resume), resume=True) if resume else []
            started += self.app.start(fresh, jobs=len(fresh)) if fresh else []
        except OSError as e:
            self.app.call_from_thread(self.notify, str(e), title="Not started", severity="error")
            return
        self.app.call_from_thread(self.notify, f"Queued: {', '.join(started) or 'none'}")

    def action_delete(self) -> None:
        if self._none_selected("delete"):
            return
        runs = self._runs()
        active = [r.name for r in runs if (row := self.table.row(r.name)) and row.active]
        if active:
            self.notify(f"Stop these first: {', '.join(active)}", severity="warning")
            return
        if not runs:
            return
        names = ", ".join(r.name for r in runs)
        self.app.push_screen(
            ConfirmScreen(f"Delete {len(runs)} run director{'y' if len(runs) == 1 else 'ies'}?",
                          f"{names}\nThis removes their metrics and checkpoints for good.",
                          yes="Delete"),
            lambda yes: yes and self._delete(runs))

    @work(thread=True, group="actions")
    def _delete(self, runs: list[RunDir]) -> None:
        for run in runs:
            shutil.rmtree(run.path, ignore_errors=True)
        self.app.call_from_thread(self._deleted, [r.name for r in runs])

    def _deleted(self, names: list[str]) -> None:
        self.table.marked -= set(names)
        self.notify(f"Deleted {len(names)} run(s).")
        self.app.wake()

    def action_export(self) -> None:
        from fa_tui.screens.export import ExportScreen
        if self._none_selected("export"):
            return
        runs = self._runs()
        if runs:
            self.app.push_screen(ExportScreen(runs))
