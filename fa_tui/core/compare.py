"""The comparison view's content: 2–6 runs or seed groups side by side — their best
validation accuracy and their final per-layer diagnostics (mean ± std over a group's seeds).

One table serves the screen and the paper: `compare_table` returns an fa_tui.export.Table, so
the one-key export writes exactly what is on screen with the exporter's own md/tex/csv/json
renderers (accuracies in percent, angles in degrees).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from fa_tui.core.series import last, layer_names
from fa_tui.core.grouping import Stat, Table

#: per-layer diagnostics compared: the rule's error rank, BP's on the same batch, the angle
COMPARE_METRICS = ("erank_err", "erank_err_bp", "angle_delta")
MIN_ENTRIES, MAX_ENTRIES = 2, 6


def best_val(events: Sequence[dict]) -> float | None:
    accs = [e["acc"] for e in events if e.get("type") == "eval" and e.get("split", "val") == "val"
            and isinstance(e.get("acc"), (int, float))]
    return max(accs, default=None)


def final_layers(events: Sequence[dict]) -> dict[str, dict[str, float]]:
    """The last diag event's per-layer metrics (what summary.json records at the end, and
    the latest figures of a live run)."""
    diag = last(events, "diag") or {}
    layers = diag.get("layers")
    return layers if isinstance(layers, dict) else {}


def compare_table(groups: Sequence[tuple[str, Sequence[str]]],
                  events: Mapping[str, Sequence[dict]],
                  metrics: Sequence[str] = COMPARE_METRICS) -> Table:
    """One row per entry (`run` = its label, `n` runs, `best_val_acc`, then `layer.metric`
    for every weight layer in forward order and every metric), in the exporter's column
    naming, so md/tex show accuracies in percent and angles in degrees. Values are Stats
    over the entry's runs (n = 1 for a single run)."""
    layers: list[str] = []
    for _, members in groups:
        for name in members:
            for layer in layer_names(events.get(name, [])):
                if layer not in layers:
                    layers.append(layer)
    table = Table(["run", "n", "best_val_acc"] + [f"{layer}.{m}" for layer in layers
                                                  for m in metrics])
    for label, members in groups:
        row: dict = {"run": label, "n": len(members),
                     "best_val_acc": Stat.of(best_val(events.get(n, [])) for n in members)}
        finals = [final_layers(events.get(n, [])) for n in members]
        for layer in layers:
            for m in metrics:
                vals = [(f.get(layer) or {}).get(m) for f in finals]
                row[f"{layer}.{m}"] = Stat.of(v if isinstance(v, (int, float)) else None
                                              for v in vals)
        table.rows.append(row)
    return table


def transposed(table: Table, metrics: Sequence[str] = COMPARE_METRICS
               ) -> tuple[list[str], list[tuple[str, list[list[Stat]]]]]:
    """The table as the screen shows it: (entry labels, [(row label, per entry the Stats of
    `metrics`)]), best val accuracy first, then one row per layer."""
    labels = [r["run"] for r in table.rows]
    out = [("best val acc", [[r["best_val_acc"]] for r in table.rows])]
    layers = list(dict.fromkeys(c.rsplit(".", 1)[0] for c in table.columns[3:]))
    for layer in layers:
        out.append((layer, [[r.get(f"{layer}.{m}", Stat(None, None, 0)) for m in metrics]
                            for r in table.rows]))
    return labels, out


def check_count(n: int) -> str | None:
    """Why `n` entries cannot be compared, or None."""
    if n < MIN_ENTRIES:
        return (f"Compare needs {MIN_ENTRIES}–{MAX_ENTRIES} runs or seed groups: mark at least "
                f"two (space), or a sweep over seeds and another run.")
    if n > MAX_ENTRIES:
        return f"Compare shows at most {MAX_ENTRIES} runs or seed groups; {n} are marked."
    return None
