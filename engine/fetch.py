"""Fetch a dataset once, for every run that will read it: `python -m engine.fetch NAME ROOT`.

The launcher (fa_tui/preflight.py) runs this before it creates any run directory, so that a
sweep downloads once instead of once per worker (several processes writing the same files),
and an offline machine is told in seconds, not after every worker's 30-second timeout.
torchvision does the download (and its md5 checks) into its own layout under ROOT; its
progress goes to stderr. On failure the last line on stdout says why, and the exit status is 1.
"""
from __future__ import annotations

import socket
import sys

#: seconds a connection may stall before the fetch gives up (offline fails at once anyway)
TIMEOUT_S = 15.0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m engine.fetch NAME ROOT", file=sys.stderr)
        return 2
    name, root = args
    from engine.data import TORCHVISION
    if name not in TORCHVISION:
        print(f"{name}: not a downloadable dataset; choose from {', '.join(TORCHVISION)}")
        return 2
    socket.setdefaulttimeout(TIMEOUT_S)
    from torchvision import datasets
    cls = getattr(datasets, TORCHVISION[name]) if isinstance(TORCHVISION[name], str) else TORCHVISION[name]
    try:
        for train in (True, False):
            cls(root, train=train, download=True)
    except Exception as e:  # noqa: BLE001 — URLError, md5 mismatch, disk full: one line each
        reason = getattr(e, "reason", None) or e
        print(f"{type(e).__name__}: {reason}".splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
