"""Small dataset files in the real on-disk formats, for loading through the real loaders.

Every image carries its example number in its first two bytes (channel 0, pixels (0,0) and
(0,1)): `ids(x)` reads it back, so a test can tell which written example landed where.

- idx (MNIST, Fashion-MNIST): magic 0 0 8 ndim, big-endian int32 sizes, then the bytes.
- CIFAR python batches: protocol-2 pickles written by Python 2, so their dict keys and strings are
  Python 2 `str` (the SHORT_BINSTRING opcode): torchvision unpickles them with
  encoding="latin1" into `str` keys ('data', 'labels', ...), and encoding="bytes" gives b'data'.
  `_Py2Pickler` writes that opcode for `Py2Str`, so these files decode like the real ones.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from pathlib import Path

import torch


def ids(x: torch.Tensor) -> torch.Tensor:
    """Example numbers stamped into uint8 N×C×H×W images by the writers below."""
    return x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()


def stamped_images(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """n random uint8 images of `shape` (C, H, W) with their number in the first two bytes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n) % 256
    x[:, 0, 0, 1] = torch.arange(n) // 256
    return x


# --- idx -------------------------------------------------------------------------------------
def write_idx(path: Path, x: torch.Tensor, gz: bool = False) -> Path:
    """Write a uint8 tensor as an idx file (path + '.gz' when gz)."""
    raw = bytes([0, 0, 8, x.dim()]) + b"".join(struct.pack(">i", s) for s in x.shape)
    raw += x.contiguous().numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_mnist_like(folder: Path, n_train: int, n_test: int, gz: bool = False,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """The four MNIST idx files in `folder`; returns what was written (images N×1×28×28)."""
    out = {"train_x": stamped_images(n_train, (1, 28, 28), seed),
           "train_y": torch.arange(n_train) % 10,
           "test_x": stamped_images(n_test, (1, 28, 28), seed + 1),
           "test_y": torch.arange(n_test) % 10}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", out[f"{split}_x"][:, 0], gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", out[f"{split}_y"].to(torch.uint8), gz)
    return out


# --- CIFAR python pickles --------------------------------------------------------------------
class Py2Str(bytes):
    """A Python 2 `str`: pickled with the SHORT_BINSTRING / BINSTRING opcodes."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table is extensible
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj: Py2Str) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else \
            pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + bytes(obj))
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def _py2(obj):
    """str -> Py2Str, recursively through dicts and lists."""
    if isinstance(obj, str):
        return Py2Str(obj.encode("latin1"))
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return obj


def write_py2_pickle(path: Path, obj: dict) -> Path:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(_py2(obj))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _batch(x: torch.Tensor, labels: torch.Tensor, label_key: str, name: str) -> dict:
    """One CIFAR batch dict: 'data' is N×3072 uint8, rows in C,H,W order."""
    d = {"batch_label": name, "data": x.reshape(len(x), -1).numpy(),
         label_key: [int(v) for v in labels],
         "filenames": [f"img_{i}.png" for i in range(len(x))]}
    if label_key == "fine_labels":
        d["coarse_labels"] = [int(v) // 5 for v in labels]
    return d


def write_cifar10(root: Path, per_batch: int, n_test: int,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    n = 5 * per_batch
    out = {"train_x": stamped_images(n, (3, 32, 32), seed), "train_y": torch.arange(n) % 10,
           "test_x": stamped_images(n_test, (3, 32, 32), seed + 1),
           "test_y": torch.arange(n_test) % 10}
    for b in range(5):
        s = slice(b * per_batch, (b + 1) * per_batch)
        write_py2_pickle(folder / f"data_batch_{b + 1}",
                         _batch(out["train_x"][s], out["train_y"][s], "labels",
                                f"training batch {b + 1} of 5"))
    write_py2_pickle(folder / "test_batch",
                     _batch(out["test_x"], out["test_y"], "labels", "testing batch 1 of 1"))
    write_py2_pickle(folder / "batches.meta", {
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                        "ship", "truck"],
        "num_cases_per_batch": per_batch, "num_vis": 3072})
    return out


def write_cifar100(root: Path, n_train: int, n_test: int,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's cifar-100-python: train, test, meta."""
    folder = root / "cifar-100-python"
    out = {"train_x": stamped_images(n_train, (3, 32, 32), seed),
           "train_y": torch.arange(n_train) % 100,
           "test_x": stamped_images(n_test, (3, 32, 32), seed + 1),
           "test_y": torch.arange(n_test) % 100}
    write_py2_pickle(folder / "train", _batch(out["train_x"], out["train_y"], "fine_labels",
                                              "training batch 1 of 1"))
    write_py2_pickle(folder / "test", _batch(out["test_x"], out["test_y"], "fine_labels",
                                             "testing batch 1 of 1"))
    write_py2_pickle(folder / "meta", {
        "fine_label_names": [f"class_{i}" for i in range(100)],
        "coarse_label_names": [f"super_{i}" for i in range(20)]})
    return out


def md5_checked(cls: type, root: Path) -> type:
    """A subclass of torchvision's CIFAR10/CIFAR100 whose md5 table lists the files written
    under `root` instead of the official ones: torchvision's own integrity check and loading
    code then run unchanged against the small files."""
    folder = root / cls.base_folder

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    return type(f"Local{cls.__name__}", (cls,), {
        "train_list": [[n, md5(n)] for n, _ in cls.train_list],
        "test_list": [[n, md5(n)] for n, _ in cls.test_list],
        "meta": {**cls.meta, "md5": md5(cls.meta["filename"])},
    })
