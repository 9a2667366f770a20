"""A lean Adam for small policies.

``torch.optim.Adam`` is the right choice for language models. On a bandit, where a whole GRPO
step is a few dozen microseconds of arithmetic, its per-call bookkeeping (hooks, state dicts,
device and dtype checks) costs ~70 µs, more than the rest of the step, which matters when a widget
reruns 2,000 steps while a slider moves (bench/bandit_speed.py). This class does the same update
(Kingma & Ba 2015, Algorithm 1) in five in-place ops per parameter and is checked against
``torch.optim.Adam`` in the tests.
"""
from __future__ import annotations

import math
import numbers

import torch


class LeanAdam:
    """Adam: m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  θ ← θ − lr·m̂ / (√v̂ + eps)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"LeanAdam: lr={lr!r} is not allowed; it must be a finite number > 0")
        if not (len(betas) == 2 and all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"LeanAdam: betas={betas!r} is not allowed; give two numbers in [0, 1), e.g. (0.9, 0.999)")
        if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"LeanAdam: eps={eps!r} is not allowed; it must be a finite number > 0")
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("LeanAdam: no trainable parameters were given")
        self.lr, self.betas, self.eps = float(lr), betas, float(eps)
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.t += 1
        step_size = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        eps_hat = self.eps * math.sqrt(1 - b2 ** self.t)   # eps on √v̂, moved onto √v
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, v.sqrt().add_(eps_hat), value=-step_size)

    def state_dict(self) -> dict:
        return {"t": self.t, "m": [m.clone() for m in self.m], "v": [v.clone() for v in self.v]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["m"]) != len(self.m) or len(state["v"]) != len(self.v):
            raise ValueError(f"LeanAdam.load_state_dict: the state holds {len(state['m'])} parameters' moments; "
                             f"this optimizer has {len(self.m)} parameters")
        self.t = state["t"]
        for dst, src in zip(self.m + self.v, state["m"] + state["v"]):
            dst.copy_(src)


def adamw(params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` for a language-model policy, with the fused kernel (one pass over each
    parameter instead of several ``foreach`` passes) where torch has it for the parameters' device:
    CPU and CUDA floating-point tensors. The update is the same AdamW (Loshchilov & Hutter 2019)."""
    params = [p for p in params if p.requires_grad]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
