"""`fa-tui`: the workbench's command line. With no sub-command it opens the TUI; the
sub-commands run, watch and export runs headless (docs/cli.md).

Torch-free, and quick to start: presets, the launcher and the exporter are imported inside the
commands that need them. Every user mistake (bad preset, unknown run, bad option) is one
message on stderr and exit status 2, never a traceback. `run` and `resume` exit 0 when every
run ended `done`, 1 otherwise, 130 when interrupted.

Length: one Typer app whose commands share the options, the run resolver and the table
helpers above; a command moves to its own module when it grows (the exporter already has).
"""
from __future__ import annotations

import difflib
import os
import signal
import socket
import sys
import time
import tomllib
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fa_contract.rundir import (CONFIG, RunDir, list_runs, one_line, resolve_run,
                                resolve_runs_dir)
from fa_tui.core.runtable import STATE_STYLE, build_row, best_val_acc, fmt_elapsed, progress_bar

if TYPE_CHECKING:
    from fa_tui.launch import RunProgress

app = typer.Typer(
    name="fa-tui", rich_markup_mode="rich", add_completion=True,
    pretty_exceptions_show_locals=False, context_settings={"help_option_names": ["-h", "--help"]},
    help="A terminal workbench for biologically plausible learning rules.\n\n"
         "With no command, opens the workbench (TUI) on the runs directory.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str) -> NoReturn:
    """A user mistake: one message, exit status 2."""
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(2)


# --- shared options and helpers ---------------------------------------------------------------
def _complete_runs(ctx: typer.Context, incomplete: str) -> list[str]:
    chosen = ctx.params.get("runs_dir") or (ctx.parent.params.get("runs_dir") if ctx.parent else None)
    return [r.name for r in list_runs(resolve_runs_dir(chosen)) if r.name.startswith(incomplete)]


def _complete_presets(incomplete: str) -> list[str]:
    from fa_tui.presets import shipped_presets
    return [name for name in shipped_presets() if name.startswith(incomplete)]


RunsDirOpt = Annotated[Optional[Path], typer.Option(
    "--runs-dir", "-d", metavar="DIR", show_default=False,
    help="Runs directory \\[default: $FA_TUI_RUNS, else ./runs].")]
JobsOpt = Annotated[Optional[int], typer.Option(
    "--jobs", "-j", metavar="N", min=1, show_default=False,
    help="Runs at a time \\[default: the number of --gpus, else 1].")]
GpusOpt = Annotated[Optional[str], typer.Option(
    "--gpus", metavar="0,1,…", show_default=False,
    help="GPU indices to spread the runs over (each worker sees one, as CUDA_VISIBLE_DEVICES).")]


class Executor(str, Enum):
    """`fa-tui run --executor`: run.executor's choices."""
    local = "local"
    slurm = "slurm"


RunArgs = Annotated[list[str], typer.Argument(
    metavar="RUN", show_default=False, autocompletion=_complete_runs,
    help="Run directories, or names of runs under the runs directory.")]


def _runs_dir(ctx: typer.Context, option: Path | None) -> Path:
    """The sub-command's --runs-dir, else the one given before the sub-command, else the
    environment, else ./runs."""
    return resolve_runs_dir(option or ctx.obj)


def _resolve_run(arg: str, root: Path) -> RunDir:
    run = resolve_run(arg, root)
    if run is not None:
        return run
    names = [r.name for r in list_runs(root)]
    near = [n for n in names if n.startswith(arg)][:1] or difflib.get_close_matches(arg, names, n=1)
    hint = f" Did you mean '{near[0]}'?" if near else " `fa-tui ls` lists the runs."
    fail(f"no run '{arg}': not a run directory, and not a run under {root}.{hint}")


def _parse_gpus(gpus: str | None) -> list[str]:
    if gpus is None:
        return []
    items = [g.strip() for g in gpus.split(",")]
    if not all(g.isdigit() for g in items):
        fail(f"--gpus {gpus}: expected GPU indices separated by commas, e.g. --gpus 0,1")
    return items


def _state(state: str) -> Text:
    return Text(state, STATE_STYLE.get(state, ""))


def _add_row(table: Table, *cells: str | Text) -> None:
    """Cells are data, never markup (a reason may quote "[16]", a name may hold brackets)."""
    table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))


def _print_table(table: Table) -> None:
    """Tables fit a terminal; piped into a file or grep they keep every cell whole."""
    if out.is_terminal:
        out.print(table)
    else:
        wide = Measurement.get(out, out.options.update(max_width=10_000), table).maximum
        Console(width=max(out.width, wide), highlight=False, file=out.file).print(table)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2%}"


# --- the TUI ----------------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version
        out.print(f"fa-tui {version('fa-tui')}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context, runs_dir: RunsDirOpt = None,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False
          ) -> None:
    ctx.obj = runs_dir
    if ctx.invoked_subcommand is not None:
        return
    try:
        from fa_tui.app import run_app
    except ModuleNotFoundError as e:
        err.print(f"[bold red]error:[/] the workbench (TUI) cannot start: {e}. The headless "
                  "commands work: fa-tui --help")
        raise typer.Exit(1) from None
    run_app(resolve_runs_dir(runs_dir))


# --- run / resume -----------------------------------------------------------------------------
DetachOpt = Annotated[bool, typer.Option(
    "--detach", help="Queue the runs and return at once; they run on without this command.")]
MemoryOpt = Annotated[bool, typer.Option(
    "--skip-memory-check", help="Launch even when the memory estimate exceeds what is free.")]


@app.command()
def run(ctx: typer.Context,
        preset: Annotated[str, typer.Argument(
            metavar="PRESET", show_default=False, autocompletion=_complete_presets,
            help="A preset file, or the name of a shipped preset (fa-tui presets).")],
        sets: Annotated[Optional[list[str]], typer.Option(
            "--set", "-s", metavar="KEY=VALUE", show_default=False,
            help="Override a preset value, e.g. --set optim.lr=0.05 (repeatable).")] = None,
        runs_dir: RunsDirOpt = None, jobs: JobsOpt = None, gpus: GpusOpt = None,
        detach: DetachOpt = False, skip_memory_check: MemoryOpt = False,
        executor: Annotated[Optional[Executor], typer.Option(
            "--executor", "-e", show_default=False,
            help="Where the runs train \\[default: the preset's run.executor, else local]: "
                 "local workers, or SLURM jobs (one array per sweep; docs/cluster.md).")] = None
        ) -> None:
    """Run a preset (every run of its sweep) and follow it to the end.

    Everything is checked first (the preset, the GPUs, memory, disk, the data, fetched once
    if missing); nothing is created when something is wrong. Local runs are queued in the runs
    directory, whose scheduler starts them and outlives this command: Ctrl-C, a lost terminal
    or a killed `fa-tui run` stop only the following, never the runs. SLURM jobs outlive the
    command too: Ctrl-C only stops following them."""
    from fa_tui.presets import PresetError, load_preset
    gpu_list = _parse_gpus(gpus)
    if executor is not None:
        sets = [*(sets or []), f"run.executor={executor.value}"]
    try:
        configs = load_preset(preset, sets or [])
    except PresetError as e:
        fail(str(e))
    if any(c.run.executor == "slurm" for c in configs):
        _run_slurm(ctx, preset, configs, runs_dir, jobs, gpu_list)
    if gpu_list:
        for cfg in configs:
            if cfg.run.device in ("cpu", "mps"):
                fail(f"{cfg.run.name}: run.device = {cfg.run.device!r} but --gpus was given; "
                     f"drop --gpus or --set run.device=auto")
        # each worker sees only its GPU, as cuda:0
        configs = [c.model_copy(update={"run": c.run.model_copy(update={"device": "cuda"})})
                   for c in configs]
    root = _runs_dir(ctx, runs_dir)
    n_jobs = jobs or len(gpu_list) or 1
    from fa_tui.presets import resolve_preset
    estimates = _preflight(configs, root, n_jobs, gpu_list, not skip_memory_check,
                           where=str(resolve_preset(preset)))
    from fa_tui.launch import create_run, submit
    runs: list[RunDir] = []
    try:
        for cfg in configs:
            runs.append(create_run(root, cfg, cfg.run.name))
        submit(root, runs, n_jobs, gpu_list, estimates={
            str(r.path.resolve()): estimates[c.run.name] for r, c in zip(runs, configs)})
    except OSError as e:
        _undo(runs)
        fail(f"cannot create runs under {root}: {e.strerror or e}")
    out.print(f"{len(runs)} run{'s' * (len(runs) != 1)} queued under {root}", markup=False)
    if detach:
        where = "" if root.resolve() == resolve_runs_dir().resolve() else f" -d {root}"
        out.print(f"they run on their own; follow them with: fa-tui ls{where} (or fa-tui)",
                  markup=False)
        raise typer.Exit(0)
    _follow(runs, root)


def _preflight(configs: list, root: Path, jobs: int, gpus: list[str], memory: bool,
               where: str = "") -> dict[str, int]:
    """The machine checks before anything is created; returns run name -> estimated bytes.
    `where` (the preset file) prefixes a refusal, so the message names the file to fix."""
    from fa_tui.preflight import PreflightError, check_launch
    try:
        checked = check_launch(configs, root, jobs, gpus, memory,
                               echo=lambda m: err.print(m, markup=False, highlight=False))
    except PreflightError as e:
        fail(f"{where}: {e}" if where and not str(e).startswith("--gpus") else str(e))
    return {name: est.total for name, est in checked.estimates.items()}


def _undo(runs: list[RunDir]) -> None:
    """Remove run directories this command just created (a launch that failed half-way)."""
    import shutil
    for r in runs:
        shutil.rmtree(r.path, ignore_errors=True)


def _run_slurm(ctx: typer.Context, preset: str, configs: list, runs_dir: Path | None,
               jobs: int | None, gpu_list: list[str]) -> NoReturn:
    """`run` on SLURM: check the cluster, create the runs, submit them (one array per [slurm]
    table), follow them. Nothing is left on disk when the cluster refuses."""
    from fa_tui.slurm import SlurmError, launch
    if any(c.run.executor != "slurm" for c in configs):
        fail(f"{preset}: run.executor is swept over local and slurm; launch them separately")
    if jobs is not None or gpu_list:
        fail("--jobs and --gpus are for the local executor; on SLURM set slurm.parallel (array "
             "tasks at once) and slurm.gpus (GPUs per run)")
    root = _runs_dir(ctx, runs_dir)
    from fa_tui.preflight import PreflightError, fetch_data
    try:              # the data once, here, on the shared filesystem: workers never download
        fetch_data(configs, echo=lambda m: err.print(m, markup=False, highlight=False))
    except PreflightError as e:
        fail(f"{preset}: {e}")
    try:
        runs = launch(root, [(cfg.run.name, cfg) for cfg in configs], source=preset)
    except SlurmError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot create runs under {root}: {e.strerror or e}")
    arrays = sorted({(r.read_status().slurm_job or "?").split("_")[0] for r in runs})
    out.print(f"{len(runs)} run{'s' * (len(runs) != 1)} under {root}, SLURM job "
              f"{', '.join(arrays)}", markup=False)
    _follow_slurm(runs)


def _follow_slurm(runs: list[RunDir]) -> NoReturn:
    """Print each run's state changes (with SLURM's pending reason) until all have ended.
    Ctrl-C stops following only: the jobs are the cluster's."""
    from fa_tui.slurm import follow
    latest: list[RunProgress] = []
    said: dict[str, str] = {}

    def log(progress: list[RunProgress]) -> None:
        latest[:] = progress
        for p in progress:
            line = f"{p.state}: {p.reason}" if p.reason and p.state != "running" else p.state
            if said.get(p.run.name) != line:
                said[p.run.name] = line
                out.print(f"{time.strftime('%H:%M:%S')} {p.run.name} {line}", markup=False)
    signal.signal(signal.SIGHUP, _detach)
    try:
        follow(runs, log)
    except KeyboardInterrupt:
        err.print("stopped following; the jobs go on. Follow them with fa-tui ls (or the TUI), "
                  "cancel them with fa-tui stop.", soft_wrap=True)
        raise typer.Exit(130) from None
    _summary(latest)
    raise typer.Exit(0 if latest and all(p.state == "done" for p in latest) else 1)


@app.command()
def resume(ctx: typer.Context, runs: RunArgs, runs_dir: RunsDirOpt = None,
           jobs: JobsOpt = None, gpus: GpusOpt = None, detach: DetachOpt = False,
           skip_memory_check: MemoryOpt = False) -> None:
    """Continue stopped or failed runs from their last checkpoint and follow them.

    A run without a checkpoint (it died before its first epoch) starts over."""
    from fa_tui.launch import resume_refusal
    root = _runs_dir(ctx, runs_dir)
    gpu_list = _parse_gpus(gpus)
    targets = list({r.path.resolve(): r for r in (_resolve_run(a, root) for a in runs)}.values())
    for target in targets:
        refusal = resume_refusal(target)
        if refusal:
            fail(refusal)
    from fa_tui.slurm import slurm_runs
    on_slurm = slurm_runs(targets)
    if on_slurm and len(on_slurm) != len(targets):
        fail("some of these runs are SLURM runs and some local ones; resume them separately")
    if on_slurm:
        for target in targets:
            how = ("from its checkpoint" if target.has_checkpoint()
                   else "from scratch (no checkpoint)")
            out.print(f"resuming {target.name} {how}", markup=False)
        _resume_slurm(targets, jobs, gpu_list)
    from pydantic import ValidationError

    from fa_contract.config import Config
    from fa_tui.launch import submit
    from fa_tui.preflight import PreflightError, check_disk
    configs = []
    for target in targets:
        try:
            configs.append(Config.model_validate(target.read_config()))
        except (OSError, tomllib.TOMLDecodeError, ValidationError) as e:
            fail(f"{target.file(CONFIG)}: cannot be read as a run configuration "
                 f"({str(e).splitlines()[0]}); this run cannot be resumed")
    n_jobs = jobs or len(gpu_list) or 1
    estimates = _preflight(configs, root, n_jobs, gpu_list, not skip_memory_check)
    for target in targets:                 # each run's own folder must take a checkpoint
        try:
            check_disk(target.path)
        except PreflightError as e:
            fail(str(e))
    for target in targets:
        how = "from its checkpoint" if target.has_checkpoint() else "from scratch (no checkpoint)"
        out.print(f"resuming {target.name} {how}", markup=False)
    try:
        submit(root, targets, n_jobs, gpu_list, resume=True, estimates={
            str(t.path.resolve()): estimates.get(c.run.name, 0) for t, c in zip(targets, configs)})
    except OSError as e:
        fail(f"cannot queue the runs under {root}: {e.strerror or e}")
    if detach:
        raise typer.Exit(0)
    _follow(targets, root)


def _resume_slurm(targets: list[RunDir], jobs: int | None, gpu_list: list[str]) -> NoReturn:
    """Submit ended SLURM runs again (with --resume), then follow them."""
    from fa_tui.slurm import SlurmError, resubmit
    if jobs is not None or gpu_list:
        fail("--jobs and --gpus are for the local executor; these runs are SLURM runs")
    try:
        resubmit(targets)
    except SlurmError as e:
        fail(str(e))
    _follow_slurm(targets)


def _follow(runs: list[RunDir], root: Path) -> NoReturn:
    """Follow the runs with a live view, then print the summary table and exit. Interrupting
    (Ctrl-C, SIGTERM, a lost terminal) ends only the following: the runs go on."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fa_tui.launch import follow
    latest: list[RunProgress] = []

    def raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, _detach)              # SSH dropped: carry on, output discarded
    interrupted = False
    err.print("following the runs; Ctrl-C stops only this view, the runs go on", style="dim")
    try:
        if out.is_terminal:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                          console=out) as bars:
                tasks = {r.name: bars.add_task(r.name, start=False, state="queued") for r in runs}

                def draw(progress: list[RunProgress]) -> None:
                    latest[:] = progress
                    for p in progress:
                        task = tasks[p.run.name]
                        if p.state != "queued":
                            bars.start_task(task)
                        style = STATE_STYLE.get(p.state, "")
                        gpu = f" gpu {p.gpu}" if p.gpu is not None else ""
                        bars.update(task, completed=p.step, total=p.total,
                                    state=f"[{style}]{p.state}[/]{gpu}" if style else p.state)
                        if p.finished:
                            bars.stop_task(task)
                follow(runs, root, draw)
        else:
            said: dict[str, str] = {}

            def log(progress: list[RunProgress]) -> None:
                latest[:] = progress
                for p in progress:
                    if said.get(p.run.name) != p.state:
                        said[p.run.name] = p.state
                        where = f" on GPU {p.gpu}" if p.gpu is not None and not p.finished else ""
                        why = f": {p.reason}" if p.reason and p.finished else ""
                        out.print(f"{time.strftime('%H:%M:%S')} {p.run.name} {p.state}{where}{why}",
                                  markup=False)
            follow(runs, root, log)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        where = "" if root.resolve() == resolve_runs_dir().resolve() else f" -d {root}"
        names = " ".join(p.run.name for p in latest if not p.finished)
        err.print("stopped following; the runs go on (queued ones start as slots free up). "
                  f"Watch them with: fa-tui ls{where}" + (f"; stop them with: fa-tui stop{where} "
                                                          f"{names}" if names else ""),
                  soft_wrap=True, markup=False)
        raise typer.Exit(130)
    _summary(latest)
    raise typer.Exit(0 if latest and all(p.state == "done" for p in latest) else 1)


def _detach(*_: object) -> None:
    """The terminal went away: point stdin/stdout/stderr at /dev/null so that printing cannot
    fail. The runs never depended on this process (the scheduler and the workers run in
    their own sessions)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def _summary(progress: list[RunProgress]) -> None:
    from fa_tui.export import ExportError, record
    table = Table(title="summary", title_justify="left")
    for col in ("run", "rule", "state", "best val", "test acc"):
        table.add_column(col, justify="right" if col in ("best val", "test acc") else "left")
    notes = []
    for p in progress:
        try:
            rec = record(p.run)
        except ExportError:
            rec = {"config": {}}
        _add_row(table, p.run.name, rec["config"].get("rule", {}).get("name", "?"),
                 _state(p.state), _pct(rec.get("best_val_acc")), _pct(rec.get("test_acc")))
        if p.state != "done" and p.reason:
            notes.append(f"{p.run.name}: {p.reason}")
    _print_table(table)
    for note in notes:
        out.print(Text(note, "dim"))


# --- stop -------------------------------------------------------------------------------------
@app.command()
def stop(ctx: typer.Context, runs: RunArgs, runs_dir: RunsDirOpt = None,
         wait: Annotated[bool, typer.Option("--wait", "-w",
                                            help="Wait until the workers have exited.")] = False
         ) -> None:
    """Stop runs: the worker finishes its step, checkpoints and exits (resumable).
    A queued run that has not started is marked stopped."""
    from fa_tui.launch import stop as stop_run
    root = _runs_dir(ctx, runs_dir)
    targets = [_resolve_run(a, root) for a in runs]
    waiting, code = [], 0
    for target in targets:
        status = target.read_status()
        if status.state == "running" and status.host != socket.gethostname() \
                and not status.slurm_job:
            err.print(f"{target.name} runs on {status.host}: stop it there", markup=False)
            code = 1
        elif stop_run(target):
            out.print(f"{target.name}: stop requested", markup=False)
            waiting.append(target)
        elif status.state == "running":       # a dead pid whose heartbeat is not stale yet
            out.print(f"{target.name}: its worker (pid {status.pid}) is gone; nothing to stop",
                      markup=False)
        else:
            out.print(f"{target.name}: not running ({status.state})", markup=False)
    deadline = time.monotonic() + 600
    while wait and waiting and time.monotonic() < deadline:
        waiting = [t for t in waiting if t.read_status().active]
        time.sleep(0.2)
    if wait:
        for target in targets:
            out.print(Text.assemble(f"{target.name}: ", _state(target.read_status().state)))
    raise typer.Exit(code)


# --- queue ------------------------------------------------------------------------------------
@app.command()
def queue(ctx: typer.Context, runs_dir: RunsDirOpt = None,
          jobs: Annotated[Optional[int], typer.Option(
              "--jobs", "-j", metavar="N", min=1, show_default=False,
              help="Let every waiting launch run N at a time from now on.")] = None) -> None:
    """The runs directory's queue: its scheduler, and the runs waiting for a slot."""
    from fa_tui.core.queue import QueueDir
    from fa_tui.scheduler import ensure_scheduler
    root = _runs_dir(ctx, runs_dir)
    q = QueueDir(root)
    if jobs is not None:
        try:
            changed = q.set_jobs(jobs)
            if changed:
                ensure_scheduler(root)
        except OSError as e:
            fail(f"cannot change the queue under {root}: {e.strerror or e}")
        out.print(f"--jobs {jobs} for {changed} waiting launch(es)", markup=False)
    pid = q.scheduler_pid()
    batches = q.batches()
    out.print(f"scheduler: {'pid ' + str(pid) if pid else 'not running'}; "
              f"{len(batches)} launch(es) in the queue", markup=False)
    for b in batches:
        started = q.started(b.id)
        waiting = [Path(r).name for r in b.runs if r not in started]
        gpus = f", gpus {','.join(b.gpus)}" if b.gpus else ""
        out.print(f"  {len(b.runs)} run(s), {b.jobs} at a time{gpus}"
                  f"{' (resume)' if b.resume else ''}: {len(waiting)} waiting"
                  + (f": {' '.join(waiting[:8])}{' …' if len(waiting) > 8 else ''}"
                     if waiting else ""), markup=False)


# --- ls / show / presets ----------------------------------------------------------------------
@app.command("ls")
def ls_(ctx: typer.Context, runs_dir: RunsDirOpt = None) -> None:
    """List the runs (newest first); a run whose worker vanished shows as failed."""
    root = _runs_dir(ctx, runs_dir)
    runs = list_runs(root)
    if not runs:
        out.print(f"no runs under {root}", markup=False)
        return
    from fa_tui.core.slurmq import live as slurm_live
    from fa_tui.core.slurmq import slurm_jobs, squeue
    views = [r.view() for r in runs]
    statuses = [v.status for v in views]
    jobs = slurm_jobs(statuses)
    queue = squeue(jobs) if jobs else {}          # one call for all SLURM runs
    cluster = any(s.slurm_job for s in statuses)  # the slurm column only when there are some
    table = Table(title=str(root), title_justify="left")
    for col in ("run", "state", "rule", "model", "data", "optim", "norm", "progress",
                "best val", "elapsed", *(("slurm",) if cluster else ()), "reason"):
        table.add_column(col, justify="right" if col in ("best val", "elapsed") else "left",
                         overflow="fold", max_width=40 if col == "reason" else None)
    now = time.time()
    for r, view in zip(runs, views):  # total: an unreadable run is a `corrupt` row
        status, summary = slurm_live(view.status, queue), view.summary
        live = best_val_acc(r.read_events()) if (summary or {}).get("best_val_acc") is None else None
        row = build_row(r.name, status, view.config, summary, live, now)
        job = (f"{status.slurm_job} {status.slurm_state or ''}".strip() if status.active
               else status.slurm_job or "") if status.slurm_job else ""
        reason = one_line(row.reason or view.problem, 120)
        _add_row(table, row.name, _state(row.state), row.rule, row.model, row.data, row.optim,
                 row.norm, progress_bar(row.progress) if row.total else str(row.step),
                 _pct(row.best_val), fmt_elapsed(row.elapsed), *((job,) if cluster else ()),
                 Text(reason or "", "dim"))
    _print_table(table)


@app.command()
def show(ctx: typer.Context,
         run_arg: Annotated[str, typer.Argument(
             metavar="RUN", show_default=False, autocompletion=_complete_runs,
             help="A run directory, or the name of a run under the runs directory.")],
         runs_dir: RunsDirOpt = None) -> None:
    """One run in detail: status, config highlights, final metrics, per-layer diagnostics."""
    from fa_tui.export import LAYER_GROUPS, ExportError, record
    target = _resolve_run(run_arg, _runs_dir(ctx, runs_dir))
    try:
        rec = record(target)
    except ExportError as e:
        fail(str(e))
    from fa_tui.core.slurmq import describe, live, slurm_jobs, squeue
    status = target.read_status()
    if status.slurm_job:
        status = live(status, squeue(slurm_jobs([status])))
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    _add_row(info, "run", f"{target.name}  ({target.path})")
    _add_row(info, "state", _state(status.state))
    if status.reason:
        _add_row(info, "reason", status.reason)
    if status.pid:
        _add_row(info, "worker", f"pid {status.pid} on {status.host}, device {status.device or '?'}")
    if status.slurm_job:
        _add_row(info, "slurm", describe(status) or "")
    _add_row(info, "progress", f"{status.step} / {status.total_steps or '?'} steps")
    if status.started:
        _add_row(info, "started", _when(status.started))
    for key, value in _highlights(rec["config"]):
        _add_row(info, key, value)
    for key, label in (("test_acc", "test acc"), ("best_val_acc", "best val acc"),
                       ("final_val_acc", "final val acc")):
        _add_row(info, label, _pct(rec.get(key)))
    for key, label in (("test_loss", "test loss"), ("final_train_loss", "final train loss")):
        if rec.get(key) is not None:
            _add_row(info, label, f"{rec[key]:.4f}")
    if rec.get("wall_s") is not None:
        _add_row(info, "wall time", fmt_elapsed(rec["wall_s"]))
    diag_s, wall_s = rec.get("diag_s"), rec.get("wall_s")
    if isinstance(diag_s, (int, float)) and isinstance(wall_s, (int, float)) and wall_s > 0:
        took = f"{diag_s:.1f}s" if diag_s < 60 else fmt_elapsed(diag_s)
        _add_row(info, "diagnostics", f"{took}, {diag_s / wall_s:.1%} of the wall time")
    out.print(info)
    for title, group in LAYER_GROUPS.items() if rec.get("layers") else ():
        layers = Table(title=f"per layer, last diagnostics: {title}", title_justify="left")
        layers.add_column("layer")
        for m in group:
            layers.add_column(m, justify="right")
        for name, metrics in rec["layers"].items():
            _add_row(layers, name, *("–" if not isinstance(metrics.get(m), (int, float))
                                     else f"{metrics[m]:.2f}" for m in group))
        _print_table(layers)
    if status.state in ("failed", "diverged"):
        tail = target.log_tail(15)
        if tail:
            out.print(Text("worker.log (end):", "bold"))
            out.print(Text("\n".join(tail), "dim"))


def _when(t: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    except (OverflowError, ValueError, OSError):
        return f"? (unix time {t!r})"


def _highlights(cfg: dict) -> list[tuple[str, str]]:
    """The config in a few readable lines (the whole of it is config.toml)."""
    rule, model, data, optim, train, norm, run_ = (
        cfg.get(s, {}) for s in ("rule", "model", "data", "optim", "train", "norm", "run"))
    rule_text = rule.get("name", "?")
    if rule_text == "ldfa":
        rule_text += f", rank {rule.get('rank')}, adapt {rule.get('adapt')}"
    if rule.get("scale", 1.0) != 1.0:
        rule_text += f", scale {rule['scale']}"
    name = model.get("name", "?")
    model_text = {"mlp": f"mlp {model.get('width')}×{model.get('depth')}",
                  "vit": f"vit {model.get('width')}×{model.get('depth')}, patch {model.get('patch')}",
                  "cnn": f"cnn {model.get('widths')}"}.get(name, name)
    model_text += f", {model.get('activation', '?')}"
    data_text = data.get("name", "?")
    if data_text == "synthetic":
        data_text += f" {data.get('shape')}, {data.get('classes')} classes"
    optim_text = f"{optim.get('name', '?')}, lr {optim.get('lr')}, {optim.get('schedule', 'constant')}"
    train_text = f"{train.get('epochs')} epochs, batch {train.get('batch_size')}"
    return [("rule", rule_text), ("model", model_text), ("data", data_text),
            ("optim", optim_text), ("norm", norm.get("name", "?")), ("train", train_text),
            ("seed", str(run_.get("seed", "?")))]


@app.command()
def presets() -> None:
    """The shipped presets, with their descriptions."""
    from fa_tui.presets import PresetError, describe, load_plan, shipped_presets
    table = Table(title="fa-tui run NAME", title_justify="left")
    table.add_column("name")
    table.add_column("runs", justify="right")
    table.add_column("description")
    for name, path in shipped_presets().items():
        try:
            count = str(len(load_plan(path, check_data=False).runs))
        except PresetError:
            count = Text("invalid", "red")
        _add_row(table, name, count, describe(path))
    _print_table(table)


# --- export -----------------------------------------------------------------------------------
class XAxis(str, Enum):
    """fa_tui.export.X_AXES (kept here so that --help needs no import of the exporter)."""
    step = "step"
    epoch = "epoch"
    wall = "wall"
    val_acc = "val_acc"


class Format(str, Enum):
    json = "json"
    csv = "csv"
    md = "md"
    tex = "tex"


@app.command()
def export(ctx: typer.Context,
           targets: Annotated[list[str], typer.Argument(
               metavar="RUN_OR_DIR", show_default=False, autocompletion=_complete_runs,
               help="Run directories, directories of runs, or run names.")],
           fmt: Annotated[Optional[Format], typer.Option(
               "--format", "-f", show_default=False,
               help="Output format \\[default: from the -o suffix, else md].")] = None,
           output: Annotated[Optional[Path], typer.Option(
               "--output", "-o", metavar="FILE", show_default=False,
               help="Write here instead of stdout.")] = None,
           curves: Annotated[bool, typer.Option(
               "--curves", help="Per-event metrics (one row per train/eval/diag/test event) "
                                "instead of the summary table.")] = False,
           plot: Annotated[Optional[Path], typer.Option(
               "--plot", metavar="FILE", show_default=False,
               help="Also draw accuracy, per-layer erank and angle curves (.png, .svg, .pdf; "
                    "needs matplotlib).")] = None,
           x: Annotated[XAxis, typer.Option(
               "--x", help="x-axis of --curves (the `x` column) and --plot: step, epoch, wall "
                           "time (s) or the latest val accuracy (compare runs at matched "
                           "accuracy).")] = XAxis.step,
           rank: Annotated[str, typer.Option(
               "--rank", help="per-layer rank metric drawn by --plot, e.g. erank_sent_traj, "
                              "erank_err_rn")] = "erank_err",
           group: Annotated[bool, typer.Option(
               "--group/--no-group", help="Merge runs that differ only by seed (mean ± std).")
           ] = True,
           layers: Annotated[bool, typer.Option(
               "--layers/--no-layers", help="Per-layer diagnostics columns.")] = True,
           force: Annotated[bool, typer.Option(
               "--force", help="Overwrite an existing output or plot file.")] = False,
           runs_dir: RunsDirOpt = None) -> None:
    """Export runs as a table (json, csv, md, tex), per-step curves, or a plot."""
    from fa_tui.export import (ExportError, check_overwrite, curve_table, find_runs, plot as draw,
                               render, summary_table)
    try:
        force = force or _confirm_overwrite([output, plot])
        check_overwrite([output, plot], force)
        runs = find_runs(targets, _runs_dir(ctx, runs_dir))
        if fmt is None and output is not None and output.suffix.lstrip(".") in Format.__members__:
            fmt = Format(output.suffix.lstrip("."))
        table_wanted = not (plot and fmt is None and output is None and not curves)
        if table_wanted:
            table = curve_table(runs, x.value) if curves else summary_table(runs, group, layers)
            for note in table.notes:          # runs left out, seeds not counted twice
                err.print(f"note: {note}", markup=False, soft_wrap=True)
            text = render(table, (fmt or (Format.csv if curves else Format.md)).value)
            if output is None:
                sys.stdout.write(text)
            else:
                from fa_contract.rundir import write_atomic
                write_atomic(output, text)        # a full disk leaves no 0-byte file
                err.print(f"wrote {len(table.rows)} rows to {output}")
        if plot:
            draw(runs, plot, group=group, x=x.value, rank_metric=rank)
            err.print(f"wrote {plot}")
    except ExportError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {e.filename or output or plot}: {e.strerror or e}")


def _confirm_overwrite(paths: list[Optional[Path]]) -> bool:
    """At a terminal, ask before replacing existing files (default no); in a script (stdin
    not a terminal) never ask: the caller refuses unless --force."""
    taken = [p for p in paths if p is not None and p.exists()]
    if not taken or not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    return typer.confirm(f"{', '.join(map(str, taken))} exist{'s' if len(taken) == 1 else ''}. "
                         "Overwrite?", default=False, err=True)


def main() -> None:
    """Console-script entry point (pyproject: fa-tui = fa_tui.cli:main)."""
    app()
