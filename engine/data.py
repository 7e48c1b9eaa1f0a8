"""Datasets as device-resident tensors, and seeded mini-batches drawn from them.

The whole dataset lives on the device (CIFAR-10's training set is 150 MB as uint8), so a training
step never waits for a host-to-device copy: images are kept as uint8 N×C×H×W and turned into
normalised floats one batch at a time, augmentation included, with no per-sample Python.

Every random choice is a pure function of seeds, never of the global RNG:
- the validation split: a permutation seeded by the run seed (the last `val_size` examples of it);
- the synthetic task: a fixed teacher and inputs seeded by the data config alone, so all runs of a
  sweep see the same task;
- the batch order of epoch e: a permutation seeded by (seed, e), so resuming at batch `start`
  reproduces the interrupted epoch exactly; augmentation is seeded by (seed, e, batch index).
"""
from __future__ import annotations

import gzip
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from fa_contract.config import DataCfg
from fa_contract.data_files import data_root, find_files, missing_files, search_dirs

# The torchvision classes that read (and download) each dataset in torchvision's own layout.
#: torchvision dataset class per name, by class name so that torchvision (which doubles a
#: worker's start-up) is imported only when a torchvision dataset is actually loaded.
TORCHVISION: dict[str, str | type] = {
    "mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
AUGMENTED = ("cifar10", "cifar100")
CROP_PAD = 4            # CIFAR augmentation: random crop of the image zero-padded by 4 pixels
TEACHER_HIDDEN = 32     # synthetic 'mlp' teacher: tanh hidden units
TEACHER_CHUNK = 8192    # synthetic: examples labelled at a time (bounds the float64 copy)


@dataclass
class Splits:
    """Train / validation / test tensors on one device. Images are uint8 N×C×H×W (turn them
    into model inputs with `normalise`); synthetic inputs are float32, already standardised.
    The test split is for the final test figure only."""
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    classes: int
    mean: torch.Tensor  # per channel, in [0, 1] pixel units, of the training split
    std: torch.Tensor


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from a tuple of ints and strings, the same in every process and on every
    machine (Python's hash() of a string is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def _generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


# --- reading files ---------------------------------------------------------------------------
def read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte idx file (the MNIST format: magic 0 0 8 ndim, ndim big-endian int32
    sizes, then the bytes), plain or gzipped, as a uint8 tensor of its stored shape."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=4 + 4 * ndim)
    if data.numel() != math.prod(shape):
        raise ValueError(f"{path}: header says {shape} but holds {data.numel()} bytes")
    return data.view(shape)


def _as_nchw(images) -> torch.Tensor:
    """torchvision's `.data`: MNIST N×H×W (tensor), CIFAR N×H×W×C (numpy) -> uint8 N×C×H×W."""
    x = torch.as_tensor(images)
    return (x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)).contiguous()


def _from_torchvision(cfg: DataCfg) -> tuple[torch.Tensor, ...]:
    """Train and test through torchvision's class. The worker never downloads: the launcher
    fetched the files once (engine/fetch.py) before any run existed."""
    cls, root = TORCHVISION[cfg.name], str(data_root(cfg))
    if isinstance(cls, str):
        from torchvision import datasets
        cls = getattr(datasets, cls)
    try:
        parts = [cls(root, train=train, download=False) for train in (True, False)]
    except (RuntimeError, OSError) as e:  # offline downloads raise URLError, an OSError
        hint = missing_files(cfg) or (
            f"The files in {search_dirs(cfg)[0]} are there but torchvision rejected them (a "
            f"partial or corrupt copy fails its md5 check): delete them and download again.")
        raise RuntimeError(f"{cfg.name}: torchvision could not load the dataset: {e}\n{hint}") from e
    return tuple(t for d in parts
                 for t in (_as_nchw(d.data), torch.as_tensor(d.targets, dtype=torch.long)))


def _load_files(cfg: DataCfg) -> tuple[torch.Tensor, ...]:
    """(train_x, train_y, test_x, test_y) on the CPU. torchvision's classes read their own
    layout (and download); gzipped idx files and the Debian fashion-mnist package, which they
    do not accept, are read directly."""
    files = find_files(cfg)
    own = search_dirs(cfg)[0]
    if files is None or all(p.parent == own and p.suffix != ".gz" for p in files.values()):
        return _from_torchvision(cfg)
    x_tr, y_tr, x_te, y_te = (read_idx(files[n]) for n in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    return x_tr.unsqueeze(1), y_tr.long(), x_te.unsqueeze(1), y_te.long()


# --- the synthetic teacher task --------------------------------------------------------------
def _unit_rows(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    """A random rows×cols matrix, as orthogonal as its shape allows (orthonormal rows, or
    orthonormal columns when rows > cols), with every row rescaled to unit norm: fed iid N(0, 1)
    inputs, every output is N(0, 1), and independent when rows <= cols."""
    q, r = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=g,
                                       dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # Haar-distributed, not biased by the QR convention
    w = q if rows > cols else q.T
    return w / w.norm(dim=1, keepdim=True)


def _teacher(cfg: DataCfg, g: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """A fixed random network, x -> label. Orthogonal unit-norm weights make the class logits
    (nearly) exchangeable, so the argmax classes come out balanced without any fitted offsets;
    tanh is odd, so the logits have mean zero. float64 keeps near-ties from flipping between
    machines."""
    d, k = math.prod(cfg.shape), cfg.classes
    if cfg.teacher == "linear":
        w = _unit_rows(k, d, g)
        logits = lambda x: x @ w.T  # noqa: E731
    else:
        w1, w2 = _unit_rows(TEACHER_HIDDEN, d, g), _unit_rows(k, TEACHER_HIDDEN, g)
        logits = lambda x: torch.tanh(x @ w1.T) @ w2.T  # noqa: E731
    return lambda x: torch.cat([logits(c.flatten(1).double()).argmax(1)
                                for c in x.split(TEACHER_CHUNK)])


def _synthetic(cfg: DataCfg) -> tuple[torch.Tensor, ...]:
    """Gaussian inputs labelled by the teacher. Seeds come from the task (shape, classes,
    teacher) only: not the run seed, and not the sizes, so every run of a sweep sees the same
    task, and changing train_size draws from the same teacher and leaves the test set alone."""
    task = ("synthetic", tuple(cfg.shape), cfg.classes, cfg.teacher)
    label = _teacher(cfg, _generator(*task, "teacher"))
    out = []
    for part, n in (("train", cfg.train_size), ("test", cfg.test_size)):
        x = torch.randn(n, *cfg.shape, generator=_generator(*task, part))
        out += [x, label(x)]
    return tuple(out)


# --- splits ----------------------------------------------------------------------------------
def _keep_classes(x: torch.Tensor, y: torch.Tensor, subset: list[int],
                  classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Only the listed classes, relabelled 0..k-1 in the listed order."""
    new = torch.full((classes,), -1, dtype=torch.long)
    new[torch.tensor(subset)] = torch.arange(len(subset))
    y = new[y]
    keep = y >= 0
    return x[keep], y[keep]


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of uint8 images, in [0, 1] units, from 256-bin
    histograms (no float copy of the dataset)."""
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256)
                          for c in range(x.shape[1])]).double()
    v = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(1)
    mean = counts @ v / n
    var = counts @ v.square() / n - mean.square()
    # a constant channel would divide by zero; 1/255 is one grey level
    return mean.float(), var.clamp_min(0).sqrt().clamp_min(1 / 255).float()


def load_data(cfg: DataCfg, seed: int, device: torch.device | str) -> Splits:
    """Load `cfg`'s dataset onto `device`, with `cfg.val_size` training examples held out for
    validation by a permutation seeded by `seed`. Raises FileNotFoundError (with
    data_files.missing_files's message) when the files are absent: the launcher fetches them,
    a worker never downloads."""
    if cfg.name == "synthetic":
        train_x, train_y, test_x, test_y = _synthetic(cfg)
        classes = cfg.classes
    else:
        problem = missing_files(cfg)
        if problem:
            raise FileNotFoundError(problem)
        train_x, train_y, test_x, test_y = _load_files(cfg)
        classes = CLASSES[cfg.name]

    if cfg.subset is not None:
        bad = [c for c in cfg.subset if not 0 <= c < classes]
        if bad:
            raise ValueError(f"data.subset: {cfg.name} has classes 0..{classes - 1}, not {bad}")
        train_x, train_y = _keep_classes(train_x, train_y, cfg.subset, classes)
        test_x, test_y = _keep_classes(test_x, test_y, cfg.subset, classes)
        classes = len(cfg.subset)

    n = len(train_x)
    if cfg.val_size >= n:
        kept = f" (subset of {classes} classes)" if cfg.subset is not None else ""
        raise ValueError(f"data.val_size ({cfg.val_size}) must be smaller than the {n} training "
                         f"examples of {cfg.name}{kept}")
    perm = torch.randperm(n, generator=_generator("val", seed))
    train, val = perm[:n - cfg.val_size], perm[n - cfg.val_size:]

    if train_x.dtype == torch.uint8:
        mean, std = _channel_stats(train_x[train])
    else:
        channels = cfg.shape[0] if len(cfg.shape) == 3 else 1
        mean, std = torch.zeros(channels), torch.ones(channels)

    device = torch.device(device)
    return Splits(name=cfg.name,
                  train_x=train_x[train].to(device), train_y=train_y[train].to(device),
                  val_x=train_x[val].to(device), val_y=train_y[val].to(device),
                  test_x=test_x.to(device), test_y=test_y.to(device),
                  input_shape=tuple(train_x.shape[1:]), classes=classes,
                  mean=mean.to(device), std=std.to(device))


# --- batches ---------------------------------------------------------------------------------
def normalise(x: torch.Tensor, splits: Splits) -> torch.Tensor:
    """uint8 images -> float32 with the training split's per-channel mean 0 and std 1. Float
    data (synthetic) is stored standardised already and passes through unchanged."""
    if x.dtype != torch.uint8:
        return x
    shape = (-1,) + (1,) * (x.dim() - 2)
    return (x.float() - 255 * splits.mean.view(shape)) / (255 * splits.std.view(shape))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Batched CIFAR augmentation of uint8 N×C×H×W: each image is cropped back to H×W from its
    CROP_PAD-pixel zero padding at a random offset, then flipped left-right with probability
    1/2 (torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip, on the whole batch).
    `gen` must live on x's device."""
    n, c, h, w = x.shape
    p, dev = CROP_PAD, x.device
    padded = F.pad(x, (p, p, p, p))
    off = torch.randint(0, 2 * p + 1, (2, n, 1), generator=gen, device=dev)
    rows = (off[0] + torch.arange(h, device=dev))[:, None, :, None].expand(n, c, h, w + 2 * p)
    cols = (off[1] + torch.arange(w, device=dev))[:, None, None, :].expand(n, c, h, w)
    out = padded.gather(2, rows).gather(3, cols)
    flip = torch.rand(n, generator=gen, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


class Batches:
    """Training mini-batches of normalised floats, on the device.

    The order of epoch e is a permutation seeded by (seed, e) and batch i's augmentation is
    seeded by (seed, e, i), so `epoch(e, start)` reproduces an interrupted epoch exactly from
    batch `start`. The last partial batch is dropped: every step sees `batch_size` examples and
    `steps_per_epoch = len(train) // batch_size`. Augmentation applies to CIFAR only."""

    def __init__(self, splits: Splits, batch_size: int, seed: int, augment: bool,
                 device: torch.device | str) -> None:
        n = len(splits.train_x)
        if batch_size > n:
            raise ValueError(f"train.batch_size ({batch_size}) exceeds the {n} training examples")
        self.splits = splits
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment and splits.name in AUGMENTED
        self.device = torch.device(device)
        self.steps_per_epoch = n // batch_size
        self._gen = torch.Generator(device=self.device)

    def order(self, e: int) -> torch.Tensor:
        """Epoch e's permutation of the training set (drawn on the CPU: the same on any device)."""
        return torch.randperm(len(self.splits.train_x), generator=_generator("epoch", self.seed, e))

    def epoch(self, e: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches start, start+1, ... of epoch e as (float inputs, int64 labels)."""
        s, b = self.splits, self.batch_size
        perm = self.order(e).to(self.device)
        for i in range(start, self.steps_per_epoch):
            idx = perm[i * b:(i + 1) * b]
            x = s.train_x[idx]
            if self.augment:
                x = augment(x, self._gen.manual_seed(mix_seed("augment", self.seed, e, i)))
            yield normalise(x, s), s.train_y[idx]


def eval_batches(x: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (x, y) slices, the last one partial, as stored (uint8 images stay uint8:
    normalise them); no shuffling, no augmentation."""
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]
