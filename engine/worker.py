"""The process that trains one run: `python -m engine.worker RUN_DIR [--resume]`.

It is the only writer of its run directory once started (docs/run-directory.md): it reads
config.toml, streams `Trainer.events()` into events.jsonl, keeps status.json fresh from a
heartbeat thread, checkpoints after every epoch and on stop, and always ends by writing
summary.json and then a final status — whatever happened, so that no metric is lost and a
reader that sees the final status also finds the summary.

The launcher (fa_tui/launch.py) starts it in its own session with stdout and stderr sent to
worker.log, so a traceback lands there. SIGTERM or SIGINT asks for a clean stop: the trainer
finishes its step, the worker checkpoints and writes `stopped`; `--resume` continues from that
checkpoint exactly. SIGUSR2 does the same: SLURM sends it before a time limit or a preemption
(fa_tui/slurm.py requeues the job, which resumes). torch is imported only after the signal
handlers are installed, so a stop that arrives during the seconds of imports is a clean stop
too (at step 0), not a kill.

Exit status: 0 for done, stopped and diverged (the run did what was asked; divergence is a
result), 1 for failed.

`python -m engine.worker --serve` is the warm variant a sweep's scheduler uses: one process
that imports once and forks a worker per run (engine/warm.py).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from fa_contract import status as status_file
from fa_contract.atomic import atomic_file, open_log
from fa_contract.config import Config
from fa_contract.process import slurm_job
from fa_contract.rundir import CHECKPOINT, EVENTS, SUMMARY, RunDir, Status, append_event
from fa_contract.summary import KEYS as SUMMARY_KEYS

if TYPE_CHECKING:
    from engine.train import Trainer

#: how long the final summary and status are retried on a full disk, and how often
FINAL_WRITE_S = 3600.0
FINAL_WAIT_S = 2.0


def save_checkpoint(trainer: Trainer, path: Path) -> None:
    """torch.save through the contract's atomic writer: a reader (or a resume after a crash
    mid-save) only ever sees a complete checkpoint, and temporary files of killed workers are
    removed."""
    import torch
    try:
        with atomic_file(path, "wb") as f:   # a failure leaves no partial checkpoint behind
            torch.save(trainer.state_dict(), f)
    except OSError as e:
        if not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def load_checkpoint(trainer: Trainer, path: Path) -> None:
    """Restore everything `save_checkpoint` saved. Tensors go straight to the trainer's device,
    so buffers that the rule assigns rather than copies end up where the model is."""
    import torch
    trainer.load_state_dict(torch.load(path, map_location=trainer.device, weights_only=True))


class Worker:
    """One attempt at a run: a fresh start, or a resume from checkpoint.pt."""

    def __init__(self, rundir: RunDir, resume: bool = False) -> None:
        self.rundir = rundir
        # --resume without a checkpoint (killed before the first epoch) simply starts over
        self.resume = resume and rundir.has_checkpoint()
        # keep the launcher's start time (it wrote our pid): elapsed then counts from launch
        launched = rundir.read_status()
        started = launched.started if launched.pid == os.getpid() and launched.started else None
        # keys this version does not know (a newer launcher's) are written back unchanged
        self.status = Status(state="running", pid=os.getpid(), started=started or time.time(),
                             slurm_job=slurm_job() or launched.slurm_job,
                             slurm_state="RUNNING" if slurm_job() else None,
                             extra=launched.extra)
        self.stop_requested = threading.Event()
        self.trainer: Trainer | None = None
        self.config: dict | None = None
        self._saved_step: int | None = None
        self._base_wall = 0.0                       # training time before this attempt
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()               # main thread and heartbeat both write status
        self._ended = threading.Event()

    def __call__(self) -> int:
        """Run to the end; returns the exit status."""
        restore = _on_signals(STOP_SIGNALS, self.stop_requested.set)
        self.events = None
        try:
            try:
                # a fresh start begins a fresh history; a resume appends (EventLog's rule)
                # (a partial last line left by a crash is completed first, so the resume event
                # is not glued onto it and lost; a symbolic link is never written through)
                self.events = open_log(self.rundir.file(EVENTS), append=self.resume)
                self.rundir.file(SUMMARY).unlink(missing_ok=True)  # written again at the end
                self._beat()
                beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
                beat.start()
                try:
                    state, reason = self._train()
                finally:
                    self._ended.set()
                    beat.join()
            except Exception as e:  # noqa: BLE001 — any failure becomes a `failed` run
                with contextlib.suppress(OSError):     # worker.log may be on a full disk
                    traceback.print_exc()
                    sys.stderr.flush()
                state, reason = "failed", failure_reason(e)
                # the events file itself may be what failed (disk full): status and summary
                # below must still be attempted
                if self.events is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self._emit({"type": "end", "step": self.status.step, "status": state,
                                    "reason": reason})
            finally:
                if self.events is not None:
                    with contextlib.suppress(OSError):   # a flush that fails on a full disk
                        self.events.close()
            self._finish(state, reason)
        finally:
            restore()
        return 1 if state == "failed" else 0

    # --- the run ---------------------------------------------------------------------------
    def _train(self) -> tuple[str, str | None]:
        from engine.train import Trainer    # seconds of imports: the signal handlers are set
        self.config = self.rundir.read_config()
        self.trainer = trainer = Trainer(Config.model_validate(self.config))
        if self.resume:
            load_checkpoint(trainer, self.rundir.file(CHECKPOINT))
            self._saved_step = trainer.step
            self._emit({"type": "resume", "step": trainer.step})
        self._base_wall = trainer.wall_s
        self.status.device = str(trainer.device)
        self.status.total_steps = trainer.total_steps
        self.status.step = trainer.step
        self._beat()
        for event in trainer.events(self.stop_requested.is_set):
            self._emit(event)
            if event["type"] == "epoch":
                self._checkpoint()
            elif event["type"] == "end":
                # stopped: the checkpoint to resume from; done: the final weights, unless the
                # last epoch's checkpoint already holds them. Diverged weights are not kept.
                if event["status"] in ("stopped", "done") and self._saved_step != trainer.step:
                    self._checkpoint()
                return event["status"], event.get("reason")
        raise RuntimeError("the trainer stopped without an `end` event")

    def _emit(self, event: dict) -> None:
        try:
            append_event(self.events, event)
        except OSError as e:               # name the file: flush() errors carry none
            raise OSError(e.errno, e.strerror, str(self.rundir.file(EVENTS))) from e
        self.status.step = event.get("step", self.status.step)

    def _checkpoint(self) -> None:
        save_checkpoint(self.trainer, self.rundir.file(CHECKPOINT))
        self._saved_step = self.trainer.step
        self._beat()                    # an epoch's progress shows without waiting for a beat

    def _finish(self, state: str, reason: str | None) -> None:
        """summary.json first, then the final status, so that a reader that sees the run
        ended finds its summary. On a full disk both are retried until space is back (for
        at most FINAL_WRITE_S), with the heartbeat still beating, so that the run ends with
        its real reason instead of reading "worker vanished" later."""
        deadline = time.monotonic() + FINAL_WRITE_S
        while True:
            try:
                self._write_final(state, reason)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                with contextlib.suppress(OSError):   # still here: keep the heartbeat fresh
                    self._write_status()
                time.sleep(FINAL_WAIT_S)

    def _write_final(self, state: str, reason: str | None) -> None:
        summary: dict = {key: None for key in SUMMARY_KEYS}
        summary.update(config=self.config, layers={})
        if self.trainer is not None:
            summary.update(self.trainer.summary())
        if state == "failed" or self.trainer is None:
            # the trainer's clock only advances at epoch ends; count up to the failure
            summary["wall_s"] = self._base_wall + time.perf_counter() - self._t0
        summary.update(status=state, reason=reason)
        self.rundir.write_summary(summary)
        self.status.state, self.status.reason = state, reason
        self._write_status()

    # --- status ----------------------------------------------------------------------------
    def _write_status(self) -> None:
        with self._lock:
            self.rundir.write_status(self.status)

    def _beat(self) -> None:
        """A progress write that may fail (a full disk): the next heartbeat writes it again."""
        with contextlib.suppress(OSError):
            self._write_status()

    def _heartbeat(self) -> None:
        """Rewrite status.json every HEARTBEAT_S: a live worker is one whose heartbeat is
        fresh; the step it carries is the progress readers show between events. A write that
        fails (a full disk for a few seconds) is tried again at the next beat: the thread
        never dies of it."""
        while not self._ended.wait(status_file.HEARTBEAT_S):
            self._beat()


def failure_reason(e: BaseException) -> str:
    """A failure in words; a full disk or read-only storage says which file and what to do."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        what = Path(e.filename).name if e.filename else "its files"
        cause = "the disk is full" if e.errno != errno.EROFS else "the storage is read-only"
        return (f"{cause} ({e.strerror}) while writing {what}; free some space, then resume "
                f"the run (fa-tui resume)")
    return f"{type(e).__name__}: {e}"


#: SIGUSR2 is what SLURM sends a job's processes before its time limit or a preemption
#: (fa_tui/slurm.py): the worker checkpoints and stops as on SIGTERM, and the job is requeued.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def _on_signals(signums: tuple[int, ...], handler: Callable[[], None]) -> Callable[[], None]:
    """Install `handler` for `signums`; returns a function that puts the old handlers back
    (the worker also runs in-process in tests, which must get their handlers back)."""
    old = {s: signal.signal(s, lambda *_: handler()) for s in signums}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)
    return restore


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--serve"]:
        from engine.warm import serve       # warm workers for a sweep (engine/warm.py)
        return serve(main)
    parser = argparse.ArgumentParser(prog="python -m engine.worker", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run directory (holds config.toml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from checkpoint.pt (a fresh start when there is none)")
    args = parser.parse_args(argv)
    if not (args.run_dir / "config.toml").is_file():
        parser.error(f"{args.run_dir}: not a run directory (no config.toml)")
    return Worker(RunDir(args.run_dir), resume=args.resume)()


if __name__ == "__main__":
    code = main()
    # Everything the run owes its directory is written and closed (events, checkpoint,
    # summary, final status). Skip the interpreter's teardown, which with torch loaded took
    # over a second after the run had ended (docs/benchmarks.md), so that whoever waits for
    # this process (the CLI, the queue) sees it end with the run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
