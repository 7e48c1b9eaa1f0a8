"""The scheduler's side of warm workers (engine/warm.py): one `python -m engine.worker --serve`
per scheduler, started at its first run, that forks each worker from an already-imported
engine instead of starting a fresh interpreter (about 3 s of imports per run on a CPU VM;
docs/benchmarks.md). Torch-free: it only speaks the server's line protocol.

Anything that goes wrong with the server (it cannot start, dies, answers an error or not at
all) turns warm starts off for this scheduler and `start` returns None, so the caller starts
that worker and every later one cold: warm is a speed-up, never a new way to fail.
`FA_TUI_WARM=0` turns it off.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from fa_contract.process import pid_alive

#: how long a start may wait for the server's reply (the first includes its imports)
REPLY_S = 120.0


def enabled() -> bool:
    return os.environ.get("FA_TUI_WARM", "1") not in ("0", "false", "no", "off")


class WarmProc:
    """A worker forked by the server: what the scheduler needs of a subprocess.Popen."""

    def __init__(self, starter: WarmStarter, pid: int) -> None:
        self.starter = starter
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status once the server has reported it, else None. With the server gone
        the status is lost: a worker that is no longer alive reads as exit status 1."""
        if self.returncode is None:
            self.starter.drain()
            self.returncode = self.starter.exits.pop(self.pid, None)
            if self.returncode is None and self.starter.proc is None and not pid_alive(self.pid):
                self.returncode = 1
        return self.returncode


class WarmStarter:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env                          # the server's environment (PYTHONPATH set)
        self.proc: subprocess.Popen | None = None
        self.broken = False
        self.exits: dict[int, int] = {}
        self._buf = b""

    def start(self, args: list[str], env: dict[str, str], log: Path) -> WarmProc | None:
        """Fork `python -m engine.worker ARGS` with `env` on top of the server's, output
        appended to `log`; None when warm starts are off or just failed."""
        if self.broken:
            return None
        try:
            if self.proc is None:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "engine.worker", "--serve"], env=self.env,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    start_new_session=True)
            request = {"args": args, "env": env, "log": str(log)}
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            reply = self._reply()
        except (OSError, ValueError) as e:
            reply = {"error": str(e)}
        if "pid" in reply:
            return WarmProc(self, int(reply["pid"]))
        self.close()
        self.broken = True
        return None

    def drain(self, timeout: float = 0.0) -> list[dict]:
        """Read what the server has said so far; exits are kept in `exits`, replies returned."""
        if self.proc is None or self.proc.stdout is None:
            return []
        out = self.proc.stdout.fileno()
        replies = []
        while select.select([out], [], [], timeout)[0]:
            chunk = os.read(out, 1 << 16)
            if not chunk:                       # the server is gone
                self.close()
                break
            self._buf += chunk
            timeout = 0.0
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if "exit" in msg:
                self.exits[int(msg["exit"])] = int(msg["rc"])
            else:
                replies.append(msg)
        return replies

    def _reply(self) -> dict:
        deadline = time.monotonic() + REPLY_S
        while self.proc is not None and time.monotonic() < deadline:
            replies = self.drain(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            if replies:
                return replies[0]
        return {"error": "no reply from the warm worker server"}

    def close(self) -> None:
        """End the server (its workers run on). Exits it reported are kept."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            for pipe in (proc.stdin, proc.stdout):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
