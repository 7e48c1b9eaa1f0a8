"""What each Monitor panel shows, from the events of the runs on screen: chart series,
heatmap blocks and the config listing. Kept here, as plain functions, so the Monitor screen
only places results and tests can check them without a terminal."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich.text import Text

from fa_tui.core.chart import PALETTE, Series, lighten
from fa_tui.core.series import curve, diag_grid, layer_names, layer_series

#: the curve splits cycled with `c`: both, then each alone.
SPLIT_MODES = (("train", "val"), ("train",), ("val",))


def run_colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def curve_series(events: Mapping[str, Sequence[dict]], key: str,
                 splits: Sequence[str]) -> list[Series]:
    """One series per run and split; a run's val curve is a lighter shade of its colour."""
    colours = run_colours(list(events))
    out = []
    for name, evs in events.items():
        for split in splits:
            xs, ys = curve(evs, split, key)
            colour = colours[name] if split == splits[0] else lighten(colours[name])
            out.append(Series(f"{name} {split}", xs, ys, colour))
    return out


def legend(names: Sequence[str], focus: str | None, states: Mapping[str, str]) -> Text:
    """`● run-a  ● run-b (failed)`: the focused run (heatmap, angles, log) underlined."""
    colours = run_colours(names)
    text = Text()
    for name in names:
        text.append("● ", colours[name])
        text.append(name, "bold underline" if name == focus else "")
        state = states.get(name)
        if state and state != "running":
            text.append(f" ({state})", "dim")
        text.append("  ")
    return text


def rank_blocks(events: Sequence[dict], variant: tuple[str, str | None]
                ) -> tuple[list[str], list[int], list[tuple[str, list[list[float | None]]]]]:
    """(layers, steps, [("rule", rows), ("BP", rows)]) for a rank metric and its BP twin."""
    layers = layer_names(events)
    metric, bp = variant
    steps, rows = diag_grid(events, metric, layers)
    blocks = [("rule", rows)]
    if bp is not None:
        blocks.append(("BP", diag_grid(events, bp, layers)[1]))
    return layers, steps, blocks


def angle_series(events: Sequence[dict], metric: str) -> list[Series]:
    """One series per layer (skipping layers where the angle does not apply)."""
    per_layer = layer_series(events, metric, layer_names(events))
    return [Series(name, xs, ys, PALETTE[i % len(PALETTE)])
            for i, (name, (xs, ys)) in enumerate(per_layer.items()) if xs]


def series_legend(series: Sequence[Series]) -> Text:
    text = Text()
    for s in series:
        text.append("─ ", s.colour)
        text.append(s.label + "  ")
    return text


def config_text(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> Text:
    """`section.key = value` lines, values that differ from the schema's defaults in bold:
    what makes this run different is what one wants to see."""
    text = Text()
    for section, values in config.items():
        for key, value in values.items():
            changed = defaults.get(section, {}).get(key) != value
            text.append(f"{section}.{key} = ", "dim")
            text.append(f"{value!r}\n" if isinstance(value, str) else f"{value}\n",
                        "bold" if changed else "")
    return text
