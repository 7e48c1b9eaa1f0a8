"""Property-based: random bytes, truncations and wrong-typed JSON in every run file; no
exception escapes any reader (RunDir, EventLog, the TUI's poller, export, ls/show)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fa_contract.rundir import CONFIG, EVENTS, STATUS, SUMMARY, RunDir
from fa_tui.cli import app
from fa_tui.core.runtable import SORT_KEYS, sort_rows
from fa_tui.core.store import RunStore
from fa_tui.export import curve_table, record, render, summary_table
from tui_fixtures import _config, write_run

FILES = (CONFIG, STATUS, SUMMARY, EVENTS)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.sampled_from([2**63, -2**70, 10**400, 1e308, -1e308, 0.5, -1]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)
KEYS = ("state", "pid", "device", "adapt", "rank", "width", "depth", "host", "heartbeat", "started", "reason", "step", "total_steps", "v",
        "type", "layers", "epoch", "acc", "loss", "best_val_acc", "test_acc", "wall_s", "config",
        "rule", "model", "run", "name", "split")
typed_objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)


@st.composite
def damage(draw):
    """(file, how) -> new bytes given the file's valid bytes."""
    file = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(("bytes", "truncate", "json", "object", "event", "delete")))
    if kind == "delete":
        return file, lambda _: None
    if kind == "bytes":
        return file, lambda _: draw(st.binary(max_size=200))
    if kind == "truncate":
        cut = draw(st.integers(min_value=0, max_value=2000))
        return file, lambda data: data[:cut]
    if kind == "json":
        value = draw(json_values)
        return file, lambda _: json.dumps(value).encode()
    obj = draw(typed_objects)
    if kind == "event":       # a wrong-typed line appended to a valid log
        return EVENTS, lambda data: data + json.dumps({"v": 1, "t": 0, **obj}).encode() + b"\n"
    if file == CONFIG:
        import tomli_w
        try:
            text = tomli_w.dumps({k: v for k, v in obj.items() if v is not None})
        except (TypeError, ValueError):
            text = "[broken"
        return file, lambda _: text.encode()
    return file, lambda data: json.dumps({**_object(data), **obj}).encode()


def _object(data: bytes) -> dict:
    """The file's JSON object (status, summary), or {} when it is not one (any more)."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _apply(target: Path, how) -> None:
    data = how(target.read_bytes() if target.exists() else b"")
    if data is None:
        target.unlink(missing_ok=True)
    else:
        target.write_bytes(data)


def _read_everything(runs: Path) -> None:
    run = RunDir(runs / "r")
    run.view()
    run.read_events()
    run.log_tail()
    store = RunStore(runs)
    store.refresh(("r",))
    rows = store.refresh(("r",)).rows
    for key in SORT_KEYS:             # a damaged row sorts among good ones
        sort_rows(rows, key)
    rec = record(run)
    assert rec["name"] == "r"
    for group in (True, False):
        render(summary_table([run], group=group), "md")
    render(curve_table([run]), "csv")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(damages=st.lists(damage(), min_size=1, max_size=3))
def test_no_reader_raises_on_damaged_run_files(damages):
    root = Path(tempfile.mkdtemp(prefix="fa-fuzz-"))
    try:
        path = write_run(root, "r", _config("r", "fa", {"name": "mlp"}), "done", 20)
        write_run(root, "good", _config("good", "bp", {"name": "mlp"}), "failed", 10,
                  reason="boom")
        for file, how in damages:
            _apply(path / file, how)
        _read_everything(root)
    finally:
        shutil.rmtree(root)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(damages=st.lists(damage(), min_size=1, max_size=2))
def test_ls_show_and_export_never_print_a_traceback(damages):
    runner = CliRunner()
    root = Path(tempfile.mkdtemp(prefix="fa-fuzz-"))
    try:
        path = write_run(root, "r", _config("r", "fa", {"name": "mlp"}), "failed", 10,
                         reason="boom")
        for file, how in damages:
            _apply(path / file, how)
        for args in (["ls"], ["show", "r"], ["export", "r"], ["export", "--curves", "r"]):
            result = runner.invoke(app, [*args, "-d", str(root)])
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                args, repr(result.exception))
            # without config.toml it is no run: one message and exit 2, like any unknown run
            ok = (0,) if (path / CONFIG).exists() else (0, 2)
            assert result.exit_code in ok and "Traceback" not in result.output, (
                args, result.output)
    finally:
        shutil.rmtree(root)
