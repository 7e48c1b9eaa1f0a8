"""The one way anything writes a file of a run directory (or a preset).

- `write_atomic` / `atomic_file`: write a temporary file in the same directory, fsync, rename
  over the target, so a reader never sees half a file. The temporary file is created with
  O_EXCL | O_NOFOLLOW and the rename replaces a symbolic link itself, so a link planted in a
  run directory never has its target overwritten. Temporary files left by writers that were
  killed (`.NAME.PID.tmp` whose PID is gone) are removed on the next write of the same file.
- `open_log`: open events.jsonl for appending (or truncating) without following a symbolic
  link, after completing a partial last line that a crash or a full disk left, so the next
  event starts on a line of its own and no record is glued onto a broken one.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
from pathlib import Path
from typing import IO, Iterator

from fa_contract.process import pid_alive

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:\.t\d+)?\.tmp$")


def tmp_path(path: Path) -> Path:
    """`.NAME.PID.tmp`; a thread other than the main one adds `.tTID`, so two threads of one
    process writing the same file never share a temporary file."""
    if threading.current_thread() is threading.main_thread():
        return path.with_name(f".{path.name}.{os.getpid()}.tmp")
    return path.with_name(f".{path.name}.{os.getpid()}.t{threading.get_ident()}.tmp")


def clean_stale_tmp(path: Path) -> list[Path]:
    """Remove the temporary files of `path` left by writers that no longer run."""
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP.match(p.name)
        if m and m["name"] == path.name and int(m["pid"]) != os.getpid() \
                and not pid_alive(int(m["pid"])):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file object whose content replaces `path` atomically when the block ends without an
    exception (then the temporary file is removed instead)."""
    path = Path(path)
    clean_stale_tmp(path)
    tmp = tmp_path(path)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()                       # ours, from an earlier failed attempt
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """`data` replaces `path` atomically. When the write fails (a full disk) the temporary file
    is removed and `path` is left as it was: never a truncated or 0-byte file. The OSError
    names `path`."""
    try:
        with atomic_file(path, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as e:
        if e.filename != str(path):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """`obj` as JSON (no NaN/inf), written with `write_atomic`."""
    write_atomic(path, json.dumps(obj, indent=1, allow_nan=False, default=_json_default))


def _json_default(o: object) -> object:
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def repair_partial_line(path: str | os.PathLike) -> bool:
    """Complete a last line without a newline (half an event: the writer died or the disk
    filled mid-line), so that what is appended next starts a line of its own. Readers skip the
    broken line either way; returns whether a newline was added."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return False
        os.write(fd, b"\n")
        return True
    finally:
        os.close(fd)


def open_log(path: str | os.PathLike, append: bool) -> IO[str]:
    """Open an append-only text log (events.jsonl) for writing, never through a symbolic link:
    `append` keeps what is there (after repairing a partial last line), else it is emptied."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        if append:
            repair_partial_line(path)
            fd = os.open(path, flags | os.O_APPEND, 0o644)
        else:
            fd = os.open(path, flags | os.O_TRUNC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link; refusing to write through it",
                          str(path)) from None
        raise
    return os.fdopen(fd, "a" if append else "w", encoding="utf-8")
