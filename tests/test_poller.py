"""The TUI's poller over broken run directories: it keeps polling (and so keeps stepping the
launch queue), shows the broken runs as `corrupt` rows next to the good ones, and picks up
the repair (issue 9: one bad summary.json used to stop it for good, showing "No runs yet")."""
from __future__ import annotations

import asyncio
from pathlib import Path

from fa_contract.rundir import SUMMARY
from fa_tui.app import FaApp
from fa_tui.widgets.run_table import RunTable
from test_tui import until
from tui_fixtures import NOW, _config, write_fixture_runs, write_run


def test_the_poller_survives_broken_runs_and_sees_the_repair(tmp_path: Path):
    runs = tmp_path / "runs"
    write_fixture_runs(runs)
    bad = write_run(runs, "bad", _config("bad", "fa", {"name": "mlp"}), "done", 10)
    (bad / SUMMARY).write_text("[1, 2]")                       # a list, not an object
    (bad / "status.json").write_text('{"state": "done", "heartbeat": "soon"}')

    async def drive() -> None:
        app = FaApp(runs, poll_s=0.1, clock=lambda: NOW)
        async with app.run_test(size=(100, 32)) as pilot:
            table = app.screen.query_one(RunTable)
            await until(pilot, lambda: app.polls > 2 and table.row("bad") is not None, 30)
            assert table.row("bad").state == "corrupt"
            assert "heartbeat" in table.row("bad").reason
            assert table.row("bp-mlp").state == "done"
            (bad / "status.json").unlink()
            write_run(tmp_path / "fixed", "bad", _config("bad", "fa", {"name": "mlp"}), "done", 10)
            (bad / "status.json").write_bytes((tmp_path / "fixed/bad/status.json").read_bytes())
            polls = app.polls
            await until(pilot, lambda: app.polls > polls + 2 and table.row("bad").state == "done",
                        30)

    asyncio.run(drive())
