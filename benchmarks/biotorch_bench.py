"""The engine against BioTorch 0.0.16 (Sanfiz & Akrout 2021), same models, same batches.

    python benchmarks/biotorch_bench.py               # installs BioTorch into a temp dir
    python benchmarks/biotorch_bench.py --target DIR  # or into / from DIR (kept)

BioTorch is installed with `pip install --no-deps --target DIR biotorch==0.0.16` into a
throwaway directory (its pinned dependencies would downgrade torch; it runs unpatched on
today's torch without them) and imported from there; nothing else is touched. Where that
cannot be done (no pip, no network, the import fails) the table is replaced by one line saying
why, and the exit status is still 0.

Sides, per model: the engine's bp, fa and dfa (the real `Trainer.events()` loop, train events
and all), BioTorch's fa twice (the null control) and its dfa. engine bp / BioTorch fa is the
floor of engine fa / BioTorch fa: fa does bp's arithmetic with B in place of W, so where
the matrix products set the pace no fa can be much cheaper than bp. BioTorch's loop is its own recipe: a
`BioModule` around the same `build_model` network, plain SGD, and for dfa the forward that
takes `targets` and `loss_function` (BioTorch computes the output error there). Method and
columns: benchmarks/_bench.py.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from _bench import HEADER, Side, compare, cycle, machine, one_thread, peak_rss_gb, ratio
from fa_contract.config import Config, MetricsCfg
from engine.data import Batches
from engine.models import build_model
from engine.train import Trainer
from engine_bench import MODELS, contiguous, cpu_config, engine_side

VERSION = "0.0.16"


def install(target: Path) -> str | None:
    """Make `import biotorch` work from `target`; None when it does, else why not."""
    if not (target / "biotorch").is_dir():
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
               "--disable-pip-version-check", "--target", str(target), f"biotorch=={VERSION}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"`{' '.join(cmd[2:])}` could not run: {e}"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return f"`pip install biotorch=={VERSION}` failed: {last}"
    sys.path.insert(0, str(target))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import biotorch.module.biomodule  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure is a reason to skip
        return f"biotorch {VERSION} does not import with torch {torch.__version__}: {e!r}"
    return None


def biotorch_side(cfg: Config, mode: str) -> Side:
    """BioTorch's training step on the engine's model and batches."""
    from biotorch.module.biomodule import BioModule
    tr = Trainer(cfg.model_copy(update={"metrics": MetricsCfg(every=0)}))  # for its data only
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, cfg.norm, tr.data.input_shape, tr.data.classes)
    with contextlib.redirect_stdout(io.StringIO()):         # BioTorch prints a report
        bio = BioModule(model, mode=mode, output_dim=tr.data.classes)
    opt = torch.optim.SGD([p for p in bio.parameters() if p.requires_grad], lr=cfg.optim.lr,
                          momentum=cfg.optim.momentum)
    stream = cycle(Batches(tr.data, cfg.train.batch_size, cfg.run.seed, False, "cpu").epoch)
    del tr

    def run(n: int) -> None:
        for _ in range(n):
            x, y = next(stream)
            out = (bio(x, targets=y, loss_function=F.cross_entropy) if mode == "dfa"
                   else bio(x))
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()
    return run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--target", type=Path, help="install BioTorch here and keep it")
    args = p.parse_args()
    one_thread()
    print(f"Machine: {machine()}\n", flush=True)
    with contextlib.ExitStack() as stack:
        target = args.target or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="biotorch-")))
        reason = install(target)
        if reason:
            print(f"BioTorch comparison skipped: {reason}\n")
            return
        print(f"BioTorch {VERSION}, installed with `pip install --no-deps --target`.\n")
        for label, model, shape, batch in MODELS[1:]:
            cfg = {rule: cpu_config(model, rule, shape, batch) for rule in ("bp", "fa", "dfa")}
            sides = {"bp": engine_side(cfg["bp"]),
                     "fa": engine_side(cfg["fa"]), "dfa": engine_side(cfg["dfa"]),
                     "bio fa": biotorch_side(cfg["fa"], "fa"),
                     "bio fa′": biotorch_side(cfg["fa"], "fa"),
                     "bio dfa": biotorch_side(cfg["dfa"], "dfa")}
            conv = model["name"] == "cnn"
            if conv:      # the engine trains convnets channels_last; BioTorch as it is built
                sides["fa (contiguous)"] = engine_side(contiguous(cfg["fa"]))
            rounds = max(7, args.rounds - 4) if conv else args.rounds
            t = compare(sides, rounds)
            print(f"**{label}** ({rounds} rounds)\n")
            print(HEADER)
            for row in (ratio(t, "bio fa′", "bio fa", "null control: BioTorch fa′ / fa", "≈ 1"),
                        ratio(t, "fa", "bio fa", "engine fa / BioTorch fa", "≤ 0.90"),
                        *([ratio(t, "fa (contiguous)", "bio fa", "engine fa, channels_last "
                                 "off / BioTorch fa", "")] if conv else []),
                        ratio(t, "dfa", "bio dfa", "engine dfa / BioTorch dfa", "≤ 0.90"),
                        ratio(t, "bp", "bio fa", "engine **bp** / BioTorch fa (a floor for "
                              "any fa)", "")):
                print(row.row())
            print(flush=True)
            del sides
    print(f"Peak memory of this benchmark process: {peak_rss_gb():.2f} GB\n")


if __name__ == "__main__":
    main()
