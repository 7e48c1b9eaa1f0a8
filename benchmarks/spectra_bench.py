"""How to take singular values of probe-sized matrices fast on a device, and how accurately.

    python benchmarks/spectra_bench.py [--device cuda]

Diagnostics need only the spectrum (erank, participation ratio) of wide N × D matrices (errors
and activations: N = the probe size, D up to 65536) and of weight-gradient matrices. Methods:
  qr+svd     R of a QR of the tall orientation, then svdvals (engine/metrics.py on the CPU)
  gram64     the fp64 Gram matrix's eigenvalues on the device (one GEMM, one N×N eigvalsh)
  gram64cpu  the fp64 Gram on the device, its eigenvalues on the host (engine.metrics.EIGH_ON_HOST)
Prints median ms per matrix and the erank's relative error against fp64 svdvals on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.metrics import erank_from_sv, singular_values


def gram_sv(m: torch.Tensor, host: bool) -> torch.Tensor:
    m = m.double()
    g = m @ m.t() if m.shape[0] <= m.shape[1] else m.t() @ m
    if host:
        g = g.cpu()
    return torch.linalg.eigvalsh(g).clamp_min(0).sqrt().flip(0)


METHODS = {"qr+svd": singular_values, "gram64": lambda m: gram_sv(m, False),
           "gram64cpu": lambda m: gram_sv(m, True)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"| shape | {' | '.join(f'{k} ms | {k} err' for k in METHODS)} |")
    for shape in [(256, 65536), (256, 16384), (256, 4096), (256, 512), (512, 4608), (64, 576),
                  (10, 800)]:
        # a spread spectrum, like a trained layer's: singular values decaying over 4 decades
        u = torch.linalg.qr(torch.randn(shape[0], min(shape), dtype=torch.float64)).Q
        v = torch.linalg.qr(torch.randn(shape[1], min(shape), dtype=torch.float64)).Q
        s = torch.logspace(0, -4, min(shape), dtype=torch.float64)
        m64 = (u * s) @ v.t()
        ref = erank_from_sv(torch.linalg.svdvals(m64))
        m = m64.float().to(dev)
        cells = []
        for fn in METHODS.values():
            fn(m)
            sync()
            times = []
            for _ in range(5):
                t = time.perf_counter()
                sv = fn(m)
                sync()
                times.append(time.perf_counter() - t)
            err = abs(erank_from_sv(sv.cpu().float()) - ref) / ref
            cells.append(f"{statistics.median(times) * 1e3:.2f} | {err:.1e}")
        print(f"| {shape[0]}×{shape[1]} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
