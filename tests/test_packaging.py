"""The wheel a user would install: it must carry every package, the stylesheet and the shipped
presets (which live in the repository's top-level presets/), and the presets must be found
from the installed copy, away from the repository."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(out)],
                   check=True, capture_output=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (whl,) = out.glob("fa_tui-*.whl")
    return whl


def test_wheel_carries_packages_stylesheet_presets_and_cpp_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in sorted(ROOT.glob("*/**/__init__.py")):
        rel = init.relative_to(ROOT).as_posix()
        if rel.startswith(("engine/", "fa_tui/")):
            assert rel in names, rel
    assert "fa_tui/app.tcss" in names
    presets = sorted(p.name for p in (ROOT / "presets").glob("*.toml"))
    assert presets and all(f"fa_tui/shipped_presets/{p}" in names for p in presets)
    assert "engine/worker.py" in names
    assert "engine/native/feedback_ops.cpp" in names     # the C++ fa ops build from it


def test_installed_copy_finds_its_presets(wheel, tmp_path):
    """Unpacked away from the repository (and first on sys.path), `fa_tui.presets` lists the
    presets from the wheel's own copy."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from fa_tui.presets import PRESETS_DIR, shipped_presets, load_preset; "
            "print(PRESETS_DIR); print(sorted(shipped_presets())); "
            "print(len(load_preset('quickstart', check_data=False)))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out[0] == str(site / "fa_tui" / "shipped_presets")
    assert eval(out[1]) == sorted(p.stem for p in (ROOT / "presets").glob("*.toml"))
    assert int(out[2]) >= 1
