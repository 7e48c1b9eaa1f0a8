"""Per-layer diagnostics on a fixed probe batch (science.md §3).

`Diagnostics(model, rule, probe_x, probe_y, loss_fn)` is built once per run; `measure()` takes
the current weights through one forward pass and two backward passes — the rule's and the
exact-BP shadow (`rule.exact_backward()`) — and returns plain floats per weight layer:

    erank_err / pr_err         rule error δ_l (N × D; conv N × C·H·W, or N·H·W × C for 'pixel')
    erank_err_bp / pr_err_bp   BP error on the same batch and weights
    erank_grad / pr_grad       rule pseudo-gradient δ_lᵀh_{l−1} (conv flattened out × in·kh·kw)
    erank_grad_bp / pr_grad_bp BP gradient
    erank_act / pr_act         layer input h_{l−1} (same layout as the error)
    erank_err_rn / _rn_bp      rule / BP error with every row scaled to unit norm (zero rows
                               left out)
    erank_sent / _bp           the error the layer sends to its input (grad_input as the rule
                               computes it / as exact BP does on the same weights); None for
                               the first layer, which sends nothing
    erank_sent_rn / _rn_bp     the same, rows normalised
    erank_sent_traj / _bp      the sent errors stacked over the trajectory window
    erank_grad_traj / _bp      flattened probe gradients stacked over the window (engine/trajectory.py)
    erank_disp                 the displacement W_t − W_0 (conv out × in·kh·kw)
    erank_step / pr_step       the applied step (the real parameter change of the last step);
                               None, with step_noise > 0.01, when fp32 rounding of W is more
                               than 1 % of the step (e.g. a cosine schedule's last steps)
    step_noise                 bound on that rounding, ½·eps32·‖W‖, over ‖step‖
    angle_delta                rule δ vs BP δ, flattened over the batch
    angle_delta_sample         mean over samples of the per-sample angle (LightOn's convention)
    angle_grad                 rule pseudo-gradient vs BP gradient
    angle_step                 −applied step vs BP gradient (None as erank_step)
    angle_weight, fb_ratio     W vs the rule's effective feedback, and ‖B‖/‖W‖, for the layers
                               whose feedback is used (not the first)
    cons_drift                 drift of Robertson & Koyejo's conserved quantity (Linear pairs)
    rows                       rows of the error / activation matrices (N; N·H·W or N·T)

plus the probe's `probe_n`, `probe_loss` and `probe_acc`. Under bp the rule's pass already is
the BP shadow, bit for bit, so it runs one backward and reuses its numbers. The 'pixel' layout
also gives a token Linear (N, T, D) one row per token. The conserved quantity's reference c_0
is taken when Diagnostics is built, i.e. on the initial weights when the trainer builds it
before loading a checkpoint.

None where a metric does not apply (no applied step given, no feedback tensor under bp / dfa,
a layer that is not the first of a Linear→Linear pair) or is undefined (a zero vector's angle,
a non-finite matrix in a diverged run).

A probe must not perturb training: the dropout draws happen inside a forked RNG, the norm
layers' running statistics are restored, gradients come from torch.autograd.grad (never .grad),
and the rule does not adapt during probe passes. The probe runs in whatever mode the model is
in (train mode during training), so it sees the same network that training sees.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from engine.layers import RuleConv2d, RuleLayer, RuleLinear
from engine.metrics import (STEP_NOISE_MAX, angle, conservation, conservation_drift,
                            per_sample_angle, product_spectrum_stats, spectra,
                            spectrum_stats, step_noise)
from engine.rules.base import Rule
from engine.trajectory import Window

LossFn = Callable[[Tensor, Tensor], Tensor]


class Diagnostics:
    """The probe of one run. Acts as the rule's recorder while `measure()` runs."""

    def __init__(self, model: nn.Module, rule: Rule, probe_x: Tensor, probe_y: Tensor,
                 loss_fn: LossFn, conv_layout: str = "sample", window: int = 0,
                 window_rows: int = 32, sketch: int = 1024) -> None:
        if conv_layout not in ("sample", "pixel"):
            raise ValueError(f"conv_layout must be 'sample' or 'pixel', not {conv_layout!r}")
        if not rule.layers:
            raise ValueError("attach the rule to the model before building Diagnostics")
        self.model, self.rule, self.loss_fn = model, rule, loss_fn
        self.probe_x, self.probe_y = probe_x, probe_y
        self.pixel = conv_layout == "pixel"
        self.device = next(model.parameters()).device
        self._phase = "rule"
        self._inputs: dict[nn.Module, Tensor] = {}
        self._errors: dict[str, dict[nn.Module, Tensor]] = {"rule": {}, "bp": {}}
        self._sent: dict[str, dict[nn.Module, Tensor]] = {"rule": {}, "bp": {}}
        self.window = Window(window, window_rows, sketch) if window > 0 else None
        #: W_0 for erank_disp, taken when built (the initial weights, as c_0 below)
        self._w0 = {m: m.weight.detach().clone() for m in rule.layers}
        self._pairs = self._conservation_pairs()
        self._c0 = {m: self._conservation(m, nxt) for m, nxt in self._pairs.items()}

    # --- recorder interface (called by engine.layers during measure) ------------------------
    def input(self, layer: nn.Module, x: Tensor) -> None:
        self._inputs[layer] = x.detach()

    def error(self, layer: nn.Module, grad_out: Tensor) -> None:
        """The error arriving at `layer`'s output, filed under the current pass. A layer
        called twice in one forward (weight sharing) keeps its last call."""
        self._errors[self._phase][layer] = grad_out.detach()

    def sent(self, layer: nn.Module, grad_input: Tensor) -> None:
        """The error `layer` sends to its input in the current pass."""
        self._sent[self._phase][layer] = grad_input.detach()

    # --- conservation -----------------------------------------------------------------------
    def _conservation_pairs(self) -> dict[nn.Module, nn.Module]:
        """Layer i → layer i+1 for consecutive (execution order) Linear layers whose shapes
        chain and whose error reaches layer i through layer i+1's feedback (bp, or a rule
        with a feedback tensor of W's shape; not dfa). The law also needs a ReLU-like φ and
        nothing else between them, which the graph does not tell us: meaningful for MLPs."""
        pairs = {}
        layers = self.rule.layers
        for m, nxt in zip(layers, layers[1:]):
            if not (isinstance(m, RuleLinear) and isinstance(nxt, RuleLinear)):
                continue
            if m.weight.shape[0] != nxt.weight.shape[1]:
                continue
            if not self.rule.exact_rule:
                fb = self.rule.effective_feedback(nxt)
                if fb is None or fb.shape != nxt.weight.shape:
                    continue
            pairs[m] = nxt
        return pairs

    def _conservation(self, m: nn.Module, nxt: nn.Module) -> Tensor:
        bp = self.rule.exact_rule
        fb = None if bp else self.rule.effective_feedback(nxt)
        return conservation(m.weight, m.bias, fb, nxt.weight, bp=bp)

    # --- the probe --------------------------------------------------------------------------
    def measure(self, applied_step: dict[str, Tensor] | None = None) -> dict:
        """Diagnostics of the current weights on the probe batch. `applied_step` maps layer
        names to the parameter change of the latest training step (after momentum, Muon and
        the learning rate); without it the step metrics are None."""
        layers = self.rule.layers
        buffers = self._norm_buffers()
        saved = [b.clone() for b in buffers]
        cuda = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda), torch.enable_grad():
                grads, grads_bp, probe_loss, probe_acc = self._passes(layers)
            exact = self.rule.exact_rule
            with torch.autocast(self.device.type, enabled=False), torch.no_grad():
                out = {}
                for i, m in enumerate(layers):
                    step = None if applied_step is None else applied_step.get(m.layer_name)
                    out[m.layer_name] = self._layer(m, grads[i], grads_bp[i], step, exact)
        finally:
            self._inputs = {}
            self._errors = {"rule": {}, "bp": {}}
            self._sent = {"rule": {}, "bp": {}}
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)
        return {"probe_n": len(self.probe_x), "probe_loss": _num(probe_loss),
                "probe_acc": _num(probe_acc), "layers": out}

    def _passes(self, layers: list[nn.Module]) -> tuple[tuple, tuple, float, float]:
        """One forward, then the rule's backward and the BP shadow's, recording each layer's
        input and both errors. Returns (rule grads, BP grads, probe loss, probe accuracy)."""
        try:
            self.rule.recorder = self
            self._phase = "rule"
            logits = self.model(self.probe_x)
            loss = self.loss_fn(logits.float(), self.probe_y)
            weights = [m.weight for m in layers]
            exact = self.rule.exact_rule
            grads = torch.autograd.grad(loss, weights, retain_graph=not exact)
            if exact:  # under bp the rule pass already is the BP shadow, bit for bit
                grads_bp = grads
            else:
                self._phase = "bp"
                with self.rule.exact_backward():
                    grads_bp = torch.autograd.grad(loss, weights)
            acc = (logits.detach().argmax(-1) == self.probe_y).float().mean()
            return grads, grads_bp, float(loss.detach()), float(acc)
        finally:
            self.rule.recorder = None

    def _norm_buffers(self) -> list[Tensor]:
        """Every buffer of the model except the rule's feedback (held by the weight layers,
        which a probe never changes): BatchNorm running stats, num_batches_tracked, …"""
        return [b for mod in self.model.modules() if not isinstance(mod, RuleLayer)
                for b in mod.buffers(recurse=False)]

    def _matrix(self, layer: nn.Module, t: Tensor) -> Tensor:
        """A per-sample tensor (N, …) as the 2-D matrix whose spectrum is taken: one row per
        sample, or with the 'pixel' layout one row per position (conv N·H·W × C, token
        N·T × D) so that the columns are the layer's channels. Columns in storage order
        (`_stored`): a spectrum does not depend on their order."""
        t = t.float()
        if t.dim() == 2:
            return t
        if not self.pixel:
            return _stored(t).reshape(t.shape[0], -1)
        if isinstance(layer, RuleConv2d):
            t = t.movedim(1, -1)
        return t.reshape(-1, t.shape[-1])

    def _window_rows(self, layer: nn.Module, t: Tensor | None) -> Tensor | None:
        """The rows of a sent error the trajectory window keeps (its first window_rows), with
        the columns in logical order whatever the memory format: the stacks mix probes, which
        must agree on it (a run resumed with another format, say). Per sample, the (N, …)
        tensor goes as it is: the window flattens the rows it keeps, copying only those."""
        if t is None or not self.pixel:
            return t
        return self._matrix(layer, t)

    @staticmethod
    def _grad_stats(m: nn.Module, err: Tensor, grad: Tensor, x: Tensor) -> tuple[float, float]:
        """Spectrum of a weight gradient. A Linear layer's is exactly δᵀh over the probe rows,
        so it is taken from those factors (rank ≤ rows, much cheaper for wide layers)."""
        if isinstance(m, RuleLinear):
            return product_spectrum_stats(err.reshape(-1, err.shape[-1]), x.reshape(-1, x.shape[-1]))
        return spectrum_stats(_flat(grad))

    def _layer(self, m: nn.Module, grad: Tensor, grad_bp: Tensor, step: Tensor | None,
               exact: bool) -> dict:
        """One layer's metrics; `exact` means the rule pass was the BP pass (bp), so the
        shadow's spectra are the rule's and need no second SVD."""
        err = self._errors["rule"].pop(m)
        err_bp = err if exact else self._errors["bp"].pop(m)
        r: dict[str, float | int | None] = {}

        e = self._matrix(m, err)
        r["rows"] = e.shape[0]
        er, pr, er_rn = spectra(e)
        er_bp, pr_bp, er_rn_bp = (er, pr, er_rn) if exact else spectra(self._matrix(m, err_bp))
        del e
        r.update(erank_err=er, pr_err=pr, erank_err_bp=er_bp, pr_err_bp=pr_bp,
                 erank_err_rn=er_rn, erank_err_rn_bp=er_rn_bp)
        sent = self._sent["rule"].pop(m, None)
        sent_bp = sent if exact else self._sent["bp"].pop(m, None)
        if sent is None or sent_bp is None:
            r["erank_sent"] = r["erank_sent_bp"] = None
            r["erank_sent_rn"] = r["erank_sent_rn_bp"] = None
        else:
            er, _, er_rn = spectra(self._matrix(m, sent))
            er_bp, _, er_rn_bp = (er, None, er_rn) if exact else \
                spectra(self._matrix(m, sent_bp))
            r.update(erank_sent=er, erank_sent_rn=er_rn, erank_sent_bp=er_bp,
                     erank_sent_rn_bp=er_rn_bp)
        if self.window is not None:
            self.window.add(m.layer_name, self._window_rows(m, sent),
                            self._window_rows(m, sent_bp), grad, grad_bp)
            r.update(self.window.stats(m.layer_name))
        r["erank_disp"] = spectrum_stats(_flat(m.weight) - _flat(self._w0[m]))[0]
        x = self._inputs.pop(m)
        r["erank_act"], r["pr_act"] = spectrum_stats(self._matrix(m, x))

        g, g_bp = _flat(grad), _flat(grad_bp)
        r["erank_grad"], r["pr_grad"] = self._grad_stats(m, err, grad, x)
        r["erank_grad_bp"], r["pr_grad_bp"] = (r["erank_grad"], r["pr_grad"]) if exact \
            else self._grad_stats(m, err_bp, grad_bp, x)
        r["step_noise"] = None if step is None else step_noise(m.weight, step)
        if step is not None and not r["step_noise"] <= STEP_NOISE_MAX:
            step = None   # rounding, not the update, would be measured
        r["erank_step"], r["pr_step"] = (None, None) if step is None \
            else spectrum_stats(_flat(step))

        # one column order for both sides of a comparison: err's storage order
        err_s, err_bp_s = _stored(err), _stored(err_bp, like=err)
        r["angle_delta"] = angle(err_s, err_bp_s)
        r["angle_delta_sample"] = per_sample_angle(err_s, err_bp_s)
        r["angle_grad"] = angle(g, g_bp)
        r["angle_step"] = None if step is None else angle(-step, g_bp)

        # the first layer sends nothing (its input is data): its feedback is never used, so
        # its alignment with W means nothing and is not reported
        fb = self.rule.effective_feedback(m) if self.rule.has_feedback and not m.is_first \
            else None
        if fb is not None and fb.shape == m.weight.shape:
            r["angle_weight"] = angle(m.weight, fb)
            w_norm = torch.linalg.vector_norm(m.weight.float())
            r["fb_ratio"] = float(torch.linalg.vector_norm(fb.float()) / w_norm)
        else:
            r["angle_weight"] = r["fb_ratio"] = None

        nxt = self._pairs.get(m)
        r["cons_drift"] = None if nxt is None else conservation_drift(
            self._conservation(m, nxt), self._c0[m])
        return {k: v if isinstance(v, int) else _num(v) for k, v in r.items()}


def _stored(t: Tensor, like: Tensor | None = None) -> Tensor:
    """t (N, C, H, W) with its dims in the order `like` (default: t) is stored in: a
    channels_last tensor as the view (N, H, W, C), which flattens without the copy that NCHW
    order costs it (a 256 × 16·28·28 error: ~10 % of a CNN probe). Spectra and angles do not
    depend on the columns' order, only on both sides of a comparison sharing it."""
    ref = t if like is None else like
    if ref.dim() == 4 and not ref.is_contiguous() and \
            ref.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1)
    return t


def _flat(w: Tensor) -> Tensor:
    """A weight-shaped tensor as out × in·kh·kw."""
    return w.detach().float().reshape(w.shape[0], -1)


def _num(x: float | None) -> float | None:
    """JSON has no NaN or inf: an undefined number is reported as None."""
    return None if x is None or not math.isfinite(x) else float(x)
