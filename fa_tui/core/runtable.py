"""The run table's model: one `RunRow` per run directory, plus filtering, sorting and the
cell texts. Rows are computed from what the run directory says (status, config, summary,
events), never from what this process launched, so runs started elsewhere show up too."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.text import Text

from fa_contract.rundir import Status

#: (row attribute, header); `mark` is the multi-selection tick.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("mark", " "), ("name", "run"), ("state", "state"), ("progress", "progress"),
    ("best_val", "best val"), ("elapsed", "elapsed"), ("rule", "rule"), ("model", "model"),
    ("data", "data"), ("optim", "optim"), ("norm", "norm"), ("device", "device"),
    ("reason", "reason"))
SORT_KEYS = ("started", "name", "state", "rule", "model", "data", "optim", "norm", "progress",
             "best_val", "elapsed", "device")
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


def elapsed_s(status: Status, summary: dict | None, now: float) -> float | None:
    """Wall time: live for an active run, the recorded figure once it has ended."""
    if status.active:
        return now - status.started if status.started else None
    return (summary or {}).get("wall_s")


def build_row(name: str, status: Status, config: dict, summary: dict | None,
              live_best: float | None, now: float) -> RunRow:
    """`live_best` is the best val acc seen in the events, used until summary.json says."""
    summary = summary or {}
    best = summary.get("best_val_acc")
    return RunRow(
        name=name, state=status.state, rule=_rule_label(config.get("rule", {})),
        model=_model_label(config.get("model", {})),
        data=config.get("data", {}).get("name", "?"),
        optim=config.get("optim", {}).get("name", "?"),
        norm=config.get("norm", {}).get("name", "?"),
        step=status.step, total=status.total_steps or summary.get("steps"),
        best_val=live_best if best is None else best,
        elapsed=elapsed_s(status, summary, now),
        device=status.device or config.get("run", {}).get("device", "?"),
        reason=status.reason or summary.get("reason"), started=status.started)


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
            fmt_elapsed(row.elapsed), row.rule, row.model, row.data, row.optim, row.norm,
            row.device, Text(row.reason or "", "dim")]
