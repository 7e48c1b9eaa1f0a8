"""The run directory: the public, versioned contract between a worker and everything that
reads it (CLI, TUI, export). Torch-free and pydantic-free, so the TUI can import it.

A run directory is written only by its worker process (and, before the worker starts, by
the launcher, which creates it with config.toml and a `queued` status). Layout
(docs/run-directory.md, generated from the records in fa_contract):

    config.toml     the resolved Config (never changes after launch)
    status.json     fa_contract.status.Status (atomic rewrite)
    events.jsonl    fa_contract.events, one JSON object per line, appended and flushed per line
    summary.json    fa_contract.summary.Summary (atomic), written when the run ends in any state
    checkpoint.pt   latest checkpoint (atomic), every epoch and on stop
    worker.log      the worker's stdout/stderr

Every reader here is total: any bytes in any file give a value (a `corrupt` status with a
one-line reason, no summary, skipped events), never an exception.
"""
from __future__ import annotations

import os
import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fa_contract.atomic import write_atomic
from fa_contract.events import ContractError, EventLog, append_event, clean_json, iter_metric
from fa_contract.status import (ACTIVE_STATES, CORRUPT, HEARTBEAT_S, STALE_AFTER_S, STATES,
                                Status, corrupt, parse_status)
from fa_contract.summary import Summary, parse_summary
from fa_contract.typed import problem
from fa_contract.version import FORMAT_VERSION

__all__ = ["ACTIVE_STATES", "CORRUPT", "HEARTBEAT_S", "STALE_AFTER_S", "STATES", "Status",
           "EventLog", "append_event", "clean_json", "iter_metric", "RunDir", "RunView",
           "list_runs", "resolve_runs_dir", "safe_name", "SCHEMA_VERSION"]

SCHEMA_VERSION = FORMAT_VERSION
CONFIG, STATUS, EVENTS, SUMMARY, CHECKPOINT, LOG = (
    "config.toml", "status.json", "events.jsonl", "summary.json", "checkpoint.pt", "worker.log")
#: the sections of config.toml (fa_contract.config.Config's fields; a test keeps them equal)
SECTIONS = ("run", "data", "model", "rule", "norm", "optim", "train", "metrics", "slurm")
#: config keys that run tables show as text (checked by config_or_problem)
LABELS = ("run.name", "run.device", "rule.name", "model.name", "data.name", "optim.name",
          "norm.name")
_MAX_READ = 16 << 20           # a status or summary larger than this is not one


def resolve_runs_dir(option: str | os.PathLike | None = None) -> Path:
    """`--runs-dir`, else $FA_TUI_RUNS, else ./runs — the same rule for CLI and TUI."""
    return Path(option or os.environ.get("FA_TUI_RUNS") or "runs")


def safe_name(name: str) -> str:
    """A run name as a directory name: a portable character set, never hidden or empty."""
    return re.sub(r"[^A-Za-z0-9._,=+-]", "_", name).lstrip(".") or "run"


def one_line(text: str | None, width: int = 200) -> str | None:
    """The first line of a (multi-line) reason, marked when something was cut."""
    if text is None:
        return None
    lines = text.strip().splitlines() or [""]
    first = lines[0]
    cut = len(lines) > 1 or len(first) > width
    return first[:width] + (" …" if cut else "")


@dataclass
class RunView:
    """Everything a table row or an export record needs, read totally: `problem` says in one
    line which file of the run could not be read and why (then `status.state` is `corrupt` when nothing better is known)."""
    run: RunDir
    config: dict
    status: Status
    summary: dict | None
    problem: str | None


class RunDir:
    """One run's directory. Readers use the read_* methods; only the worker writes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def _read(self, name: str) -> bytes:
        with open(self.file(name), "rb") as f:
            return f.read(_MAX_READ)

    # --- readers -----------------------------------------------------------------------------
    def read_config(self) -> dict:
        """config.toml as a dict; raises ValueError with a one-line message naming the file
        when it cannot be read (`config_or_problem` never raises)."""
        config, bad = self.config_or_problem()
        if bad:
            raise ValueError(bad)
        return config

    def config_or_problem(self) -> tuple[dict, str | None]:
        """(config, None), or (the sections that could be read, why not all)."""
        where = CONFIG         # the run is named where the reason is shown
        try:
            doc = tomllib.loads(self._read(CONFIG).decode("utf-8"))
        except OSError as e:
            return {}, f"{where}: cannot read: {e.strerror or e}"
        except UnicodeDecodeError:
            return {}, f"{where}: not UTF-8 text"
        except (tomllib.TOMLDecodeError, RecursionError) as e:
            return {}, f"{where}: invalid TOML: {one_line(str(e))}"
        bad = [k for k in SECTIONS if k in doc and not isinstance(doc[k], dict)]
        if bad:
            good = {k: v for k, v in doc.items() if k not in bad}
            return good, f"{where}: {bad[0]} is {type(doc[bad[0]]).__name__}, expected a table"
        problem = None
        for key in LABELS:          # what tables show and sort by must be text
            section, field = key.split(".")
            value = doc.get(section, {}).get(field)
            if value is not None and not isinstance(value, str):
                doc[section] = {k: v for k, v in doc[section].items() if k != field}
                problem = problem or f"{where}: {key} is {type(value).__name__}, expected a string"
        return doc, problem

    def read_status(self) -> Status:
        """The status as last written, with a dead worker shown as `failed` and an unreadable
        file as `corrupt` (reason says why)."""
        try:
            st = parse_status(self._read(STATUS), STATUS)
        except OSError as e:
            return corrupt(f"{STATUS}: cannot read: {e.strerror or e}")
        if st.is_stale():
            st.state = "failed"
            st.reason = (f"worker vanished: pid {st.pid} on {st.host} is gone and its heartbeat "
                         f"is {time.time() - st.heartbeat:.0f}s old (killed or out of memory?)")
        return st

    def read_summary(self) -> dict | None:
        return self.summary_or_problem()[0]

    def summary_or_problem(self) -> tuple[dict | None, str | None]:
        try:
            data = self._read(SUMMARY)
        except FileNotFoundError:
            return None, None
        except OSError as e:
            return None, f"{SUMMARY}: cannot read: {e.strerror or e}"
        return parse_summary(data, SUMMARY)

    def read_events(self) -> list[dict]:
        log = EventLog(self.file(EVENTS))
        log.poll()
        return log.events

    def view(self) -> RunView:
        """Config, status and summary, with the first problem found. A run whose config or
        status cannot be read is `corrupt`; a bad summary is a problem but not a state."""
        config, bad_config = self.config_or_problem()
        status = self.read_status()
        summary, bad_summary = self.summary_or_problem()
        bad_status = status.reason if status.state == CORRUPT else None
        problem = bad_config or bad_status or bad_summary
        if bad_config and status.state != CORRUPT:
            status.state, status.reason = CORRUPT, bad_config
        return RunView(self, config, status, summary, problem)

    def has_checkpoint(self) -> bool:
        return self.file(CHECKPOINT).is_file()

    def log_tail(self, lines: int = 50) -> list[str]:
        try:
            with open(self.file(LOG), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    # --- writer helpers (worker and launcher only) --------------------------------------------
    def write_config(self, config: dict) -> None:
        """config.toml (the launcher, once, before the worker starts)."""
        import tomli_w
        write_atomic(self.file(CONFIG), tomli_w.dumps(config))

    def write_status(self, status: Status, beat: bool = True) -> None:
        """status.json, atomically; `beat` stamps the heartbeat with the time now (fixtures
        with a frozen clock pass False)."""
        if beat:
            status.heartbeat = time.time()
        write_atomic(self.file(STATUS), status.to_json())

    def write_summary(self, summary: dict) -> None:
        """summary.json, atomically, checked against fa_contract.summary.Summary."""
        import json
        summary = clean_json(summary)
        bad = problem(Summary, summary, "summary")
        if bad:
            raise ContractError(bad)
        write_atomic(self.file(SUMMARY), json.dumps(summary, indent=1, allow_nan=False))


def list_runs(runs_dir: Path) -> list[RunDir]:
    """Every run directory (a folder holding config.toml) under `runs_dir`, newest first.
    Hidden folders are skipped: the launcher builds a run in `.new-*` and renames it into
    place, so a run appears complete or not at all."""
    try:
        entries = list(Path(runs_dir).iterdir())
    except OSError:
        return []
    stamped = []
    for p in entries:
        if p.name.startswith("."):
            continue
        try:
            stamped.append((p.joinpath(CONFIG).stat().st_mtime, RunDir(p)))
        except OSError:             # not a run, or removed meanwhile
            continue
    return [r for _, r in sorted(stamped, key=lambda s: s[0], reverse=True)]


def resolve_run(arg: str | os.PathLike, runs_dir: Path) -> RunDir | None:
    """A run named on a command line: a run under `runs_dir` of that name first (what `ls`
    shows), else a path to a run directory. None when neither exists."""
    text = str(arg)
    if "/" not in text and text not in (".", ".."):
        under = Path(runs_dir) / text
        if under.joinpath(CONFIG).is_file():
            return RunDir(under)
    path = Path(arg)
    return RunDir(path) if path.joinpath(CONFIG).is_file() else None
