"""Typed records for the files of a run directory, checked against parsed JSON.

The models are dataclasses whose annotations are the schema (JSON scalars, `X | None`,
`list[X]`, `dict[str, X]`, `Literal[...]`, `Any` and nested records). `problem(cls, raw)` says
in one line what is wrong with a parsed object, or returns None.

Why not pydantic: the TUI's poller reads status.json and events.jsonl twice a second and the
app must start without importing pydantic (about half a second); these files hold nothing a
checker of this size cannot cover. config.toml does use pydantic (`fa_contract.config`), read
by launchers and the worker only. Keys a record does not declare are allowed and kept by the
readers (a newer writer may add keys within a format version)."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying its documentation (docs/run-directory.md is generated from it)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"doc": text})


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a record (cached: readers check every line)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def problem(cls: type, raw: Any, where: str = "") -> str | None:
    """What is wrong with `raw` as a `cls` record (the first problem found), or None."""
    if not isinstance(raw, dict):
        return f"{where + ' is ' if where else ''}not a JSON object but {_kind(raw)}"
    types_ = hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return f"{key} is missing"
            continue
        bad = check(raw[f.name], types_[f.name], key)
        if bad:
            return bad
    return None


def check(value: Any, tp: Any, where: str) -> str | None:
    """None when `value` (parsed JSON) fits the annotation `tp`, else why not."""
    if tp is Any:
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [check(value, a, where) for a in args if a is not type(None)]
        return None if None in problems else problems[0]
    if origin is Literal:
        return None if value in args else f"{where} is {value!r}, expected one of {list(args)}"
    if origin is list:
        if not isinstance(value, list):
            return f"{where} is {_kind(value)}, expected a list"
        return next((p for i, v in enumerate(value) if (p := check(v, args[0], f"{where}[{i}]"))),
                    None)
    if origin is dict:
        if not isinstance(value, dict):
            return f"{where} is {_kind(value)}, expected an object"
        return next((p for k, v in value.items() if (p := check(v, args[1], f"{where}.{k}"))),
                    None)
    if dataclasses.is_dataclass(tp):
        return problem(tp, value, where)  # type: ignore[arg-type]
    if tp is float:       # JSON has no NaN or infinity: a writer records those as null
        ok = _int64(value) or isinstance(value, float) and math.isfinite(value)
    elif tp is int:       # counts and pids: a 64-bit integer (a larger one is damage)
        ok = _int64(value)
    elif tp is type(None):
        ok = value is None
    else:
        ok = isinstance(value, tp)
    return None if ok else f"{where} is {_kind(value)}, expected {_name(tp)}"


def _int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _name(tp: Any) -> str:
    return {float: "a number", int: "a whole number", str: "a string", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def describe(tp: Any) -> str:
    """An annotation in the words docs/run-directory.md uses."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return "any"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {describe(args[0])}"
    if origin is dict:
        return f"{{string: {describe(args[1])}}}"
    if dataclasses.is_dataclass(tp):
        inner = ", ".join(f"`{f.name}`" for f in dataclasses.fields(tp))
        return f"{{{inner}}}"
    return {float: "number", int: "integer", str: "string", bool: "boolean",
            type(None): "null"}.get(tp, str(tp))
