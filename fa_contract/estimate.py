"""How much memory a run needs, from its Config alone: torch-free arithmetic, so the launcher
can refuse a run that cannot fit before anything is created (`--set model.bottleneck=100000000`
once grew a worker to 23.7 GB until the kernel killed it).

The parts (all float32, 4 bytes, whatever amp does — an estimate should err high):
- parameters: counted exactly per model (tests/test_estimate.py checks the count against the
  real torch module for every model);
- gradients (one per parameter) and optimiser state (momentum: 1, Adam's two moments: 2);
- the learning rule's feedback: a copy of each weight (fa, usf, frsf; brsf keeps two), a
  classes × fan-in matrix per layer (dfa), two rank-r factors per layer (ldfa);
- activations of one training batch, kept for the backward: about three tensors per layer
  output (pre-norm, post-norm, post-activation), and of one evaluation batch (no backward);
- the dataset, which the engine keeps on the device (uint8 images, float32 synthetic inputs,
  int64 labels);
- the diagnostics probe: a forward and two backwards (the rule's and BP's) of `probe_size`
  examples, the two sets of weight gradients they give, and a Gram matrix per layer (at most
  probe_size × probe_size) for the spectra;
- a fixed runtime overhead (the torch runtime, a CUDA context).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from fa_contract.config import CLASSES, INPUT_SHAPE, TRAIN_EXAMPLES, Config

F32 = 4
EVAL_BATCH = 1024          # engine/train.py's evaluation batch
RUNTIME_OVERHEAD = 512 * 1024 * 1024
#: tensors kept per layer output for the backward (pre-norm, post-norm, post-activation)
KEPT_PER_OUTPUT = 3


@dataclass(frozen=True)
class Layer:
    """One weight layer: weight elements, bias elements, fan-in and output elements per sample."""
    weight: int
    bias: int
    fan_in: int
    out: int
    channels: int          # output units (features or channels): the eigenproblem's size


@dataclass(frozen=True)
class Estimate:
    params: int
    parts: dict[str, int]          # name -> bytes

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def checkpoint(self) -> int:
        """Bytes of checkpoint.pt: parameters, optimiser state and feedback."""
        return sum(self.parts[k] for k in ("parameters", "optimiser state", "feedback"))

    def describe(self) -> str:
        parts = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in self.parts.items() if v)
        return f"{fmt_bytes(self.total)} ({self.params:,} parameters; {parts})"


def input_shape(cfg: Config) -> tuple[int, ...]:
    return tuple(cfg.data.shape) if cfg.data.name == "synthetic" else INPUT_SHAPE[cfg.data.name]


def classes(cfg: Config) -> int:
    if cfg.data.subset is not None:
        return len(cfg.data.subset)
    return cfg.data.classes if cfg.data.name == "synthetic" else CLASSES[cfg.data.name]


def layers(cfg: Config) -> tuple[list[Layer], int, int]:
    """The weight layers of the model, plus (other parameters, other activations per sample):
    norm gains and biases, the ViT position embedding; norm outputs, attention maps."""
    m, shape, k = cfg.model, input_shape(cfg), classes(cfg)
    affine = cfg.norm.name in ("batchnorm", "layernorm")
    b = 1 if m.bias else 0
    if m.name == "mlp":
        widths = [m.width] * m.depth
        if m.bottleneck is not None and widths:
            widths[-1] = m.bottleneck
        out, fan = [], math.prod(shape)
        for w in widths:
            out.append(Layer(fan * w, b * w, fan, w, w))
            fan = w
        out.append(Layer(fan * k, b * k, fan, k, k))
        return out, sum(2 * w for w in widths) if affine else 0, 0
    c, h, w = shape
    if m.name == "cnn":
        out, extra = [], 0
        for i, ch in enumerate(m.widths, start=1):
            out.append(Layer(c * ch * 9, b * ch, c * 9, ch * h * w, ch))
            extra += 2 * ch if affine else 0
            if i in (2, 4):
                h, w = h // 2, w // 2
            c = ch
        out.append(Layer(c * h * w * k, b * k, c * h * w, k, k))
        return out, extra, 0
    if m.name == "vit":
        d, t = m.width, (h // m.patch) * (w // m.patch)
        hidden = max(1, round(m.mlp_ratio * d))
        out = [Layer(c * d * m.patch ** 2, b * d, c * m.patch ** 2, t * d, d)]
        for _ in range(m.depth):
            out += [Layer(d * 3 * d, b * 3 * d, d, t * 3 * d, 3 * d),
                    Layer(d * d, b * d, d, t * d, d),
                    Layer(d * hidden, b * hidden, d, t * hidden, hidden),
                    Layer(hidden * d, b * d, hidden, t * d, d)]
        out.append(Layer(d * k, b * k, d, k, k))
        norms = 2 * m.depth + 1
        extra = t * d + (2 * d * norms if affine else 0)      # pos embedding, norm gains
        return out, extra, m.depth * m.heads * t * t          # attention maps
    # resnet18, CIFAR stem (engine/models/resnet.py): no conv biases; norms after every conv
    out, extra = [Layer(c * 64 * 9, 0, c * 9, 64 * h * w, 64)], 64
    cin = 64
    for stage, ch in enumerate((64, 128, 256, 512)):
        if stage:
            h, w = (h + 1) // 2, (w + 1) // 2
        for block in range(2):
            first = block == 0
            out.append(Layer(cin * ch * 9, 0, cin * 9, ch * h * w, ch))
            out.append(Layer(ch * ch * 9, 0, ch * 9, ch * h * w, ch))
            extra += 2 * ch
            if first and stage:                      # the 1×1 projection shortcut
                out.append(Layer(cin * ch, 0, cin, ch * h * w, ch))
                extra += ch
            cin = ch
    out.append(Layer(512 * k, k, 512, k, k))
    return out, extra * 2 if affine else 0, 0


def param_count(cfg: Config) -> int:
    """Trainable parameters of the model `cfg` builds (exact)."""
    ls, extra, _ = layers(cfg)
    return sum(ly.weight + ly.bias for ly in ls) + extra


def estimate(cfg: Config) -> Estimate:
    """The memory one run of `cfg` needs on its device (see the module docstring)."""
    ls, _, attention = layers(cfg)
    params = param_count(cfg)
    weights = sum(ly.weight for ly in ls)
    opt = cfg.optim
    states = {"sgd": 1 if opt.momentum > 0 else 0, "adam": 2, "adamw": 2, "muon": 2}[opt.name]
    k = classes(cfg)
    rule = cfg.rule.name
    feedback = {"bp": 0, "fa": weights, "usf": weights, "frsf": weights, "brsf": 2 * weights,
                "dfa": sum(k * ly.fan_in for ly in ls),
                "ldfa": sum(2 * cfg.rule.rank * (k + ly.fan_in) for ly in ls)}[rule]
    per_sample = sum(ly.out for ly in ls) * KEPT_PER_OUTPUT + attention
    batch = cfg.train.batch_size
    activations = max(batch * per_sample * F32, min(EVAL_BATCH, _test_size(cfg)) * per_sample
                      * F32 // KEPT_PER_OUTPUT)
    n_inputs = math.prod(input_shape(cfg))
    if cfg.data.name == "synthetic":
        examples = cfg.data.train_size + cfg.data.test_size
        dataset = examples * (n_inputs * F32 + 8)
    else:
        examples = _train_size(cfg) + _test_size(cfg)
        dataset = examples * (n_inputs + 8)
    probe = 0
    if cfg.metrics.every != 0:          # an integer cadence or "auto"
        n = cfg.metrics.probe_size
        probe = (2 * n * per_sample * F32 + 2 * params * F32
                 + sum(min(n, ly.channels) ** 2 for ly in ls) * F32 * 2)
    parts = {"parameters": params * F32, "gradients": params * F32,
             "optimiser state": states * params * F32, "feedback": feedback * F32,
             "activations": activations, "dataset": dataset, "probe": probe,
             "runtime": RUNTIME_OVERHEAD}
    return Estimate(params, parts)


def _train_size(cfg: Config) -> int:
    return TRAIN_EXAMPLES[cfg.data.name]


def _test_size(cfg: Config) -> int:
    return cfg.data.test_size if cfg.data.name == "synthetic" else 10_000


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as free(1) and nvidia-smi show them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
