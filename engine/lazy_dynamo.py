"""Keep `torch._dynamo` out of a worker that never compiles: ~2.5 s and ~170 MB at start-up.

torch marks a few `torch.optim.Optimizer` methods (`add_param_group`, `state_dict`,
`load_state_dict`, `zero_grad`) with `torch._disable_dynamo`, whose wrapper imports
`torch._dynamo` on its first call to build the real `torch._dynamo.disable(fn)` and caches it
as `fn.__dynamo_disable`. Constructing any optimiser therefore imported the whole compiler stack,
which the engine never uses (it compiles nothing; CUDA graphs do not need dynamo).

`defer()` pre-fills that cache with a wrapper that calls the method directly for as long as
`torch._dynamo` has not been imported by anyone, and from the first call after it has been,
builds and uses exactly what torch would have (`torch._dynamo.disable(fn, recursive)`). So the
behaviour under `torch.compile` is unchanged, and without it the method runs as it always did:
`disable` only matters to a dynamo trace, and there can be none before dynamo is imported.
If a torch version changes the wrapper, nothing is patched and start-up is merely slower.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch


def _wrapper_code() -> Any:
    """The code object of torch's `_disable_dynamo` wrapper, to recognise wrapped methods."""
    from torch._compile import _disable_dynamo
    return _disable_dynamo(lambda: None).__code__


def _deferred(fn: Callable, recursive: bool) -> Callable:
    real: Callable | None = None

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal real
        if real is None:
            dynamo = sys.modules.get("torch._dynamo")
            if dynamo is None:
                return fn(*args, **kwargs)
            real = dynamo.disable(fn, recursive, wrapping=False)
        return real(*args, **kwargs)

    return call


def defer(*owners: type) -> int:
    """Pre-fill the `_disable_dynamo` caches of the methods of `owners` (default: every
    optimiser class torch ships); returns how many methods were deferred."""
    if "torch._dynamo" in sys.modules:
        return 0
    try:
        code = _wrapper_code()
    except Exception:  # noqa: BLE001 - a torch without this helper: nothing to defer
        return 0
    if not owners:
        owners = (torch.optim.Optimizer,)
    count = 0
    for owner in owners:
        for attr in vars(owner).values():
            if getattr(attr, "__code__", None) is not code or not attr.__closure__:
                continue
            cells = dict(zip(attr.__code__.co_freevars,
                             (c.cell_contents for c in attr.__closure__)))
            fn = cells.get("fn")
            if fn is None or getattr(fn, "__dynamo_disable", None) is not None:
                continue
            fn.__dynamo_disable = _deferred(fn, cells.get("recursive", True))
            count += 1
    return count


def _code(decorator: Callable) -> Any:
    return decorator(lambda *a, **k: None).__code__


def eager_step(opt: torch.optim.Optimizer) -> Callable[[], None]:
    """`opt.step` without its `import torch._dynamo`.

    Every torch optimiser's `step` is wrapped twice: a profiler/hook wrapper, and
    `_use_grad_for_differentiable`, which imports `torch._dynamo` on every call to place two
    `graph_break()`s around the update (they only matter to a dynamo trace). The callable
    returned here sets the grad mode exactly as that wrapper does and calls the update itself,
    while no step hooks are registered and `torch._dynamo` has not been imported; otherwise,
    and on any torch whose wrappers look different, it is simply `opt.step`."""
    from torch.optim import optimizer as mod
    try:
        hook_code = _code(torch.optim.Optimizer.profile_hook_step)
        grad_code = _code(mod._use_grad_for_differentiable)
    except Exception:  # noqa: BLE001 - another torch: use the public step
        return opt.step
    outer = type(opt).step
    middle = getattr(outer, "__wrapped__", None)
    inner = getattr(middle, "__wrapped__", None)
    if (getattr(outer, "__code__", None) is not hook_code or inner is None
            or getattr(middle, "__code__", None) is not grad_code):
        return opt.step
    pre, post = mod._global_optimizer_pre_hooks, mod._global_optimizer_post_hooks

    def step() -> None:
        if ("torch._dynamo" in sys.modules or pre or post or opt._optimizer_step_pre_hooks
                or opt._optimizer_step_post_hooks):
            opt.step()
            return
        prev = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(opt.defaults["differentiable"])
            inner(opt)
        finally:
            torch.set_grad_enabled(prev)

    return step
