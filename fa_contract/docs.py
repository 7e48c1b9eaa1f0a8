"""docs/run-directory.md's tables, generated from the records, so the documented format is
the one the worker writes and the readers check. `python -m fa_contract.docs` rewrites the
generated parts of docs/run-directory.md in place (between `<!-- generated: NAME -->` and
`<!-- end generated -->`); tests/test_contract.py fails when the committed file differs."""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from fa_contract.events import TYPES, Event
from fa_contract.status import Status
from fa_contract.summary import Summary
from fa_contract.typed import describe, hints
from fa_contract.version import FORMAT_VERSION

DOC = Path(__file__).resolve().parent.parent / "docs" / "run-directory.md"
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n).*?(<!-- end generated -->)", re.S)


def _fields(cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    types_ = hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("internal"):
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        rows.append(f"| `{f.name}` | {describe(types_[f.name])}{'' if required else ' (optional)'}"
                    f" | {f.metadata.get('doc', '')} |")
    return rows


def record_table(cls: type) -> str:
    return "\n".join(["| key | type | meaning |", "|---|---|---|", *_fields(cls)]) + "\n"


def events_table() -> str:
    common = tuple(f.name for f in dataclasses.fields(Event))
    lines = [f"Every line has {', '.join(f'`{k}`' for k in common)}.", "",
             "| type | when | keys |", "|---|---|---|"]
    for name, cls in TYPES.items():
        types_ = hints(cls)
        keys = []
        for f in dataclasses.fields(cls):
            if f.name in common:
                continue
            required = (f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING)
            keys.append(f"`{f.name}` ({describe(types_[f.name])}"
                        f"{'' if required else ', optional'}): {f.metadata.get('doc', '')}")
        when = " ".join((cls.__doc__ or "").split())
        lines.append(f"| `{name}` | {when} | {'; '.join(keys) or '(common keys only)'} |")
    return "\n".join(lines) + "\n"


BLOCKS = {"version": lambda: f"Format version: **{FORMAT_VERSION}**.\n",
          "status": lambda: record_table(Status), "summary": lambda: record_table(Summary),
          "events": events_table}


def render(text: str) -> str:
    """`text` with every generated block replaced by its current content."""
    return _BLOCK.sub(lambda m: m[1] + BLOCKS[m[2]]() + m[3], text)


def main() -> int:
    DOC.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
