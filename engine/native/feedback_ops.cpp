// fa's weight layers as C++ autograd ops: the forward is the ordinary Linear / Conv2d; the
// backward sends the error through the feedback tensor `fb` (W's shape) instead of W and
// computes the true weight and bias gradients. The same calls, in the same order, as the
// Python backward of engine/layers.py (_RuleFn), so both give bit-identical gradients; this
// one saves the ~20 µs of Python a small layer's backward costs (docs/benchmarks.md).
//
// Built once per torch version by engine/native/__init__.py; the training forward uses it
// when it is built and nothing needs the Python backward (diagnostics, ldfa, dfa, autocast).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// t in dtype dt, without a dispatcher call in the common case where it already is (the
// Python backward's `_as`): the backward runs once per layer per step.
at::Tensor as(const at::Tensor& t, at::ScalarType dt) {
  return t.scalar_type() == dt ? t : t.to(dt);
}

// What both forwards save: the input, W (for its dtype and shape), the feedback tensor and
// whether there is a bias (a C++ Function's needs_input_grad is true for an absent one).
void save(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
          const c10::optional<at::Tensor>& b, const at::Tensor& fb) {
  ctx->save_for_backward({x, w, fb});
  ctx->saved_data["bias"] = b.has_value();
}

struct Saved {
  at::Tensor x, w, fb;
  bool need_b;
};

Saved saved(AutogradContext* ctx) {
  auto v = ctx->get_saved_variables();
  return {v[0], v[1], v[2], ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)};
}

struct FeedbackLinear : public torch::autograd::Function<FeedbackLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& b, const at::Tensor& fb) {
    save(ctx, x, w, b, fb);
    return at::linear(x, w, b);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [x, w, fb, need_b] = saved(ctx);
    const at::Tensor& g = grads[0];
    const bool flat = g.dim() == 2;  // an MLP's (N, features); tokens are (N, T, D)
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) {
      at::Tensor f = as(fb, g.scalar_type());
      gx = flat ? g.mm(f) : at::matmul(g, f);
    }
    at::Tensor g2 = flat ? g : g.reshape({-1, g.size(-1)});
    if (ctx->needs_input_grad(1)) {
      at::Tensor h = flat ? x : x.reshape({-1, x.size(-1)});
      gw = as(g2.t().mm(as(h, g.scalar_type())), w.scalar_type());
    }
    if (need_b) {
      gb = as(g2.sum(0), w.scalar_type());
    }
    return {gx, gw, gb, at::Tensor()};
  }
};

struct FeedbackConv2d : public torch::autograd::Function<FeedbackConv2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& b, const at::Tensor& fb,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
    save(ctx, x, w, b, fb);
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    return at::conv2d(x, w, b, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [x, w, fb, need_b] = saved(ctx);
    const at::Tensor& g = grads[0];
    const auto dt = g.scalar_type();
    // one fused call: grad_input uses fb; grad_weight needs only x and g (fb gives its shape)
    auto [gx, gw, gb] = at::convolution_backward(
        g, as(x, dt), as(fb, dt),
        need_b ? at::OptionalIntArrayRef(at::IntArrayRef({w.size(0)})) : c10::nullopt,
        ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
        ctx->saved_data["dilation"].toIntVector(), false, {0, 0},
        ctx->saved_data["groups"].toInt(),
        {ctx->needs_input_grad(0), ctx->needs_input_grad(1), need_b});
    return {gx, gw.defined() ? as(gw, w.scalar_type()) : gw,
            gb.defined() ? as(gb, w.scalar_type()) : gb,
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor feedback_linear(const at::Tensor& x, const at::Tensor& w,
                           const c10::optional<at::Tensor>& b, const at::Tensor& fb) {
  return FeedbackLinear::apply(x, w, b, fb);
}

at::Tensor feedback_conv2d(const at::Tensor& x, const at::Tensor& w,
                           const c10::optional<at::Tensor>& b, const at::Tensor& fb,
                           at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, int64_t groups) {
  return FeedbackConv2d::apply(x, w, b, fb, stride, padding, dilation, groups);
}

}  // namespace

TORCH_LIBRARY(fa_tui, m) {
  m.def("feedback_linear(Tensor x, Tensor w, Tensor? b, Tensor fb) -> Tensor");
  m.def("feedback_conv2d(Tensor x, Tensor w, Tensor? b, Tensor fb, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups) -> Tensor");
}

TORCH_LIBRARY_IMPL(fa_tui, CompositeImplicitAutograd, m) {
  m.impl("feedback_linear", feedback_linear);
  m.impl("feedback_conv2d", feedback_conv2d);
}
