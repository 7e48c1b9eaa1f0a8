"""Which Config fields the Compose form shows, in which section, and when: the main fields
of each section, then an "Advanced" section generated from the schema with every other key
(a key whose description starts with `muon:`, `ldfa:`… shows only under that choice), and a
help text for the keys whose schema field has no description."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from fa_contract.config import Config

Values = Mapping[str, Any]
SEEDS = "seeds"         # not Config paths: the seeds of a sweep (they set run.seed) and how
JOBS = "jobs"           # many of its runs may train at the same time
DEVICE = "run.device"


def _is(path: str, *names: str) -> Callable[[Values], bool]:
    return lambda v: v.get(path) in names


@dataclass(frozen=True)
class FieldSpec:
    path: str
    label: str
    when: Callable[[Values], bool] | None = None

    def visible(self, values: Values) -> bool:
        return self.when is None or self.when(values)


_ldfa = _is("rule.name", "ldfa")
_slurm = _is("run.executor", "slurm")
FORM: tuple[tuple[str, tuple[FieldSpec, ...]], ...] = (
    ("Rule", (
        FieldSpec("rule.name", "rule"),
        FieldSpec("rule.rank", "rank", _ldfa),
        FieldSpec("rule.adapt", "adapt", _ldfa),
        FieldSpec("rule.feedback_lr", "feedback lr",
                  lambda v: _ldfa(v) and v.get("rule.adapt") != "fixed"),
        FieldSpec("rule.feedback_norm", "feedback norm", _is("rule.name", "dfa")),
        FieldSpec("rule.init", "feedback init", lambda v: v.get("rule.name") != "bp"),
        FieldSpec("rule.scale", "feedback scale", lambda v: v.get("rule.name") != "bp"),
        FieldSpec("norm.name", "norm"))),
    ("Optimiser", (
        FieldSpec("optim.name", "optimiser"),
        FieldSpec("optim.lr", "lr"),
        FieldSpec("optim.momentum", "momentum", _is("optim.name", "sgd")),
        FieldSpec("optim.nesterov", "nesterov", _is("optim.name", "sgd")),
        FieldSpec("optim.muon_momentum", "muon momentum", _is("optim.name", "muon")),
        FieldSpec("optim.adamw_lr", "adamw lr", _is("optim.name", "muon")),
        FieldSpec("optim.weight_decay", "weight decay"),
        FieldSpec("optim.schedule", "schedule"),
        FieldSpec("optim.warmup", "warm-up steps"),
        FieldSpec("optim.clip", "clip grad norm"))),
    ("Model", (
        FieldSpec("model.name", "model"),
        FieldSpec("model.width", "width", _is("model.name", "mlp", "vit")),
        FieldSpec("model.depth", "depth", _is("model.name", "mlp", "vit")),
        FieldSpec("model.bottleneck", "bottleneck", _is("model.name", "mlp")),
        FieldSpec("model.widths", "widths", _is("model.name", "cnn")),
        FieldSpec("model.patch", "patch", _is("model.name", "vit")),
        FieldSpec("model.heads", "heads", _is("model.name", "vit")),
        FieldSpec("model.activation", "activation", _is("model.name", "mlp", "cnn")))),
    ("Data", (
        FieldSpec("data.name", "dataset"),
        FieldSpec("data.shape", "input shape", _is("data.name", "synthetic")),
        FieldSpec("data.classes", "classes", _is("data.name", "synthetic")),
        FieldSpec("data.train_size", "train size", _is("data.name", "synthetic")),
        FieldSpec("data.test_size", "test size", _is("data.name", "synthetic")),
        FieldSpec("data.val_size", "val size"),
        FieldSpec("data.subset", "class subset", lambda v: v.get("data.name") != "synthetic"),
        FieldSpec("data.augment", "augment", _is("data.name", "cifar10", "cifar100")))),
    ("Training", (
        FieldSpec("train.epochs", "epochs"),
        FieldSpec("train.batch_size", "batch size"),
        FieldSpec("train.max_steps", "max steps"),
        FieldSpec("train.eval_every", "eval every"),
        FieldSpec("metrics.every", "diag every"),
        FieldSpec("metrics.probe_size", "probe size"))),
    ("Run", (
        FieldSpec("run.name", "name"),
        FieldSpec(SEEDS, "seeds"),
        FieldSpec(JOBS, "parallel", _is("run.executor", "local")),
        FieldSpec(DEVICE, "device"),
        FieldSpec("run.executor", "executor"))),
    ("SLURM", (           # run.executor = slurm: docs/cluster.md
        FieldSpec("slurm.partition", "partition", _slurm),
        FieldSpec("slurm.time", "time limit", _slurm),
        FieldSpec("slurm.gpus", "GPUs per run", _slurm),
        FieldSpec("slurm.cpus", "CPUs per run", _slurm),
        FieldSpec("slurm.mem", "memory", _slurm),
        FieldSpec("slurm.account", "account", _slurm),
        FieldSpec("slurm.parallel", "array tasks at once", _slurm))),
)
MAIN: frozenset[str] = frozenset(f.path for _, group in FORM for f in group)


def _when_from_description(path: str) -> Callable[[Values], bool] | None:
    """An advanced key whose schema description starts with `muon:`, `ldfa:`, `synthetic:`,
    `step schedule:`… applies only under that choice."""
    if path.startswith("slurm."):
        return _slurm
    if path.startswith("optim.muon_"):
        return _is("optim.name", "muon")
    desc = (Config.model_fields[path.split(".")[0]].annotation
            .model_fields[path.split(".")[1]].description or "")
    prefix = desc.split(":")[0] if ":" in desc else ""
    rules = {"muon": _is("optim.name", "muon"), "ldfa": _is("rule.name", "ldfa"),
             "dfa": _is("rule.name", "dfa"), "synthetic": _is("data.name", "synthetic"),
             "step schedule": _is("optim.schedule", "step"), "vit": _is("model.name", "vit"),
             "mlp": _is("model.name", "mlp"), "cnn": _is("model.name", "cnn")}
    return rules.get(prefix)


def _advanced() -> tuple[FieldSpec, ...]:
    """Every other Config key, so that nothing needs a preset file to be reached."""
    out = []
    for section, info in Config.model_fields.items():
        for key in info.annotation.model_fields:
            path = f"{section}.{key}"
            if path not in MAIN and path != "run.seed":      # the seeds field sets run.seed
                out.append(FieldSpec(path, key.replace("_", " "), _when_from_description(path)))
    return tuple(out)


ADVANCED_TITLE = "Advanced"
FORM = FORM + ((ADVANCED_TITLE, _advanced()),)
FIELDS: dict[str, FieldSpec] = {f.path: f for _, group in FORM for f in group}

#: help for the keys whose schema field has no description
HELP = {
    "rule.name": "learning rule: bp exact gradient; fa fixed random feedback (Lillicrap 2016); "
                 "usf/brsf/frsf sign-symmetric feedback; dfa direct feedback of the output "
                 "error (Nøkland 2016); ldfa low-rank feedback (Hanut & Kadmon 2025)",
    "norm.name": "normalisation layers of the model",
    "optim.name": "optimiser; muon orthogonalises hidden weight updates (Jordan 2024), the "
                  "first layer, head, biases and gains go to AdamW",
    "optim.lr": "learning rate (several, comma-separated, make a sweep)",
    "optim.momentum": "sgd momentum",
    "optim.nesterov": "sgd: Nesterov momentum",
    "optim.weight_decay": "decoupled weight decay",
    "optim.schedule": "learning-rate schedule over the run",
    "model.name": "architecture",
    "data.name": "dataset; synthetic needs no files",
    "train.epochs": "passes over the training set",
    "train.batch_size": "examples per optimiser step",
    "run.name": "run directory name (a sweep appends the swept values)",
    "run.seed": "seed of the weights and data order",
    "run.device": "auto (a GPU when there is one), cpu or cuda:N",
}
