"""Warm workers for sweeps: `python -m engine.worker --serve` imports torch and the engine once,
then forks one worker per request, so a sweep of short runs pays the seconds of imports once
instead of once per run (docs/benchmarks.md). The scheduler of a runs directory drives it
(fa_tui/warm.py); every worker it forks is the same `engine.worker.main` a cold start runs.

Protocol, one JSON object per line. A request on stdin: {"args": [RUN_DIR, "--resume"?],
"env": {NAME: VALUE}, "log": PATH}. On stdout, in order, one reply per request: {"pid": N} or
{"error": "..."}; and whenever a worker it forked ends, {"exit": N, "rc": CODE}, with
subprocess.Popen's convention (−signal when killed). End of stdin (the scheduler is gone) ends
the server; the workers it started run on in their own sessions, as cold ones do.

Forking is safe because this process has only imported: no torch op has run (an OpenMP pool
does not survive fork) and CUDA is untouched (it cannot be forked once initialised), so a
child's CUDA_VISIBLE_DEVICES still decides its GPU. The child then does what a cold start's
subprocess.Popen would: its own session, stdin from /dev/null, stdout and stderr appended to
the run's worker.log, the requested environment; and it leaves with os._exit, like the cold
worker, so nothing of this server's state is torn down twice.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import traceback
from typing import Callable

#: how often finished workers are looked for while no request arrives
REAP_S = 0.2


def serve(worker_main: Callable[[list[str]], int]) -> int:
    """Answer requests until stdin ends; each worker runs `worker_main(args)` (engine.worker's
    main, passed in so this module does not import its caller)."""
    import engine.data  # noqa: F401 -- the point of this process: imported once, shared by
    import engine.train  # noqa: F401 -- every fork (imports only: see the module docstring)
    import torch
    if torch.cuda.is_initialized():    # forks could not use CUDA: let the scheduler go cold
        print("engine.warm: CUDA initialised at import; not serving", file=sys.stderr)
        return 1

    children: set[int] = set()
    buf = b""
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], REAP_S)
        _reap(children)
        if not ready:
            continue
        chunk = os.read(stdin, 1 << 16)
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                pid = _fork_worker(json.loads(line), worker_main)
            except Exception as e:  # noqa: BLE001 -- any bad request is answered, not fatal
                _reply({"error": f"{type(e).__name__}: {e}"})
            else:
                children.add(pid)
                _reply({"pid": pid})


def _reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _reap(children: set[int]) -> None:
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            _reply({"exit": pid, "rc": os.waitstatus_to_exitcode(status)})


def _fork_worker(request: dict, worker_main: Callable[[list[str]], int]) -> int:
    args = [str(a) for a in request["args"]]
    env = {str(k): str(v) for k, v in request.get("env", {}).items()}
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        pid = os.fork()
    except OSError:
        os.close(log)
        raise
    if pid:
        os.close(log)
        return pid
    code = 1
    try:                                     # the child: never returns into the server loop
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.environ.update(env)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        code = worker_main(args)
    except SystemExit as e:                  # argparse's error: its message is in the log
        code = e.code if isinstance(e.code, int) else 2
    except BaseException:  # noqa: BLE001 -- whatever happens, the child must not return
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    return 0  # unreachable: the child always leaves through os._exit
