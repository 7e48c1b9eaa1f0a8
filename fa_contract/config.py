"""The resolved run configuration: the one contract between presets, the CLI, the TUI and the
worker. Torch-free on purpose (the TUI imports it and must start in under a second).

Every section forbids unknown keys so that a typo in a preset is an error, never a silent default.
"""
from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The lists of choices, written once: each Literal is the schema's type, each tuple its values
# (for menus and messages); engine's registries are keyed by the same names (a test checks).
Rule = Literal["bp", "fa", "usf", "brsf", "frsf", "dfa", "ldfa"]
Model = Literal["mlp", "cnn", "resnet18", "vit"]
Dataset = Literal["synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100"]
Norm = Literal["none", "batchnorm", "layernorm", "activity"]
Optimiser = Literal["sgd", "adam", "adamw", "muon"]
Schedule = Literal["constant", "cosine", "onecycle", "step"]
Activation = Literal["relu", "tanh", "gelu", "sigmoid", "leaky_relu", "linear"]
RULES: tuple[str, ...] = get_args(Rule)
MODELS: tuple[str, ...] = get_args(Model)
DATASETS: tuple[str, ...] = get_args(Dataset)
NORMS: tuple[str, ...] = get_args(Norm)
OPTIMISERS: tuple[str, ...] = get_args(Optimiser)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
#: training-set sizes of the file datasets (before the validation split), so that impossible
#: splits and batch sizes are refused when the preset is read, not in the worker.
TRAIN_EXAMPLES = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
#: per-example input shape (C, H, W) and class count of the file datasets
INPUT_SHAPE = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
               "cifar100": (3, 32, 32)}
CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
#: models that read C×H×W images (an mlp flattens any shape)
IMAGE_MODELS = ("cnn", "resnet18", "vit")

# Upper bounds. They are generous — far above anything the shipped presets or the papers
# use — and exist so that a typo (an extra three zeros) is refused by the schema with a
# message, not discovered by the kernel's out-of-memory killer. What a run actually needs is
# checked against the machine by the memory estimate at launch (fa_contract/estimate.py).
MAX_UNITS = 1 << 30          # widths, channels, embedding dims, ranks (the memory estimate
                             # refuses far less at launch; this bounds the arithmetic)
MAX_LAYERS = 1024            # depth
MAX_EXAMPLES = 10_000_000    # synthetic dataset sizes, batch and probe sizes
MAX_SIDE = 4096              # one dimension of an input shape
MAX_STEPS = 1 << 40          # epochs, steps, intervals
Units = Annotated[int, Field(ge=1, le=MAX_UNITS)]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
Beta = Annotated[float, Field(ge=0, lt=1)]


class Section(BaseModel):
    # allow_inf_nan=False: inf and nan are refused for every float key (lr, betas, scale...)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunCfg(Section):
    name: str = "run"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$",
                        description="auto | cpu | cuda | cuda:N | mps")
    executor: Literal["local", "slurm"] = Field(
        "local", description="local: workers on this machine; slurm: jobs on a cluster ([slurm])")


class DataCfg(Section):
    name: Dataset = "synthetic"
    root: str | None = Field(None, description="dataset folder; else $FA_TUI_DATA, else the user cache")
    val_size: int = Field(5000, ge=0, le=MAX_EXAMPLES, description="examples held out from train for validation")
    augment: bool = Field(True, description="random crop + flip (CIFAR only), done on the device")
    download: bool = Field(True, description="missing files are downloaded once, at launch")
    # synthetic only: a fixed random teacher network labels Gaussian inputs.
    train_size: int = Field(8192, ge=16, le=MAX_EXAMPLES, description="synthetic: training examples (val included)")
    test_size: int = Field(2048, ge=16, le=MAX_EXAMPLES, description="synthetic: test examples")
    shape: list[Side] = Field([1, 28, 28], min_length=1, max_length=3,
                             description="synthetic: input shape, e.g. [30] or [3, 32, 32]")
    classes: int = Field(10, ge=2, le=MAX_UNITS, description="synthetic: number of classes")
    teacher: Literal["mlp", "linear"] = "mlp"
    subset: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1, description="keep only these classes (relabelled 0..k-1)")


class ModelCfg(Section):
    name: Model = "mlp"
    width: int = Field(256, ge=1, le=MAX_UNITS, description="mlp hidden units; vit embedding dim")
    depth: int = Field(2, ge=0, le=MAX_LAYERS, description="mlp hidden layers; vit blocks")
    widths: list[Units] = Field([64, 128, 256, 256], min_length=4, max_length=4,
                              description="cnn: channels of the four conv layers")
    activation: Activation = "relu"
    bottleneck: int | None = Field(None, ge=1, le=MAX_UNITS,
                                   description="mlp: width of the last hidden layer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    patch: int = Field(4, ge=1, le=MAX_SIDE, description="vit patch size")
    heads: int = Field(4, ge=1, le=MAX_UNITS, description="vit attention heads")
    mlp_ratio: float = Field(2.0, gt=0, le=64, description="vit MLP hidden = ratio * width")
    bias: bool = True
    init: Literal["default", "kaiming", "kaiming_out"] = Field(
        "default", description="weights: each model's own init (PyTorch's uniform for mlp and "
                               "cnn: BP's error shrinks ~2.4x per ReLU layer) or He normal, "
                               "fan_in (kaiming: activation and error scale kept with depth) "
                               "or fan_out (kaiming_out: BP's error scale kept also where "
                               "layers widen)")


class RuleCfg(Section):
    name: Rule = "bp"
    scale: float = Field(1.0, gt=0, description="multiplies the feedback")
    init: Literal["same", "gaussian", "uniform", "orthogonal"] = Field(
        "same", description="feedback distribution: same as the forward init, or another")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="feedback seed; default run.seed + 1000")
    rank: int = Field(10, ge=1, le=MAX_UNITS, description="ldfa: feedback rank r")
    adapt: Literal["fixed", "oja", "fit"] = Field("oja", description="ldfa feedback adaptation")
    feedback_lr: float = Field(1e-2, ge=0, description="ldfa: learning rate of P and Q")
    feedback_norm: Literal["launay", "fan_out", "off"] = Field(
        "launay", description="dfa: B std 1/sqrt(n_L*dim_l) (launay, as in Launay et al.'s code), "
                              "1/sqrt(n_L) (fan_out, the scale before issue 8) or the forward "
                              "init's std (off)")
    fit_scale: Literal["weight", "raw"] = Field(
        "weight", description="ldfa fit: rescale PQ to ||W|| at init (weight) or keep the raw "
                              "truncated SVD (raw)")

    @field_validator("feedback_norm", mode="before")
    @classmethod
    def _old_boolean_norm(cls, v: object) -> object:
        """Configs written before the three choices said true / false: true meant Launay et
        al.'s normalisation (which it now is, with their code's exact scale), false off."""
        if isinstance(v, bool):
            return "launay" if v else "off"
        return v


class NormCfg(Section):
    name: Norm = "none"


class OptimCfg(Section):
    name: Optimiser = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    schedule: Schedule = "constant"
    warmup: int = Field(0, ge=0, le=MAX_STEPS, description="linear warm-up, in steps")
    step_every: int = Field(30, ge=1, le=MAX_STEPS,
                            description="step schedule: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")
    clip: float | None = Field(None, gt=0, description="clip the global grad norm to this")
    adamw_lr: float | None = Field(None, gt=0, description="muon: lr of the AdamW group (default lr)")
    muon_exclude: list[Literal["first", "head"]] = Field(
        ["first", "head"], description="muon: weight layers routed to AdamW instead")
    muon_adjust_lr: Literal["original", "match_rms_adamw"] = "match_rms_adamw"
    muon_momentum: float = Field(0.95, ge=0, lt=1,
                                 description="muon: Nesterov momentum of the Muon group (Jordan 2024)")


class TrainCfg(Section):
    epochs: int = Field(1, ge=1, le=1_000_000)
    batch_size: int = Field(128, ge=1, le=MAX_EXAMPLES)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="stop after this many steps")
    log_every: int = Field(20, ge=1, le=MAX_STEPS, description="steps between train-loss events")
    eval_every: int | None = Field(None, ge=1, le=MAX_STEPS, description="steps between val evals (default: each epoch)")
    amp: Literal["auto", "off", "bf16"] = Field("auto", description="auto = bf16 autocast on CUDA")
    channels_last: Literal["auto", "off", "on"] = Field(
        "auto", description="channels-last memory format (auto = on for cnn and resnet18 on "
                            "CUDA and the CPU)")
    cuda_graph: Literal["auto", "off", "on"] = Field(
        "auto", description="replay the model's forward+backward as CUDA graphs (auto = on CUDA)")
    diverge_loss: float = Field(1e4, gt=0, description="a loss above this counts as diverged")


class MetricsCfg(Section):
    """Diagnostics. `every = "auto"` (the default) times the step-0 probe and a few training
    steps and then probes every ceil(probe_s / (budget · step_s)) steps, so the share holds on
    any model and device; a fixed integer is the cadence itself (reproducible event steps)."""
    every: int | Literal["auto"] = Field(
        "auto", description="steps between diagnostics; 0 turns them off; auto: the cadence "
                            "that keeps them at metrics.budget of the wall time")
    budget: float = Field(0.05, gt=0, le=1, description="auto cadence: the share of wall time "
                                                        "diagnostics may take")
    probe_size: int = Field(256, ge=2, le=65_536, description="fixed probe batch size")
    conv_layout: Literal["sample", "pixel"] = Field(
        "sample", description="conv error matrix: N x C*H*W (sample) or N*H*W x C (pixel)")
    window: int = Field(8, ge=0, description="trajectory window: the last T probes stacked "
                                             "(erank_*_traj); 0 turns the trajectory off")
    window_rows: int = Field(32, ge=1, description="probe rows per probe kept in the window")
    sketch: int = Field(1024, ge=16, description="rows wider than this are kept as a "
                                                 "CountSketch of this many columns")


class SlurmCfg(Section):
    """How a run is submitted when run.executor = "slurm" (fa_tui/slurm.py, docs/cluster.md).
    Unset keys leave the cluster's defaults."""
    partition: str | None = Field(None, description="partition (default: the cluster's default)")
    time: str = Field("01:00:00", pattern=r"^((\d+-)?\d{1,2}:\d{2}:\d{2}|\d+)$",
                      description="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS")
    gpus: int = Field(0, ge=0, description="GPUs per run (--gres=gpu:N)")
    cpus: int = Field(1, ge=1, description="CPUs per run (--cpus-per-task)")
    mem: str | None = Field(None, pattern=r"^\d+[KMGT]?$",
                            description="memory per run, e.g. 16G (default: the cluster's)")
    account: str | None = Field(None, description="--account")
    qos: str | None = Field(None, description="--qos")
    constraint: str | None = Field(None, description="--constraint, e.g. a100")
    extra: list[str] = Field([], description='more #SBATCH options, e.g. ["--exclusive"]')
    parallel: int | None = Field(None, ge=1, description="array tasks running at once")
    signal_s: int = Field(120, ge=10, description="seconds before the time limit when the "
                                                   "worker is told to checkpoint (--signal)")
    requeues: int = Field(100, ge=0, description="time-limit requeues before a run gives up")


def train_examples(data: DataCfg) -> int | None:
    """Training examples before the validation split, where known without reading files (not
    with data.subset, whose class counts only the files tell)."""
    if data.subset is not None:
        return None
    return data.train_size if data.name == "synthetic" else TRAIN_EXAMPLES.get(data.name)


class Config(Section):
    """One fully resolved run. `model_dump()` is what config.toml holds."""
    run: RunCfg = RunCfg()
    data: DataCfg = DataCfg()
    model: ModelCfg = ModelCfg()
    rule: RuleCfg = RuleCfg()
    norm: NormCfg = NormCfg()
    optim: OptimCfg = OptimCfg()
    train: TrainCfg = TrainCfg()
    metrics: MetricsCfg = MetricsCfg()
    slurm: SlurmCfg = SlurmCfg()

    @field_validator("data")
    @classmethod
    def _subset_unique_and_split_possible(cls, v: DataCfg) -> DataCfg:
        if v.subset is not None and len(set(v.subset)) != len(v.subset):
            raise ValueError("data.subset lists a class twice")
        classes = v.classes if v.name == "synthetic" else CLASSES[v.name]
        if v.subset is not None and max(v.subset) >= classes:
            bad = [c for c in v.subset if c >= classes]
            raise ValueError(f"data.subset = {v.subset}: {v.name} has classes 0..{classes - 1}, "
                             f"not {bad}; keep only classes below {classes}")
        n = train_examples(v)
        if n is not None and v.val_size >= n:
            where = " (data.train_size)" if v.name == "synthetic" else ""
            raise ValueError(f"data.val_size = {v.val_size} leaves no training examples: "
                             f"{v.name} has {n}{where}; set data.val_size below {n}")
        return v

    @field_validator("slurm")
    @classmethod
    def _sbatch_options(cls, v: SlurmCfg) -> SlurmCfg:
        for option in v.extra:
            if not option.startswith("--") or len(option) < 3 or " " in option.split("=")[0]:
                raise ValueError(f"slurm.extra = {v.extra} holds {option!r}, which is not a long "
                                 f"sbatch option; write each as \"--name=value\" or \"--flag\", "
                                 f"e.g. \"--exclusive\"")
        return v

    @field_validator("train")
    @classmethod
    def _batch_fits(cls, v: TrainCfg, info) -> TrainCfg:
        data = info.data.get("data")
        n = train_examples(data) if data is not None else None
        if n is not None and v.batch_size > n - data.val_size:
            raise ValueError(f"train.batch_size = {v.batch_size} is more than the "
                             f"{n - data.val_size} training examples left after "
                             f"data.val_size = {data.val_size}; lower train.batch_size")
        return v

    @model_validator(mode="after")
    def _model_fits_input(self) -> "Config":
        """Checks that need the model and the data together (the worker would fail on them)."""
        m, d = self.model, self.data
        shape = tuple(d.shape) if d.name == "synthetic" else INPUT_SHAPE[d.name]
        if m.name in IMAGE_MODELS and len(shape) != 3:
            raise ValueError(f"model.name = {m.name!r} needs image inputs (C×H×W), but "
                             f"data.shape = {list(shape)}; set data.shape = [C, H, W], e.g. "
                             f"[1, 28, 28], or use model.name = 'mlp'")
        if m.name == "vit":
            _, h, w = shape
            if h % m.patch or w % m.patch:
                raise ValueError(f"model.patch = {m.patch} does not divide the {h}×{w} input "
                                 f"({d.name}); choose a patch size that divides both, e.g. "
                                 f"{_divisor(h, w)}")
            if m.width % m.heads:
                raise ValueError(f"model.heads = {m.heads} does not divide model.width = "
                                 f"{m.width}; the vit splits the width over the heads")
        if m.name == "mlp" and m.bottleneck is not None and m.depth == 0:
            raise ValueError("model.bottleneck needs model.depth >= 1 (it is the width of the "
                             "last hidden layer); unset it or raise model.depth")
        return self

    @property
    def feedback_seed(self) -> int:
        return self.rule.seed if self.rule.seed is not None else self.run.seed + 1000


def _divisor(h: int, w: int) -> int:
    """The largest patch size up to 8 that divides both sides (1 always does)."""
    return max(p for p in range(1, 9) if h % p == 0 and w % p == 0)
