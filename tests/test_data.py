"""engine.data and fa_contract.data_files against small files in the real on-disk formats (written by
tests/datafiles.py), the real Debian Fashion-MNIST files when installed, and the synthetic task."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from platformdirs import user_cache_dir
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file

from datafiles import (ids, md5_checked, stamped_images, write_cifar10, write_cifar100,
                       write_idx, write_mnist_like)
from engine import data
from fa_contract import data_files
from fa_contract.config import DataCfg
from engine.data import Batches, Splits, augment, eval_batches, load_data, normalise, read_idx
from fa_contract.data_files import data_root, find_files, missing_files

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """Point the Debian fashion-mnist folder at an empty one, whether or not it is installed."""
    monkeypatch.setitem(data_files.SYSTEM_DIRS, "fashion_mnist", [tmp_path / "no-debian"])
    return tmp_path / "no-debian"


def cfg(name: str, root: Path | None, **kw) -> DataCfg:
    return DataCfg(name=name, root=str(root) if root else None, download=False, **kw)


def check_split(s: Splits, written: dict[str, torch.Tensor], val_size: int) -> None:
    """train and val are a partition of the written train set, every image and label intact;
    test is the written test set in order."""
    n = len(written["train_x"])
    assert (len(s.train_x), len(s.val_x)) == (n - val_size, val_size)
    tr, va = ids(s.train_x), ids(s.val_x)
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(n))
    for x, y, i in ((s.train_x, s.train_y, tr), (s.val_x, s.val_y, va)):
        assert torch.equal(x, written["train_x"][i]) and torch.equal(y, written["train_y"][i])
    assert torch.equal(s.test_x, written["test_x"]) and torch.equal(s.test_y, written["test_y"])
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64


# --- data_files ------------------------------------------------------------------------------
def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("FA_TUI_DATA", raising=False)
    assert data_root(DataCfg()) == Path(user_cache_dir("fa-tui")) / "data"
    monkeypatch.setenv("FA_TUI_DATA", str(tmp_path / "env"))
    assert data_root(DataCfg()) == tmp_path / "env"
    assert data_root(DataCfg(root=str(tmp_path / "cfg"))) == tmp_path / "cfg"


@pytest.mark.parametrize("name,folder,files", [
    ("mnist", "MNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("fashion_mnist", "FashionMNIST/raw", ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]),
    ("cifar10", "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch",
                                        "batches.meta"]),
    ("cifar100", "cifar-100-python", ["train", "test", "meta"]),
])
def test_missing_files_message(tmp_path, no_system_dirs, name, folder, files):
    msg = missing_files(cfg(name, tmp_path))
    assert msg is not None and msg.startswith(name)
    assert str(tmp_path / folder) in msg and "missing: all" in msg
    assert all(f in msg for f in files)
    assert "data.download = true" in msg
    assert ("apt-get install dataset-fashion-mnist" in msg) == (name == "fashion_mnist")
    assert (str(no_system_dirs) in msg) == (name == "fashion_mnist")
    assert missing_files(cfg(name, tmp_path), allow_download=True) is None
    with pytest.raises(FileNotFoundError) as e:
        load_data(cfg(name, tmp_path), 0, "cpu")
    assert str(e.value) == msg


def test_missing_files_names_what_each_folder_lacks(tmp_path, no_system_dirs):
    write_mnist_like(tmp_path / "FashionMNIST/raw", 20, 10)
    (tmp_path / "FashionMNIST/raw/t10k-labels-idx1-ubyte").unlink()
    msg = missing_files(cfg("fashion_mnist", tmp_path))
    line = next(ln for ln in msg.splitlines() if str(tmp_path / "FashionMNIST/raw") in ln)
    assert line.endswith("(missing: t10k-labels-idx1-ubyte)")
    assert missing_files(DataCfg(name="synthetic")) is None


def test_find_files_takes_gz_and_system_dirs(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    monkeypatch.setitem(data_files.SYSTEM_DIRS, "fashion_mnist", [debian])
    c = cfg("fashion_mnist", tmp_path / "root")
    assert find_files(c) is None
    write_mnist_like(debian, 20, 10, gz=True)
    assert find_files(c) == {n: debian / f"{n}.gz" for n in data_files.IDX_FILES}
    assert missing_files(c) is None
    write_mnist_like(tmp_path / "root/FashionMNIST/raw", 20, 10)  # torchvision's layout wins
    assert find_files(c)["train-images-idx3-ubyte"].parent == tmp_path / "root/FashionMNIST/raw"


# --- real formats ----------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_matches_torchvision(tmp_path, gz):
    x = stamped_images(7, (1, 28, 28), 0)[:, 0]
    y = torch.arange(7, dtype=torch.uint8)
    px, py = write_idx(tmp_path / "img", x, gz), write_idx(tmp_path / "lab", y, gz)
    assert torch.equal(read_idx(px), x) and torch.equal(read_idx(py), y)
    if not gz:  # torchvision reads the plain files only
        assert torch.equal(read_image_file(str(px)), x)
        assert torch.equal(read_label_file(str(py)), y.long())


def test_read_idx_rejects_other_formats(tmp_path):
    floats = tmp_path / "floats"
    floats.write_bytes(b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + bytes(16))  # float32 idx
    short = write_idx(tmp_path / "short", torch.zeros(3, 2, dtype=torch.uint8))
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="not an unsigned-byte idx"):
        read_idx(floats)
    with pytest.raises(ValueError, match=r"header says \[3, 2\] but holds 5 bytes"):
        read_idx(short)


def test_mnist_through_torchvision(tmp_path):
    written = write_mnist_like(tmp_path / "MNIST/raw", 60, 20)
    s = load_data(cfg("mnist", tmp_path, val_size=12), seed=3, device="cpu")
    check_split(s, written, 12)
    assert (s.name, s.input_shape, s.classes) == ("mnist", (1, 28, 28), 10)
    # the same tensors as torchvision's MNIST class hands out
    tv = datasets.MNIST(str(tmp_path), train=False)
    assert torch.equal(s.test_x[:, 0], tv.data) and torch.equal(s.test_y, tv.targets)


def test_gzipped_idx_in_torchvision_layout(tmp_path, no_system_dirs):
    written = write_mnist_like(tmp_path / "FashionMNIST/raw", 50, 20, gz=True, seed=5)
    s = load_data(cfg("fashion_mnist", tmp_path, val_size=10), seed=0, device="cpu")
    check_split(s, written, 10)


def test_fashion_mnist_from_system_dir(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    monkeypatch.setitem(data_files.SYSTEM_DIRS, "fashion_mnist", [debian])
    written = write_mnist_like(debian, 40, 20, gz=True, seed=2)
    s = load_data(cfg("fashion_mnist", tmp_path / "empty-root", val_size=8), 1, "cpu")
    check_split(s, written, 8)


@pytest.mark.skipif(not all((DEBIAN / f"{n}.gz").is_file() for n in data_files.IDX_FILES),
                    reason="Debian package dataset-fashion-mnist not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_real_debian_fashion_mnist(tmp_path):
    s = load_data(cfg("fashion_mnist", tmp_path / "empty-root", val_size=5000), 0, "cpu")
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (55000, 5000, 10000)
    assert s.train_x.shape[1:] == (1, 28, 28) and s.train_x.dtype == torch.uint8
    all_y = torch.cat([s.train_y, s.val_y])
    assert torch.bincount(all_y).tolist() == [6000] * 10  # Fashion-MNIST is exactly balanced
    assert torch.bincount(s.test_y).tolist() == [1000] * 10
    # Fashion-MNIST's published training-set mean and std: 0.2860, 0.3530
    assert abs(s.mean.item() - 0.2860) < 2e-3 and abs(s.std.item() - 0.3530) < 2e-3


def test_cifar10_through_torchvision(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, per_batch=8, n_test=10)
    # Without the official md5s the files are rejected, with a clear message.
    with pytest.raises(RuntimeError, match="md5") as e:
        load_data(cfg("cifar10", tmp_path, val_size=5), 0, "cpu")
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value)
    monkeypatch.setitem(data.TORCHVISION, "cifar10", md5_checked(datasets.CIFAR10, tmp_path))
    s = load_data(cfg("cifar10", tmp_path, val_size=5), 0, "cpu")
    check_split(s, written, 5)
    assert (s.input_shape, s.classes) == ((3, 32, 32), 10)


def test_cifar100_subset_relabelled(tmp_path, monkeypatch):
    write_cifar100(tmp_path, n_train=400, n_test=200)
    monkeypatch.setitem(data.TORCHVISION, "cifar100", md5_checked(datasets.CIFAR100, tmp_path))
    subset = [42, 7, 99]
    s = load_data(cfg("cifar100", tmp_path, val_size=3, subset=subset), 0, "cpu")
    assert s.classes == 3
    assert (len(s.train_x) + len(s.val_x), len(s.test_x)) == (12, 6)  # 4 and 2 per class
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        assert y.tolist() == [subset.index(c % 100) for c in ids(x).tolist()]
    for c in (100, -1):
        with pytest.raises(ValueError, match="subset"):
            load_data(cfg("cifar100", tmp_path, val_size=3, subset=[1, c]), 0, "cpu")
    with pytest.raises(ValueError, match=r"val_size \(12\).*12 training examples.*subset"):
        load_data(cfg("cifar100", tmp_path, val_size=12, subset=subset), 0, "cpu")


# --- splits ----------------------------------------------------------------------------------
def test_val_split_seeded(tmp_path):
    write_mnist_like(tmp_path / "MNIST/raw", 60, 10)
    c = cfg("mnist", tmp_path, val_size=20)
    a, b, other = (load_data(c, seed, "cpu") for seed in (4, 4, 5))
    assert torch.equal(ids(a.val_x), ids(b.val_x)) and torch.equal(ids(a.train_x), ids(b.train_x))
    assert not torch.equal(ids(a.val_x).sort().values, ids(other.val_x).sort().values)
    with pytest.raises(ValueError, match=r"val_size \(60\).*60 training examples of mnist"):
        load_data(cfg("mnist", tmp_path, val_size=60), 0, "cpu")
    assert len(load_data(cfg("mnist", tmp_path, val_size=0), 0, "cpu").val_x) == 0


def test_channel_stats_exact_and_normalise(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_batch=20, n_test=4)
    monkeypatch.setitem(data.TORCHVISION, "cifar10", md5_checked(datasets.CIFAR10, tmp_path))
    s = load_data(cfg("cifar10", tmp_path, val_size=30), 0, "cpu")
    f = s.train_x.double() / 255
    assert torch.allclose(s.mean.double(), f.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(s.std.double(), f.std((0, 2, 3), correction=0), atol=1e-6)
    z = normalise(s.train_x, s)
    assert z.dtype == torch.float32 and z.shape == s.train_x.shape
    assert z.mean((0, 2, 3)).abs().max() < 1e-4
    assert (z.std((0, 2, 3), correction=0) - 1).abs().max() < 1e-4


# --- synthetic -------------------------------------------------------------------------------
def test_synthetic_fixed_task():
    c = DataCfg(name="synthetic", shape=[1, 8, 8], train_size=600, test_size=200, val_size=100)
    a, b, other_seed = load_data(c, 0, "cpu"), load_data(c, 0, "cpu"), load_data(c, 9, "cpu")
    for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    # the run seed only moves the val split: the task and the test set stay the same
    assert torch.equal(a.test_x, other_seed.test_x) and torch.equal(a.test_y, other_seed.test_y)
    key = lambda s: torch.cat([s.train_x, s.val_x]).flatten(1).sum(1).sort()  # noqa: E731
    assert torch.equal(key(a).values, key(other_seed).values)
    # train_size draws from the same task: same teacher, same test set
    bigger = load_data(c.model_copy(update={"train_size": 900}), 0, "cpu")
    assert torch.equal(a.test_x, bigger.test_x) and torch.equal(a.test_y, bigger.test_y)
    assert a.train_x.dtype == torch.float32 and a.train_x.shape == (500, 1, 8, 8)
    assert (a.input_shape, a.classes) == ((1, 8, 8), 10)
    assert abs(a.train_x.mean().item()) < 0.02 and abs(a.train_x.std().item() - 1) < 0.02
    assert normalise(a.train_x, a) is a.train_x  # stored standardised already
    other_task = load_data(c.model_copy(update={"teacher": "linear"}), 0, "cpu")
    assert not torch.equal(a.test_y, other_task.test_y)


@pytest.mark.parametrize("teacher,shape,classes,min_acc", [
    ("linear", [30], 10, 0.8), ("mlp", [1, 28, 28], 10, 0.4), ("mlp", [30], 4, 0.7)])
def test_synthetic_balanced_and_learnable(teacher, shape, classes, min_acc):
    """Every class near 1/k of the labels, and a least-squares linear readout fitted on the
    training split classifies the test split far above chance."""
    c = DataCfg(name="synthetic", teacher=teacher, shape=shape, classes=classes,
                train_size=4096, test_size=1024, val_size=512)
    s = load_data(c, 0, "cpu")
    counts = torch.bincount(torch.cat([s.train_y, s.val_y, s.test_y]), minlength=classes)
    mean = counts.double().mean()
    assert ((counts - mean).abs() < 0.15 * mean).all(), counts
    one = lambda x: F.pad(x.flatten(1), (0, 1), value=1.0)  # noqa: E731
    w = torch.linalg.lstsq(one(s.train_x), F.one_hot(s.train_y, classes).float()).solution
    acc = (one(s.test_x) @ w).argmax(1).eq(s.test_y).float().mean().item()
    assert acc > min_acc


# --- batches ---------------------------------------------------------------------------------
def tiny_splits(name: str = "cifar10", n: int = 50, device: str = "cpu") -> Splits:
    """Training images whose label is their number (so a batch says which examples it holds)."""
    x = stamped_images(n, (3, 32, 32), 0).to(device)
    y = torch.arange(n, device=device)
    stat = torch.full((3,), 0.5, device=device)
    return Splits(name, x, y, x[:0], y[:0], x[:4], y[:4], (3, 32, 32), n, stat, stat / 2)


@pytest.mark.parametrize("device", DEVICES)
def test_batches_order_is_a_function_of_seed_and_epoch(device):
    s = tiny_splits("mnist", device=device)  # no augmentation for mnist
    b = Batches(s, 8, seed=1, augment=True, device=device)
    assert b.steps_per_epoch == 6 and not b.augment
    epoch = lambda bs, e: [y for _, y in bs.epoch(e)]  # noqa: E731
    ys = epoch(b, 0)
    assert len(ys) == 6 and all(len(y) == 8 for y in ys)  # the last 2 examples are dropped
    assert len(set(torch.cat(ys).tolist())) == 48  # no example twice in an epoch
    assert all(torch.equal(u, v) for u, v in zip(ys, epoch(Batches(s, 8, 1, True, device), 0)))
    assert not torch.equal(torch.cat(ys), torch.cat(epoch(b, 1)))
    assert not torch.equal(torch.cat(ys), torch.cat(epoch(Batches(s, 8, 2, True, device), 0)))
    for x, y in b.epoch(0):
        assert torch.equal(x, normalise(s.train_x[y], s)) and x.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_resume_mid_epoch_reproduces_batches(device):
    s = tiny_splits(device=device)
    full = list(Batches(s, 8, 3, True, device).epoch(2))
    resumed = list(Batches(s, 8, 3, True, device).epoch(2, start=4))
    assert len(resumed) == 2
    for (x1, y1), (x2, y2) in zip(full[4:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("device", DEVICES)
def test_augmentation_deterministic_and_fresh_each_epoch(device):
    s = tiny_splits(device=device)
    b1, b2 = Batches(s, 10, 0, True, device), Batches(s, 10, 0, True, device)
    assert b1.augment
    by_example = lambda bs, e: {int(j): x for xs, ys in bs.epoch(e)  # noqa: E731
                                for x, j in zip(xs, ys)}
    e0, e0_again, e1 = by_example(b1, 0), by_example(b2, 0), by_example(b1, 1)
    assert all(torch.equal(e0[j], e0_again[j]) for j in e0)
    assert all(x.shape == (3, 32, 32) for x in e0.values())
    common = set(e0) & set(e1)
    assert sum(not torch.equal(e0[j], e1[j]) for j in common) > 0.8 * len(common)
    plain = normalise(s.train_x, s)
    assert sum(not torch.equal(e0[j], plain[j]) for j in e0) > 0.8 * len(e0)


@pytest.mark.parametrize("device", DEVICES)
def test_augment_is_crop_of_zero_padding_and_flip(device):
    x = torch.randint(1, 256, (24, 3, 12, 12), dtype=torch.uint8, device=device)
    g = torch.Generator(device=device)
    out = augment(x, g.manual_seed(7))
    assert torch.equal(out, augment(x, g.manual_seed(7)))
    assert not torch.equal(out, augment(x, g.manual_seed(8)))
    padded = F.pad(x, (4, 4, 4, 4))
    seen = set()
    for i in range(len(x)):  # brute force: which crop offset and flip made image i
        hits = [(dy, dx, fl) for dy, dx, fl in itertools.product(range(9), range(9), (0, 1))
                if torch.equal(out[i], (lambda c: c.flip(2) if fl else c)(
                    padded[i, :, dy:dy + 12, dx:dx + 12]))]
        assert len(hits) == 1  # pixels are non-zero, so exactly one candidate matches
        seen.add(hits[0])
    assert len(seen) > 12 and {fl for *_, fl in seen} == {0, 1}


def test_no_global_rng_use(tmp_path):
    state = torch.get_rng_state()
    s = load_data(DataCfg(name="synthetic", shape=[3, 4, 4], train_size=64, test_size=16,
                          val_size=16), 0, "cpu")
    list(Batches(tiny_splits(), 8, 0, True, "cpu").epoch(0))
    assert len(s.train_x) == 48 and torch.equal(torch.get_rng_state(), state)


def test_batch_size_too_large_and_eval_batches():
    s = tiny_splits(n=20)
    with pytest.raises(ValueError, match=r"batch_size \(21\).*20 training examples"):
        Batches(s, 21, 0, False, "cpu")
    chunks = list(eval_batches(s.train_x, s.train_y, 8))
    assert [len(y) for _, y in chunks] == [8, 8, 4]
    assert torch.equal(torch.cat([x for x, _ in chunks]), s.train_x)
    assert chunks[0][0].dtype == torch.uint8  # as stored: the caller normalises
