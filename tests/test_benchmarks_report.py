"""benchmarks/report.py rewrites docs/benchmarks.md but keeps, verbatim, the sections it does
not measure (the recorded H100 figures, and the TUI and diagnostics-cadence sections other
scripts maintain)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kept_sections_are_verbatim_and_only_those():
    report = load_report()
    gpu = "## Engine, CUDA (H100): recorded history\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    tui = "## Workbench (TUI)\n\nfirst frame 0.9 s\n\n### detail\n\nkept with its section\n"
    text = "# Benchmarks\n\nintro\n\n## Engine, CPU\n\nold figures\n\n" + gpu + "\n" + tui
    assert report.kept_sections(text) == [gpu, tui]


def test_the_current_page_has_every_kept_section():
    report = load_report()
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    heads = [s.splitlines()[0] for s in report.kept_sections(page)]
    assert len(heads) == len(report.KEPT)
    assert all(any(h.startswith(k) for h in heads) for k in report.KEPT)
