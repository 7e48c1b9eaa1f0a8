"""The run directory: the public, versioned contract between a worker and everything that
reads it (CLI, TUI, export). Torch-free, so the TUI can import it.

A run directory is written only by its worker process (and, before the worker starts, by
the launcher, which creates it with config.toml and a `queued` status). Layout (docs/run-directory.md):

    config.toml     the resolved Config (never changes after launch)
    status.json     state, pid, host, heartbeat, reason, step, total_steps (atomic rewrite)
    events.jsonl    one JSON object per line, appended and flushed per line
    summary.json    final figures (atomic), written when the run ends in any state
    checkpoint.pt   latest checkpoint (atomic), every epoch and on stop
    worker.log      the worker's stdout/stderr
"""
from __future__ import annotations

import json
import os
import socket
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
STATES = ("queued", "running", "done", "failed", "stopped", "diverged")
ACTIVE_STATES = ("queued", "running")
HEARTBEAT_S = 5.0
#: a running worker whose heartbeat is older than this (and whose pid is gone) has died.
STALE_AFTER_S = 30.0

CONFIG, STATUS, EVENTS, SUMMARY, CHECKPOINT, LOG = (
    "config.toml", "status.json", "events.jsonl", "summary.json", "checkpoint.pt", "worker.log")


def resolve_runs_dir(option: str | os.PathLike | None = None) -> Path:
    """`--runs-dir`, else $FA_TUI_RUNS, else ./runs — the same rule for CLI and TUI."""
    return Path(option or os.environ.get("FA_TUI_RUNS") or "runs")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`, so a
    reader never sees a half-written file, whatever happens to the writer."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, allow_nan=False, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def clean_json(obj: Any) -> Any:
    """Replace NaN/inf floats by None: events stay strict JSON (a diverged loss is recorded
    as null plus the `diverged` event saying why)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Status:
    state: str = "queued"
    pid: int | None = None
    host: str = field(default_factory=socket.gethostname)
    heartbeat: float = field(default_factory=time.time)
    started: float | None = None
    reason: str | None = None
    step: int = 0
    total_steps: int | None = None
    device: str | None = None
    v: int = SCHEMA_VERSION

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def is_stale(self, now: float | None = None) -> bool:
        """A running worker that stopped beating and whose pid is gone (same host), or whose
        heartbeat is very old (other host, where the pid cannot be checked)."""
        if self.state != "running":
            return False
        age = (now or time.time()) - self.heartbeat
        if self.host == socket.gethostname():
            return not pid_alive(self.pid) and age > HEARTBEAT_S * 2 or age > STALE_AFTER_S * 10
        return age > STALE_AFTER_S


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

    # --- readers -----------------------------------------------------------------------------
    def read_config(self) -> dict:
        with open(self.file(CONFIG), "rb") as f:
            return tomllib.load(f)

    def read_status(self) -> Status:
        """The status as the worker last wrote it, with a dead worker shown as `failed`."""
        try:
            raw = json.loads(self.file(STATUS).read_text(encoding="utf-8"))
            st = Status(**{k: raw[k] for k in Status.__dataclass_fields__ if k in raw})
        except (OSError, ValueError, TypeError):
            return Status(state="failed", reason="status.json missing or unreadable")
        if st.is_stale():
            st.state = "failed"
            st.reason = (f"worker vanished: pid {st.pid} on {st.host} is gone and its heartbeat "
                         f"is {time.time() - st.heartbeat:.0f}s old (killed or out of memory?)")
        return st

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.file(SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def read_events(self) -> list[dict]:
        log = EventLog(self.file(EVENTS))
        log.poll()
        return log.events

    def has_checkpoint(self) -> bool:
        return self.file(CHECKPOINT).exists()

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
    def write_status(self, status: Status) -> None:
        status.heartbeat = time.time()
        write_json_atomic(self.file(STATUS), status.__dict__)

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.file(SUMMARY), clean_json(summary))


class EventLog:
    """Incremental, tolerant reader of events.jsonl.

    `poll()` reads only what was appended since the last call; a trailing line without a
    newline is left for the next poll (it may be half-written); a corrupt line is counted in
    `skipped` and ignored. A `resume` event at step k means the worker restarted from a
    checkpoint taken at step k: events after step k from the earlier attempt are superseded
    and dropped, so the history always reads as one uninterrupted run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict] = []
        self.skipped = 0
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict]:
        """Read newly appended events; returns them (after resume handling)."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size < self._offset:          # truncated or replaced: start again
                    self.__init__(self.path)
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                self.skipped += 1
                continue
            if not isinstance(ev, dict) or "type" not in ev:
                self.skipped += 1
                continue
            if ev["type"] == "resume":
                k = ev.get("step", 0)
                self.events = [e for e in self.events if e.get("step", 0) <= k or e["type"] == "start"]
                new = [e for e in new if e.get("step", 0) <= k or e["type"] == "start"]
            self.events.append(ev)
            new.append(ev)
        return new


def append_event(f, event: dict) -> None:
    """Append one event as a single line and flush it, so a reader sees whole lines only."""
    event = {"v": SCHEMA_VERSION, "t": round(time.time(), 3), **clean_json(event)}
    f.write(json.dumps(event, allow_nan=False, separators=(",", ":")) + "\n")
    f.flush()


def list_runs(runs_dir: Path) -> list[RunDir]:
    """Every run directory (a folder holding config.toml) under `runs_dir`, newest first.
    Hidden folders are skipped: the launcher builds a run in `.new-*` and renames it into
    place, so a run appears complete or not at all."""
    if not runs_dir.is_dir():
        return []
    runs = [RunDir(p) for p in runs_dir.iterdir()
            if not p.name.startswith(".") and (p / CONFIG).is_file()]
    return sorted(runs, key=lambda r: r.file(CONFIG).stat().st_mtime, reverse=True)


def iter_metric(events: Iterable[dict], etype: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar field of one event type, skipping nulls."""
    xs, ys = [], []
    for e in events:
        if e.get("type") == etype and e.get(key) is not None:
            xs.append(e.get("step", 0))
            ys.append(e[key])
    return xs, ys
