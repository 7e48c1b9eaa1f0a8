"""The Compose screen's model: which Config fields the form shows (and when), how the text in
a field becomes values, sweeps, and validation by the very pydantic schema the worker uses.

A numeric field may hold several comma-separated values (`lr = 0.1, 0.01`) and the seeds field
a list or a range (`0-4`): the form then becomes a preset layer (values and sweep axes) that
the one sweep expander (fa_tui/sweep.py, also behind `fa-tui run`) turns into runs, so the
order and the names match the CLI's. Seeds (and the values of any axis) must be unique.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from fa_contract.config import Config
from fa_contract.data_files import find_files, missing_files, reachable
from fa_contract.dotted import flatten as _flatten_any
from fa_contract.dotted import nest as _nest_any
# the form's fields live in fa_tui.core.fields; re-exported here for the screen and the tests
from fa_tui.core.fields import (ADVANCED_TITLE, DEVICE, FIELDS, FORM, HELP, JOBS, MAIN,  # noqa: F401
                                SEEDS, FieldSpec, Values)
from fa_tui.sweep import SEEDS_AXIS, duplicate, expand

MAX_RUNS = 64           # a sweep larger than this is almost surely a typo; the CLI has no cap


# --- the schema, introspected ----------------------------------------------------------------
def field_info(path: str) -> FieldInfo:
    """pydantic's FieldInfo of a dotted Config path."""
    section, key = path.split(".")
    model: type[BaseModel] = Config.model_fields[section].annotation  # type: ignore[assignment]
    return model.model_fields[key]


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def choices(path: str) -> tuple | None:
    """The allowed values of a choice field (a Literal or a bool), else None."""
    if path == DEVICE:
        return device_choices()
    if path in (SEEDS, JOBS):
        return None
    ann = _strip_optional(field_info(path).annotation)
    if get_origin(ann) is Literal:
        return get_args(ann)
    return (True, False) if ann is bool else None


def optional(path: str) -> bool:
    """Whether the schema allows leaving the field unset (None)."""
    return path not in (SEEDS, JOBS, DEVICE) and field_info(path).annotation != _strip_optional(
        field_info(path).annotation)


def kind(path: str) -> str:
    """choice | list | number | text: decides the widget and how its text is parsed."""
    if path in (SEEDS, JOBS):
        return "text"
    if choices(path) is not None:
        return "choice"
    ann = _strip_optional(field_info(path).annotation)
    if get_origin(ann) in (list, tuple):
        return "list"
    return "number" if ann in (int, float) else "text"


def description(path: str) -> str | None:
    if path == SEEDS:
        return "one seed, a list (0, 1, 2) or a range (0-4): one run per seed"
    if path == JOBS:
        return "runs of the sweep that train at the same time; the others wait, queued"
    return field_info(path).description or HELP.get(path)


def applies(path: str, values: Values) -> bool:
    """Whether a key means anything under the current choices (its field would be shown)."""
    spec = FIELDS.get(path)
    return spec is None or spec.visible(values)


def device_choices() -> tuple[str, ...]:
    """auto, cpu and one entry per NVIDIA GPU the driver lists (found without torch)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    n = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    return ("auto", "cpu", *(f"cuda:{i}" for i in range(n)))


# --- values <-> text ---------------------------------------------------------------------------
flatten, nest = _flatten_any, _nest_any      # the one pair (fa_contract/dotted.py)


def to_text(value: Any) -> str:
    """How a value is written in an Input: lists comma-separated, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def parse_seeds(text: str) -> list[int]:
    """`3`, `0, 1, 2` or `0-4` (inclusive); raises ValueError with a readable message."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(part)]
        except ValueError:
            raise ValueError(f"not a seed or a range: {part!r}") from None
    if not seeds:
        raise ValueError("give at least one seed")
    twice = duplicate(seeds)
    if twice is not None:
        raise ValueError(f"seed {twice} is listed twice; each seed once")
    return seeds


def axis(path: str, value: Any) -> list[Any]:
    """The values one field contributes to the grid. Text is left for pydantic to convert
    (so its messages are the schema's own); a number field splits on commas."""
    if path == SEEDS:
        return parse_seeds(str(value))
    if not isinstance(value, str):
        return [value]
    text = value.strip()
    empty = None if optional(path) else ""     # a cleared required field is an error, not a default
    k = kind(path)
    if k == "list":
        items = [p.strip() for p in text.strip("[]()").split(",") if p.strip()]
        return [items if items else (None if optional(path) else [])]
    if k == "number":
        return [p.strip() or empty for p in text.split(",")]
    return [text or empty]


# --- the grid and its validation --------------------------------------------------------------
@dataclass
class Composition:
    configs: list[Config]
    names: list[str]
    errors: dict[str, str]        # field path -> message, shown next to the field
    general: list[str]            # errors that belong to no single field
    axes: dict[str, list[Any]] = field(default_factory=dict)  # swept dotted keys -> values
    jobs: int = 1
    base_name: str = "run"        # run.name before the sweep labels

    def preset(self, values: Values | None = None) -> dict[str, Any]:
        """The composition as a preset document: the first config's (typed) values with the
        base name, the swept keys in a [sweep] table (run.seed as `seeds`), which load_preset
        expands back into the same runs with the same names. With the form's `values`, only
        keys that apply to its choices are written (no `rank` for fa, no `widths` for an mlp),
        and advanced keys only where they differ from the default: a preset that says what
        the experiment is."""
        flat = flatten(self.configs[0].model_dump(mode="json", exclude_none=True))
        flat["run.name"] = self.base_name
        if values is not None:
            defaults = flatten(Config().model_dump(mode="json"))
            for path in list(flat):
                if path != "run.name" and (not applies(path, values) or (
                        path not in MAIN and flat[path] == defaults.get(path))):
                    del flat[path]
        for k in self.axes:
            flat.pop(k, None)
        sweep = {"seeds" if k == SEEDS_AXIS else k: v for k, v in self.axes.items()}
        doc = nest(flat)
        return {**doc, "sweep": sweep} if sweep else doc


def _message(err: Mapping[str, Any]) -> str:
    return err["msg"].removeprefix("Value error, ")


def compose(base: Mapping[str, Any], values: Mapping[str, Any]) -> Composition:
    """The form as a preset layer over `base` (flattened config): fields with one value set
    it, fields with several (and several seeds) become sweep axes; then the one expander
    validates and names every run. Errors are mapped back to the fields."""
    errors: dict[str, str] = {}
    axes: dict[str, list[Any]] = {}
    jobs = str(values.get(JOBS, "1")).strip()
    if not jobs.isdigit() or int(jobs) < 1:
        errors[JOBS] = "a whole number of runs, at least 1"
    for path, value in values.items():
        if path == JOBS:
            continue
        try:
            axes[path] = axis(path, value)
        except ValueError as e:
            errors[path] = str(e)
            continue
        twice = duplicate(axes[path])
        if twice is not None and len(axes[path]) > 1:
            errors[path] = f"{twice} is listed twice; each value once"
    if errors:
        return Composition([], [], errors, [])
    total = 1
    for vals in axes.values():
        total *= len(vals)
    if total > MAX_RUNS:
        return Composition([], [], {}, [f"{total} runs in this sweep; at most {MAX_RUNS}"])

    key = {SEEDS: SEEDS_AXIS}
    layer = dict(base)
    layer.update({key.get(p, p): vals[0] for p, vals in axes.items() if len(vals) == 1})
    sweep = {key.get(p, p): vals for p, vals in axes.items() if len(vals) > 1}
    for k in sweep:
        layer.pop(k, None)
    general: list[str] = []

    def validate(flat: dict[str, Any], point: dict[str, Any]) -> Config | None:
        try:
            return Config.model_validate(nest({p: v for p, v in flat.items() if v is not None}))
        except ValidationError as e:
            for err in e.errors():
                path = ".".join(str(p) for p in err["loc"][:2])
                # a check across sections (a cnn needs image input) starts with its key
                named = _message(err).split(" ", 1)[0]
                target = (path if path in FIELDS else SEEDS if path == SEEDS_AXIS
                          else named if named in FIELDS else None)
                if target:
                    errors.setdefault(target, _message(err))
                elif _message(err) not in general and f"{path}: {_message(err)}" not in general:
                    general.append(f"{path}: {_message(err)}" if path else _message(err))
            return None

    base_name = str(layer.get("run.name") or "run")
    runs = expand(layer, sweep, base_name, validate)
    configs = [r.config for r in runs]
    for cfg in {c.data.model_dump_json(): c for c in configs}.values():
        # missing files are fine when the launch can fetch them (needs the network)
        missing = (None if find_files(cfg.data) is not None else
                   missing_files(cfg.data, allow_download=cfg.data.download
                                 and reachable(cfg.data.name)))
        if missing:
            errors["data.name"] = missing
    if errors or general:
        return Composition([], [], errors, general)
    typed_axes = {k: list(dict.fromkeys(r.point[k] for r in runs)) for k in sweep}
    return Composition(configs, [r.name for r in runs], {}, [], typed_axes, int(jobs), base_name)


def default_values() -> dict[str, Any]:
    return flatten(Config().model_dump(mode="json"))

