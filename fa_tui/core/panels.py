"""What each Monitor panel shows, from the events of the runs on screen: chart series,
heatmap blocks and the config listing. Kept here, as plain functions, so the Monitor screen
only places results and tests can check them without a terminal."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich.text import Text

from fa_tui.core.bands import band, seed_groups
from fa_tui.core.chart import PALETTE, Series, layer_colour, lighten
from fa_tui.core.scale import unit_of
from fa_tui.core.series import curve, diag_grid, layer_names, layer_series
from fa_tui.core.xaxis import remap, x_axis

#: the curve splits cycled with `c`: both, then each alone.
SPLIT_MODES = (("train", "val"), ("train",), ("val",))


def run_colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


Entries = Sequence[tuple[str, Sequence[str]]]


def entries(names: Sequence[str], configs: Mapping[str, Mapping[str, Any]],
            bands: bool) -> list[tuple[str, list[str]]]:
    """What the curve charts draw: with `bands`, one entry per seed group (fa_tui.core.bands)
    of `names`; otherwise one per run. Runs without a config stay entries of their own."""
    if not bands:
        return [(n, [n]) for n in names]
    known = {n: configs[n] for n in names if configs.get(n)}
    groups = seed_groups(known)
    return groups + [(n, [n]) for n in names if n not in known]


def curve_series(events: Mapping[str, Sequence[dict]], key: str, splits: Sequence[str],
                 x: str = "step", groups: Entries | None = None) -> list[Series]:
    """One series per entry (a run, or a seed group drawn as mean ± std) and split, in the
    metric's unit (accuracy in percent) against the x axis `x`; a val curve is a lighter
    shade of its entry's colour."""
    groups = groups if groups is not None else [(n, [n]) for n in events]
    colours = run_colours([label for label, _ in groups])
    factor = unit_of(key).factor
    out = []
    for label, members in groups:
        for split in splits:
            curves = []
            for name in members:
                evs = events.get(name, [])
                steps, ys = curve(evs, split, key)
                curves.append(remap(steps, [None if y is None else y * factor for y in ys],
                                    x_axis(evs, x)))
            colour = colours[label] if split == splits[0] else lighten(colours[label])
            if len(members) > 1:
                b = band(curves)
                out.append(Series(f"{label} {split}", b.xs, b.mean, colour, b.lo, b.hi))
            else:
                out.append(Series(f"{label} {split}", *curves[0], colour))
    return out


def legend(groups: Entries, focus: str | None, states: Mapping[str, str]) -> Text:
    """`● run-a  ● sweep (3 seeds, mean ± std)  ● run-b (failed)`: the entry holding the
    focused run (heatmap, angles, log) underlined."""
    colours = run_colours([label for label, _ in groups])
    text = Text()
    for label, members in groups:
        text.append("● ", colours[label])
        text.append(label, "bold underline" if focus in members else "")
        if len(members) > 1:
            text.append(f" ({len(members)} seeds, mean ± std)", "dim")
        else:
            state = states.get(members[0])
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


def layer_lines(events: Sequence[dict], metric: str, x: str = "step") -> list[Series]:
    """One series per layer of a per-layer metric against the x axis `x`, in the layer
    palette (shallow to deep), skipping layers where the metric does not apply."""
    layers = layer_names(events)
    axis = x_axis(events, x)
    per_layer = layer_series(events, metric, layers)
    out = []
    for i, (name, (steps, ys)) in enumerate(per_layer.items()):
        xs, ys = remap(steps, ys, axis)
        if xs:
            out.append(Series(name, xs, ys, layer_colour(i, len(layers))))
    return out


def angle_series(events: Sequence[dict], metric: str, x: str = "step") -> list[Series]:
    """One series per layer (skipping layers where the angle does not apply)."""
    return layer_lines(events, metric, x)


def rank_lines(events: Sequence[dict], variant: tuple[str, str | None], x: str = "step"
               ) -> tuple[list[Series], list[Series]]:
    """Per-layer lines of a rank metric for the rule and for exact BP on the same batch,
    drawn side by side on one y range (the caller fits it over both)."""
    metric, bp = variant
    return layer_lines(events, metric, x), (layer_lines(events, bp, x) if bp else [])


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
