"""The run table's model: one `RunRow` per run directory, plus filtering, sorting and the
cell texts. Rows are computed from what the run directory says (status, config, summary,
events), never from what this process launched, so runs started elsewhere show up too."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rich.text import Text

from fa_contract.rundir import Status

#: (row attribute, header); `mark` is the multi-selection tick.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("mark", " "), ("name", "run"), ("state", "state"), ("progress", "progress"),
    ("best_val", "best val"), ("elapsed", "elapsed"), ("speed", "samples/s"),
    ("gpu_mem", "GPU MiB"), ("rule", "rule"), ("model", "model"), ("data", "data"),
    ("optim", "optim"), ("norm", "norm"), ("device", "device"), ("reason", "reason"))
#: leading columns that stay put when the table scrolls right (the mark and the run name)
FROZEN_COLUMNS = 2
SORT_KEYS = ("started", "name", "state", "rule", "model", "data", "optim", "norm", "progress",
             "best_val", "elapsed", "speed", "device")
STATE_STYLE = {"queued": "dim", "running": "bold green", "done": "cyan", "stopped": "yellow",
               "failed": "bold red", "diverged": "bold magenta", "corrupt": "red reverse"}


@dataclass(frozen=True)
class RunRow:
    name: str
    state: str
    rule: str
    model: str
    data: str
    optim: str
    norm: str
    step: int
    total: int | None
    best_val: float | None
    elapsed: float | None
    device: str
    reason: str | None
    started: float | None
    speed: float | None = None
    gpu_mem: float | None = None

    @property
    def progress(self) -> float:
        return self.step / self.total if self.total else 0.0

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


def _rule_label(rule: dict) -> str:
    name = rule.get("name", "?")
    return f"{name} r{rule.get('rank')} {rule.get('adapt')}" if name == "ldfa" else name


def _model_label(model: dict) -> str:
    name = model.get("name", "?")
    return f"{name} {model.get('width')}x{model.get('depth')}" if name == "mlp" else name


def best_val_acc(events: Sequence[dict], best: float | None = None) -> float | None:
    """The best validation accuracy in `events`, continuing from `best` (so a live run's
    figure is updated from new events only)."""
    for e in events:
        if (e.get("type") == "eval" and e.get("split", "val") == "val"
                and e.get("acc") is not None and (best is None or e["acc"] > best)):
            best = e["acc"]
    return best


def throughput(events: Sequence[dict], last: tuple[float | None, float | None] = (None, None)
               ) -> tuple[float | None, float | None]:
    """(samples/s, GPU MiB in use) of the latest train event that says, continuing from
    `last`; GPU memory is recorded on CUDA only."""
    speed, mem = last
    for e in events:
        if e.get("type") == "train":
            if isinstance(e.get("samples_per_s"), (int, float)):
                speed = float(e["samples_per_s"])
            if isinstance(e.get("gpu_mem_mib"), (int, float)):
                mem = float(e["gpu_mem_mib"])
    return speed, mem


def elapsed_s(status: Status, summary: dict | None, now: float) -> float | None:
    """Wall time since the worker was started: up to now for an active run, up to its final
    status (whose heartbeat is the moment it ended) once it has ended — one clock, so the
    figure never jumps backwards when a run stops. summary.json's `wall_s` (training time
    only) is the fallback for a run without a start time."""
    if status.started:
        end = now if status.active else status.heartbeat
        if isinstance(end, (int, float)) and end >= status.started:
            return end - status.started
    if status.active:
        return None
    wall = (summary or {}).get("wall_s")
    return wall if isinstance(wall, (int, float)) else None


_AT_STEP = re.compile(r"at step (\d+)")


def shown_step(status: Status) -> int:
    """The step to show as progress: for a diverged run the step its reason names (where the
    loss went bad; the steps after it trained on NaN and count for nothing)."""
    if status.state == "diverged" and status.reason:
        m = _AT_STEP.search(status.reason)
        if m and int(m.group(1)) <= status.step:
            return int(m.group(1))
    return status.step


def build_row(name: str, status: Status, config: dict, summary: dict | None,
              live_best: float | None, now: float, speed: float | None = None,
              gpu_mem: float | None = None) -> RunRow:
    """`live_best` is the best val acc seen in the events, used until summary.json says.
    The summary of an earlier attempt says nothing about an active (resumed) run: its best
    val and reason are ignored while the run is queued or running."""
    summary = {} if status.active else (summary or {})
    best = summary.get("best_val_acc")
    return RunRow(
        name=name, state=status.state, rule=_rule_label(config.get("rule", {})),
        model=_model_label(config.get("model", {})),
        data=config.get("data", {}).get("name", "?"),
        optim=config.get("optim", {}).get("name", "?"),
        norm=config.get("norm", {}).get("name", "?"),
        step=shown_step(status), total=status.total_steps or summary.get("steps"),
        best_val=live_best if best is None else best,
        elapsed=elapsed_s(status, summary, now),
        device=status.device or config.get("run", {}).get("device", "?"),
        reason=status.reason or summary.get("reason"), started=status.started,
        speed=speed, gpu_mem=gpu_mem)


TEXT_FIELDS = ("name", "state", "rule", "model", "data", "optim", "norm", "device", "reason")


def matches(row: RunRow, query: str) -> bool:
    """Every whitespace-separated term must match, case-insensitively: `key:value` a word
    of that column starting with value (`rule:fa` is fa, not dfa; `state:run`), a bare term
    any substring of any text column."""
    for term in query.lower().split():
        key, sep, value = term.partition(":")
        if sep and key in TEXT_FIELDS:
            words = str(getattr(row, key) or "").lower().split()
            if not any(w.startswith(value) for w in words):
                return False
        elif not any(term in str(getattr(row, f) or "").lower() for f in TEXT_FIELDS):
            return False
    return True


def sort_rows(rows: Sequence[RunRow], key: str, reverse: bool = False) -> list[RunRow]:
    """Sorted by `key`; missing values (no val acc yet, not started) always go last."""
    present = [r for r in rows if getattr(r, key) is not None]
    missing = [r for r in rows if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=reverse) + missing


def fmt_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_bar(fraction: float, width: int = 8) -> str:
    """`█████▌   62%`: eighth-block resolution so slow runs visibly move."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    bar = "█" * (eighths // 8) + " ▏▎▍▌▋▊▉"[eighths % 8].strip()
    return f"{bar.ljust(width)} {fraction:4.0%}"


def cells(row: RunRow, marked: bool) -> list[str | Text]:
    """The table cells of `row`, in COLUMNS order."""
    best = "–" if row.best_val is None else f"{row.best_val:.2%}"
    return ["●" if marked else " ", row.name, Text(row.state, STATE_STYLE.get(row.state, "")),
            progress_bar(row.progress) if row.total else f"{row.step}", best,
            fmt_elapsed(row.elapsed), "–" if row.speed is None else f"{row.speed:,.0f}",
            "–" if row.gpu_mem is None else f"{row.gpu_mem:,.0f}", row.rule, row.model,
            row.data, row.optim, row.norm, row.device,
            # one line (a traceback's first); the detail line and Monitor show it all
            Text((row.reason or "").split("\n", 1)[0], "dim")]
