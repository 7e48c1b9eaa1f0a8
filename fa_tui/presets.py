"""TOML presets: a file (plus `extends` parents and `--set` overrides) becomes a validated,
expanded list of Configs — one per point of its `[sweep]` grid. Torch-free.

A preset holds the Config sections ([run] [data] [model] [rule] [norm] [optim] [train]
[metrics]), an optional top-level `extends = "other.toml"` and an optional `[sweep]` table
(docs/presets.md). Internally every layer is flattened to dotted keys ("optim.lr"), which makes
the deep merge a dict update and lets every value remember the file that set it, so an error
names the file where the fix belongs, not the file that was launched.

Every mistake — bad TOML, unknown key, wrong type, out-of-range value, unknown choice, missing
extends file, bad --set, bad sweep, missing dataset files — raises PresetError with one message
naming the file, the dotted key, what was expected and how to fix it: the CLI prints it and
exits 2 before creating anything.

Length: reading, merging, --set and the friendly error messages stay together because every
message names the key and the file that the merge tracked; expansion and naming live in
fa_tui/sweep.py.
"""
from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import tomli_w
from pydantic import BaseModel, ValidationError

from fa_contract.atomic import write_atomic
from fa_contract.config import Config
from fa_contract.data_files import missing_files
from fa_contract.dotted import nest
from fa_tui.sweep import SEEDS_AXIS, PlannedRun, duplicate, expand, name_order

#: the repository's presets/ (a clone, an editable install), else the copy a wheel carries
PRESETS_DIR = next((d for d in (Path(__file__).resolve().parent.parent / "presets",
                                Path(__file__).resolve().parent / "shipped_presets")
                    if d.is_dir()), Path(__file__).resolve().parent.parent / "presets")
SECTIONS: dict[str, type[BaseModel]] = {
    name: f.annotation for name, f in Config.model_fields.items()}  # type: ignore[misc]
KEYS = [f"{s}.{k}" for s, m in SECTIONS.items() for k in m.model_fields]
#: bounds on what a preset may ask for, so that a runaway file is a message, not a
#: RecursionError or minutes of expansion: `extends` chain length, nesting depth of values,
#: and runs in one sweep (a launch of more is better split into several presets)
MAX_EXTENDS = 32
MAX_NESTING = 16
MAX_SWEEP = 10_000


class PresetError(Exception):
    """One friendly message: file, dotted key, what was expected, how to fix it."""


@dataclass(frozen=True)
class Plan:
    name: str                 # the preset's name (file stem)
    path: Path
    base: str                 # run.name before the sweep labels (run.name, else the stem)
    axes: dict[str, list[Any]]  # swept dotted keys (after --set pinning), in name order
    runs: list[PlannedRun]

    @property
    def configs(self) -> list[Config]:
        return [r.config for r in self.runs]


# --- public API -------------------------------------------------------------------------------
def shipped_presets() -> dict[str, Path]:
    """Name -> path of every shipped preset (the repository's top-level presets/ folder)."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.toml"))}


def resolve_preset(preset: str | os.PathLike) -> Path:
    """An existing file path, else a shipped preset name ("quickstart" or "quickstart.toml")."""
    path = Path(preset)
    if path.is_file():
        return path
    shipped = shipped_presets()
    stem = path.name.removesuffix(".toml")
    if path.parent == Path(".") and stem in shipped:
        return shipped[stem]
    raise PresetError(f"{preset}: no such preset file. Give a path to a .toml file or one of "
                      f"the shipped presets: {', '.join(shipped) or '(none)'}")


def describe(path: str | os.PathLike) -> str:
    """The preset's first comment line (its one-line description), or ''."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            return line.lstrip().lstrip("#").strip()
    return ""


def load_preset(preset: str | os.PathLike, sets: Iterable[str] = (),
                check_data: bool = True) -> list[Config]:
    """Every run's Config, in plan order (see load_plan)."""
    return load_plan(preset, sets, check_data).configs


def load_plan(preset: str | os.PathLike, sets: Iterable[str] = (),
              check_data: bool = True) -> Plan:
    """Read a preset (a path or a shipped name), apply `extends`, then the `--set` overrides
    ("key=value", typed from the schema; a set of a swept key pins it), and expand the sweep.

    Order: seeds outermost, then the other axes in the order they were first declared with the
    last one varying fastest — every condition of seed 0 comes before any of seed 1, so the
    first runs of a queue already compare all conditions. With `check_data`, a dataset whose
    files are missing (and may not be downloaded) is an error too."""
    path = resolve_preset(preset)
    layer = _merge(_read_chain(path, []))
    for raw in sets:
        _apply_set(layer, path, raw)
    return _expand(layer, path, check_data)


def save_preset(obj: Config | dict, path: str | os.PathLike,
                description: str | None = None) -> None:
    """Write a Config (all values, unset ones omitted) or a preset dict as TOML, atomically;
    `description` becomes the first comment line that `describe` shows."""
    data = (obj.model_dump(mode="json", exclude_none=True) if isinstance(obj, Config)
            else _drop_none(obj))
    header = f"# {' '.join(description.split())}\n" if description else ""
    write_atomic(path, header + tomli_w.dumps(data))


# --- reading and merging ----------------------------------------------------------------------
@dataclass
class _Layer:
    """One file's content, flattened; after _merge, the whole chain's."""
    values: dict[str, Any]          # dotted key -> value
    axes: dict[str, list[Any]]      # dotted key -> sweep values
    source: dict[str, str]          # dotted key -> file that set it (values and axes)


def _read_chain(path: Path, chain: list[Path]) -> list[_Layer]:
    """This file's layer preceded by its ancestors' (root first)."""
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(p.name for p in [*chain, real])
        raise PresetError(f"{path}: extends: cycle {cycle}. Remove one of these `extends` lines.")
    if len(chain) >= MAX_EXTENDS:
        raise PresetError(f"{chain[0]}: extends: a chain of more than {MAX_EXTENDS} files "
                          f"(... -> {chain[-1].name} -> {path.name}); a preset may extend at most "
                          f"{MAX_EXTENDS} files in a row. Shorten the chain of `extends` lines.")
    doc = _read_toml(path)
    parents: list[_Layer] = []
    if "extends" in doc:
        parents = _read_chain(_find_parent(path, doc["extends"]), [*chain, real])
    return [*parents, _layer_of(doc, path)]


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        key = _too_deep(doc, "", 0)
        if key is None:
            return doc
        where = f" under {key}"
    except RecursionError:           # tomllib itself recursed too deep: no key known yet
        where = ""
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"line {m[1]}, column {m[2]}" if m else "end of file"
        what = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        raise PresetError(f"{path}: invalid TOML at {where}: {what}. Fix the syntax there "
                          f'(strings need quotes: name = "fa"; lists use brackets: seeds = [0, 1]; '
                          f"each [section] once).") from None
    except UnicodeDecodeError:
        raise PresetError(f"{path}: not a UTF-8 text file; a preset is a TOML file.") from None
    except OSError as e:
        raise PresetError(f"{path}: cannot read the preset: {e.strerror}.") from None
    raise PresetError(f"{path}: values nested more than {MAX_NESTING} deep{where}: no key takes "
                      f"lists or tables nested that deep. Flatten the value.")


def _too_deep(value: Any, key: str, depth: int) -> str | None:
    """The dotted key under which `value` nests lists/tables more than MAX_NESTING deep."""
    if depth > MAX_NESTING:
        return key or "(top level)"
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for k, v in items:
        found = _too_deep(v, f"{key}.{k}" if isinstance(k, str) and key else
                          (k if isinstance(k, str) else key), depth + 1)
        if found is not None:
            return found
    return None


def _find_parent(path: Path, extends: Any) -> Path:
    """`extends` is relative to the file that says it, else the name of a shipped preset."""
    if not isinstance(extends, str) or not extends:
        raise PresetError(f"{path}: extends = {_toml(extends)}: expected a file name in quotes, "
                          f'e.g. extends = "quickstart.toml".')
    candidate = path.parent / extends
    if candidate.is_file():
        return candidate
    shipped = shipped_presets()
    stem = extends.removesuffix(".toml")
    if "/" not in extends and stem in shipped:
        return shipped[stem]
    raise PresetError(f"{path}: extends = {_toml(extends)}: no such file {candidate} and no "
                      f"shipped preset of that name. Fix the path (it is relative to {path.name}'s "
                      f"folder) or use a shipped preset: {', '.join(shipped)}.")


def _layer_of(doc: dict, path: Path) -> _Layer:
    """Check the file's keys against the schema and flatten them to dotted keys."""
    src = str(path)
    layer = _Layer({}, {}, {})
    for top, value in doc.items():
        if top == "extends":
            continue
        if top == "sweep":
            if not isinstance(value, dict):
                raise PresetError(f'{path}: sweep: expected a table: a line [sweep], then lines '
                                  f'like "rule.name" = ["bp", "fa"].')
            for key, values in _dotted(value):
                _add_axis(layer, path, key, values)
            continue
        if top not in SECTIONS:
            raise PresetError(f"{path}: unknown key '{top}'. {_suggest_top(top)}")
        if not isinstance(value, dict):
            raise PresetError(f"{path}: {top} = {_toml(value)}: expected a table. Write [{top}] on "
                              f"its own line and its keys below it, e.g. [{top}] then "
                              f"{_example_line(top)}.")
        for field, v in value.items():
            key = f"{top}.{field}"
            _check_key(key, src)
            layer.values[key] = v
            layer.source[key] = src
    both = sorted(layer.axes.keys() & layer.values.keys())
    if both:
        key = both[0]
        raise PresetError(f"{path}: {key} is both set in [{key.split('.')[0]}] and swept in "
                          f"[sweep]; keep only one of them (the sweep would override the value).")
    return layer


def _dotted(table: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Sweep keys may be quoted ("rule.name" = ...) or bare (rule.name = ..., which TOML
    reads as a nested table): both give the dotted key."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _add_axis(layer: _Layer, path: Path, key: str, values: Any) -> None:
    where = f'{path}: sweep "{key}"'
    axis = SEEDS_AXIS if key == "seeds" else key
    if key != "seeds":
        if key not in KEYS:
            raise PresetError(f"{where}: unknown sweep key. {_suggest_key(key, extra=['seeds'])} "
                              f'Sweep keys are dotted config keys ("rule.name") or seeds.')
        if key == "run.name":
            raise PresetError(f"{where}: run.name cannot be swept: the sweep names each run "
                              f"itself. Remove this line.")
    if axis in layer.axes:
        raise PresetError(f"{where}: seeds and run.seed are the same axis; keep only seeds.")
    if not isinstance(values, list):
        raise PresetError(f"{where} = {_toml(values)}: expected a list of values, e.g. "
                          f'"{key}" = [{_toml(values)}, ...].')
    if not values:
        raise PresetError(f"{where}: empty sweep list. Give at least one value or remove the line.")
    twice = duplicate(values)
    if twice is not None:
        raise PresetError(f"{where}: lists {twice} twice; remove the duplicate.")
    layer.axes[axis] = values
    layer.source[axis] = str(path)


def _merge(layers: list[_Layer]) -> _Layer:
    """Root first; a child's value replaces the parent's and pins (drops) a parent's sweep axis
    on the same key; a child's sweep axis replaces the parent's value or axis."""
    out = _Layer({}, {}, {})
    for layer in layers:
        for key in layer.values:
            out.axes.pop(key, None)
        out.values.update(layer.values)
        out.axes.update(layer.axes)
        out.source.update(layer.source)
    return out


# --- --set ------------------------------------------------------------------------------------
def _apply_set(layer: _Layer, path: Path, raw: str) -> None:
    """`key=value`, value typed from the schema; a set of a swept key pins it."""
    where = f"{path}: --set {raw}"
    key, eq, text = raw.partition("=")
    key, text = key.strip(), text.strip()
    if not eq or not key:
        raise PresetError(f"{where}: bad --set syntax: expected key=value with a dotted key, "
                          f"e.g. --set optim.lr=0.05 or --set rule.name=fa.")
    if key == "seeds":
        raise PresetError(f"{where}: seeds is a sweep axis; pin one seed with --set run.seed=N.")
    _check_key(key, where)
    layer.values[key] = _parse_value(key, text, where)
    layer.axes.pop(key, None)
    layer.source[key] = where


def _parse_value(key: str, text: str, where: str) -> Any:
    """null unsets an optional key; a string-typed key takes the text as is (quotes optional);
    anything else is read as a TOML value (3, 0.5, true, [1, 2]). Values that are still of the
    wrong type are reported by the schema validation, with the expected type."""
    ann = _annotation(key)
    if text == "null":
        if not _optional(ann):
            raise PresetError(f"{where}: {key} cannot be unset (null); expected {_expects(ann)}.")
        return None
    if _stringy(ann) and text[:1] not in ('"', "'"):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text   # e.g. "fast" for a float: validation says what was expected


# --- expansion and validation -----------------------------------------------------------------
def _expand(layer: _Layer, path: Path, check_data: bool) -> Plan:
    """The layer's grid through the one expander (fa_tui/sweep.py), after a bound on its size."""
    axes = layer.axes
    size = 1
    for values in axes.values():
        size *= len(values)
    if size > MAX_SWEEP:
        sizes = " × ".join(f"{len(v)} ({'seeds' if k == SEEDS_AXIS else k})"
                           for k, v in axes.items())
        src = layer.source.get(next(iter(axes)), str(path))
        raise PresetError(f"{src}: sweep: {sizes} = {size:,} runs, more than the {MAX_SWEEP:,} "
                          f"one launch may hold. Sweep fewer values, or split the sweep into "
                          f"several presets.")
    base = str(layer.values.get("run.name") or path.stem)
    runs = expand(layer.values, layer.axes, base,
                  lambda values, point: _validate(values, layer, point, path))
    if check_data:
        _check_data(runs, layer, path)
    axes = {k: layer.axes[k] for k in name_order(layer.axes)}
    return Plan(path.stem, path, base, axes, runs)


def _validate(values: dict[str, Any], layer: _Layer, point: dict[str, Any], path: Path) -> Config:
    try:
        return Config.model_validate(nest(values))
    except ValidationError as e:
        raise PresetError(_friendly(e, layer, point, path)) from None


def _friendly(e: ValidationError, layer: _Layer, point: dict[str, Any], path: Path) -> str:
    """Rewrite pydantic's first error: loc -> dotted key, and say what to write instead."""
    err = e.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc[:2])
    shown = key + "".join(f"[{p}]" for p in loc[2:])
    src = layer.source.get(key, str(path))
    if key in point:
        src = f'{src}: sweep "{"seeds" if key == SEEDS_AXIS else key}"'
    value = _toml(err["input"])
    more = len(e.errors()) - 1
    tail = f" ({more} more problem{'s' * (more > 1)} after this one.)" if more else ""
    if len(loc) < 2:    # a whole-section check, e.g. data.subset listing a class twice
        msg = err["msg"].removeprefix("Value error, ")
        named = msg.split(" ", 1)[0]      # the key the message starts with, if any
        src = layer.source.get(named, src)
        return f"{src}: {msg}.{tail}"
    ann = _annotation(key)
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "literal_error":
        choices = typing.get_args(_item_type(ann) if len(loc) > 2 else _strip_optional(ann))
        near = difflib.get_close_matches(str(err["input"]), [str(c) for c in choices], n=1)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        what = f"unknown choice; expected one of {', '.join(repr(c) for c in choices)}.{hint}"
    elif kind in _BOUNDS:
        limit = next(iter(ctx.values()))
        what = (f"out of range: expected a value {_BOUNDS[kind]} {limit}; "
                f"e.g. {_example_line(key)}.")
    elif kind in ("too_short", "too_long"):
        short = err['msg'].lower().replace(' after validation', '')
        what = f"expected {_expects(ann)}: {short}; e.g. {_example_line(key)}."
    elif kind == "finite_number":
        what = f"expected a finite number (inf and nan are not values a run can use); e.g. {_example_line(key)}."
    elif kind == "string_pattern_mismatch":
        what = f"expected {_field(key).description}."
    else:
        what = f"expected {_expects(ann)}; e.g. {_example_line(key)}."
    return f"{src}: {shown} = {value}: {what}{tail}"


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
           "less_than_equal": "<="}


def _check_data(runs: list[PlannedRun], layer: _Layer, path: Path) -> None:
    """A dataset that is neither on disk nor downloadable fails now, not in the worker."""
    seen = set()
    for run in runs:
        data = run.config.data
        key = data.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        msg = missing_files(data, allow_download=data.download)
        if msg:
            src = layer.source.get("data.name", str(path))
            raise PresetError(f"{src}: data.name = {_toml(data.name)}: {msg}")


# --- schema helpers ---------------------------------------------------------------------------
def _field(key: str):
    section, field = key.split(".")
    return SECTIONS[section].model_fields[field]


def _annotation(key: str) -> Any:
    return _field(key).annotation


def _check_key(key: str, where: str) -> None:
    if key not in KEYS:
        raise PresetError(f"{where}: unknown key '{key}'. {_suggest_key(key)}")


def _suggest_key(key: str, extra: Sequence[str] = ()) -> str:
    """The nearest valid dotted key, else the keys of the named section."""
    section, _, field = key.rpartition(".")
    near = [k for k in KEYS if field and k.endswith(f".{field}")][:1]  # model.rank -> rule.rank
    if not near and section in SECTIONS:
        near = [f"{section}.{f}" for f in difflib.get_close_matches(
            field, list(SECTIONS[section].model_fields), n=1, cutoff=0.6)]
    if not near:
        near = difflib.get_close_matches(key, [*KEYS, *extra], n=1, cutoff=0.6)
    if near:
        return f"Did you mean '{near[0]}'?"
    if section in SECTIONS:
        return f"Valid keys in [{section}]: {', '.join(SECTIONS[section].model_fields)}."
    return f"Keys are section.name with a section among: {', '.join(SECTIONS)}."


def _suggest_top(top: str) -> str:
    near = difflib.get_close_matches(top, [*SECTIONS, "extends", "sweep"], n=1, cutoff=0.6)
    if near:
        return f"Did you mean '{near[0]}'?"
    owners = [k for k in KEYS if k.endswith(f".{top}")]
    if owners:
        return f"Did you mean '{owners[0]}'? Put it under [{owners[0].split('.')[0]}]."
    return f"A preset holds the sections {', '.join(SECTIONS)}, plus extends and [sweep]."


def _strip_optional(ann: Any) -> Any:
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return args[0] if _optional(ann) and len(args) == 1 else ann


def _optional(ann: Any) -> bool:
    union = typing.get_origin(ann) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(ann)


def _stringy(ann: Any) -> bool:
    ann = _strip_optional(ann)
    return ann is str or (typing.get_origin(ann) is Literal
                          and all(isinstance(a, str) for a in typing.get_args(ann)))


def _item_type(ann: Any) -> Any:
    return typing.get_args(_strip_optional(ann))[0]


def _expects(ann: Any) -> str:
    """Plain words for a field type."""
    if _optional(ann):
        return f"{_expects(_strip_optional(ann))} (or leave the key out to keep it unset)"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_plural(args[0])} in brackets"
    if origin is tuple:
        return f"a list of {len(args)} {_plural(args[0])} in brackets"
    return {int: "an integer", float: "a number", bool: "true or false (no quotes)",
            str: "a string in quotes"}.get(ann, str(ann))


def _plural(ann: Any) -> str:
    if typing.get_origin(ann) is typing.Annotated:      # a bounded item: list[Units]
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) is Literal:
        return "values among " + ", ".join(repr(a) for a in typing.get_args(ann))
    return {int: "integers", float: "numbers", str: "strings"}.get(ann, str(ann))


def _example_line(key: str) -> str:
    """`field = <default>` as TOML, the example a fix hint shows."""
    if "." not in key:        # a section: show its first field
        key = f"{key}.{next(iter(SECTIONS[key].model_fields))}"
    field = _field(key)
    default = field.default
    if default is None:
        default = {int: 1, float: 0.1, str: "..."}.get(_strip_optional(field.annotation), [1, 2])
    return f"{key.split('.')[1]} = {_toml(default)}"


# --- formatting -------------------------------------------------------------------------------
def _toml(value: Any) -> str:
    """A value as it would be written in TOML (null for None, which TOML lacks)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    try:
        return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")
    except TypeError:
        return repr(value)


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(v) for v in obj]
    return obj
