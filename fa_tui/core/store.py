"""The poller: everything the TUI knows about runs comes from one `RunStore.refresh()` call,
made from a background thread about twice a second, which returns an immutable `Snapshot`.

It reads incrementally: config.toml once, status.json when it changed (or while the run is
active, since staleness depends on the clock), events.jsonl only for active runs and the
runs on screen in Monitor, and only the bytes appended since the last poll (EventLog).
A runs directory with hundreds of finished runs therefore costs a few stat calls per poll.
SLURM runs add one `squeue` call for all of them, at most every 5 s (fa_tui/core/slurmq.py).

The poller never dies: every reader in fa_contract is total (a run that cannot be read is a
`corrupt` row with a one-line reason), and whatever else goes wrong with one run is caught
here and shown on that run's row, so one bad directory never hides the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection

from fa_contract.rundir import (CORRUPT, EVENTS, LOG, STATUS, EventLog, RunDir, Status,
                                list_runs, one_line)
from fa_contract.status import corrupt
from fa_tui.core.runtable import RunRow, best_val_acc, build_row, throughput
from fa_tui.core.slurmq import QueueCache, live, slurm_jobs


@dataclass
class _Entry:
    run: RunDir
    config: dict
    status: Status
    problem: str | None = None          # why config.toml cannot be read (re-read each poll)
    status_key: tuple[int, int] = (0, 0)
    summary: dict | None = None
    log: EventLog | None = None
    best_val: float | None = None
    speed: tuple[float | None, float | None] = (None, None)   # samples/s, GPU MiB
    version: int = 0
    copied: int = -1
    events: list[dict] = field(default_factory=list)
    log_key: tuple[int, int] = (0, 0)
    log_tail: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    """What the UI draws. `events`, `versions` and `logs` cover the watched runs only
    (`configs` every run);
    a version changes exactly when that run's event list did."""
    rows: tuple[RunRow, ...] = ()
    events: dict[str, list[dict]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def row(self, name: str) -> RunRow | None:
        return next((r for r in self.rows if r.name == name), None)


def _stat_key(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


class RunStore:
    """Owned by one poller thread; only `refresh` touches its state."""

    def __init__(self, runs_dir: Path, clock: Callable[[], float] = time.time,
                 log_lines: int = 200) -> None:
        self.runs_dir = runs_dir
        self.clock = clock
        self.log_lines = log_lines
        self._entries: dict[str, _Entry] = {}
        self.queue = QueueCache()

    def _entry(self, run: RunDir) -> _Entry:
        """The run's cached state; a config.toml that cannot be read (edited by hand, or a
        file system hiccup) is shown as `corrupt` with the reason and read again next poll."""
        entry = self._entries.get(run.name)
        if entry is None or entry.run.path != run.path or entry.problem:
            config, problem = run.config_or_problem()
            entry = self._entries[run.name] = _Entry(run, config, Status(), problem=problem)
        return entry

    def _update(self, entry: _Entry, watched: bool) -> None:
        key = _stat_key(entry.run.file(STATUS))
        changed = key != entry.status_key
        if changed or entry.status.active or entry.problem:
            entry.status_key = key
            entry.status = entry.run.read_status()
            if entry.status.active:
                entry.summary = None             # an earlier attempt's, after a resume
            elif changed or entry.summary is None:
                entry.summary = entry.run.read_summary()
            if entry.problem:
                entry.status.state, entry.status.reason = CORRUPT, entry.problem
        if entry.status.active or watched or changed:
            if entry.log is None:
                entry.log = EventLog(entry.run.file(EVENTS))
            before = entry.log.events
            new = entry.log.poll()
            if entry.log.events is not before:     # a resume dropped superseded events
                entry.best_val = best_val_acc(entry.log.events)
                entry.speed = throughput(entry.log.events)
                entry.version += 1
            elif new:
                entry.best_val = best_val_acc(new, entry.best_val)
                entry.speed = throughput(new, entry.speed)
                entry.version += 1

    def _watched(self, entry: _Entry) -> tuple[list[dict], list[str]]:
        """The event list (copied only when it changed, so the UI never sees it grow under
        its feet) and the worker.log tail (re-read only when the file changed)."""
        if entry.copied != entry.version and entry.log is not None:
            entry.events, entry.copied = list(entry.log.events), entry.version
        key = _stat_key(entry.run.file(LOG))
        if key != entry.log_key:
            entry.log_key, entry.log_tail = key, entry.run.log_tail(self.log_lines)
        return entry.events, entry.log_tail

    def refresh(self, watch: Collection[str] = ()) -> Snapshot:
        """Poll every run directory; full event lists and log tails for `watch` only."""
        now = self.clock()
        runs = list_runs(self.runs_dir)
        rows, events, versions, logs, configs, skipped = [], {}, {}, {}, {}, {}
        entries = []
        for run in runs:
            try:
                entry = self._entry(run)
                self._update(entry, run.name in watch)
            except Exception as e:  # noqa: BLE001 -- one run's surprise must not stop the poller
                self._entries.pop(run.name, None)
                entry = _Entry(run, {}, corrupt(one_line(f"{type(e).__name__}: {e}") or ""))
            entries.append(entry)
        # SLURM runs: one squeue call for all of them, at most every few seconds
        queue = self.queue.get(slurm_jobs([e.status for e in entries]))
        for run, entry in zip(runs, entries):
            watched = run.name in watch
            try:
                rows.append(build_row(run.name, live(entry.status, queue), entry.config,
                                      entry.summary, entry.best_val, now, *entry.speed))
            except Exception as e:  # noqa: BLE001 -- as above
                status = corrupt(one_line(f"{type(e).__name__}: {e}") or "")
                rows.append(build_row(run.name, status, {}, None, None, now))
                continue
            configs[run.name] = entry.config             # every run's: seed grouping needs it
            if watched and entry.log is not None:
                events[run.name], logs[run.name] = self._watched(entry)
                versions[run.name] = entry.version
                skipped[run.name] = entry.log.skipped
        for gone in self._entries.keys() - {r.name for r in runs}:
            del self._entries[gone]
        return Snapshot(tuple(rows), events, versions, logs, configs, skipped)
