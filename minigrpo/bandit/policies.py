"""Policies: anything that gives next-token logits and per-token log-probs in the P × G × T layout.

Each policy here is a ``protocols.Policy`` and a ``protocols.NextTokenPolicy``:

* ``next_token_logp(prompts, prefix)``: prefix (P, G, t) → next-token log-probs (P, G, V); sampling
  reaches it through ``decoder`` and ``sampling_context``, inherited from ``sampling.PrefixDecoding``;
* ``log_probs(prompts, completions)``: completions (P, G, T) → log π(y_t | x, y_<t), (P, G, T);
* ``accumulate_grad(prompts, completions, logp, psi)``: add Σ ψ·∂logp/∂θ to each parameter's
  ``.grad``, where ψ = ∂L/∂logp comes from the loss (see ``loss.py``).

Neural policies get ``accumulate_grad`` from autograd (``logp.backward(psi)``). The tabular
softmax policy writes its gradient in closed form, which is what makes thousands of bandit
steps a second possible.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from minigrpo.core.loss import AutogradGradient
from minigrpo.core.sampling import PrefixDecoding


class AutogradPolicy(PrefixDecoding, AutogradGradient, nn.Module):
    """Base for neural bandit policies: sampling through ``next_token_logp`` (``PrefixDecoding``), the
    parameter gradient from autograd (``AutogradGradient``: ``logp.backward(psi)``)."""


class TabularSoftmaxPolicy(PrefixDecoding, nn.Module):
    """π(y | x) = softmax(θ_x)_y: one row of logits θ_x ∈ R^V per prompt id x.

    A K-armed bandit is one row (prompt id 0) over V = K arms. Several rows serve a contextual
    bandit with discrete contexts, or several independent runs side by side (a β sweep). The
    completion ignores its own prefix, so every token is drawn from the same row.

    ====================  ==============  ======================================
    ``theta``             (n_rows, V)     logits, the parameters
    ``prompts``           (P,) long       row ids
    ====================  ==============  ======================================
    """

    def __init__(self, n_rows: int, n_actions: int, logits: Tensor | None = None):
        super().__init__()
        theta = torch.zeros(n_rows, n_actions) if logits is None else torch.as_tensor(logits, dtype=torch.get_default_dtype()).clone()
        if theta.shape != (n_rows, n_actions):
            raise ValueError(f"TabularSoftmaxPolicy: logits shape {tuple(theta.shape)} != (n_rows, n_actions) = {(n_rows, n_actions)}")
        self.theta = nn.Parameter(theta)
        # log softmax(θ) and its rows for the last prompts, each with the key it was computed for. A plain
        # dict: setting an attribute of an nn.Module costs ~1.7 µs, a dict entry 0.07 µs, and the table is
        # recomputed every bandit step
        self._cache = {"table": (None, None), "rows": (None, None)}

    @classmethod
    def from_probs(cls, probs, n_rows: int = 1, trainable: bool = True) -> "TabularSoftmaxPolicy":
        """A policy whose every row is the distribution ``probs`` (V,) or whose rows are ``probs`` (n_rows, V)."""
        probs = torch.as_tensor(probs, dtype=torch.get_default_dtype())
        logits = probs.log().expand(n_rows, -1) if probs.dim() == 1 else probs.log()
        pol = cls(logits.shape[0], logits.shape[1], logits)
        pol.requires_grad_(trainable)
        return pol

    def table(self) -> Tensor:
        """log softmax(θ) for every row, (n_rows, V), without a graph (the gradient is written by hand
        in ``accumulate_grad``). Cached until θ changes: sampling, log-probs and the gradient of one
        step all read the same table."""
        theta = self.theta
        key = (theta.data_ptr(), theta._version, theta.dtype)        # copies and .double() get new keys
        cached_key, table = self._cache["table"]
        if cached_key != key:
            with torch.no_grad():
                table = torch.log_softmax(theta, dim=-1)
            self._cache["table"] = (key, table)
        return table

    def distribution(self, prompts: Tensor) -> Tensor:
        """log π(· | x) for each prompt: (P, V). Cached, like the table, for the last prompts: one step
        reads the same rows three times (sampling, log-probs, gradient), and a bandit run passes the
        same prompts tensor every step."""
        table = self.table()
        cached, rows = self._cache["rows"]                   # cached: (table, prompts, prompts._version)
        if cached is None or not (cached[0] is table and cached[1] is prompts and cached[2] == prompts._version):
            rows = table[prompts]
            self._cache["rows"] = ((table, prompts, prompts._version), rows)
        return rows

    def next_token_logp(self, prompts: Tensor, prefix: Tensor) -> Tensor:
        P, G, _ = prefix.shape
        return self.distribution(prompts)[:, None, :].expand(P, G, -1)     # (P, G, V), no copy

    def log_probs(self, prompts: Tensor, completions: Tensor) -> Tensor:
        P, G, T = completions.shape
        return self.distribution(prompts).gather(1, completions.reshape(P, G * T)).view(P, G, T)

    def accumulate_grad(self, prompts, completions: Tensor, logp: Tensor, psi: Tensor) -> None:
        """Closed form of Σ ψ·∇_θ log softmax(θ_x)_y:  ∂/∂θ_x = Σ_{g,t} ψ_{g,t}·(e_{y_{g,t}} − π(·|x)).

        ``psi`` is zero on padding, so padded positions add nothing.
        """
        P, G, T = completions.shape
        theta = self.theta
        with torch.no_grad():
            psi = psi.reshape(P, G * T)
            pi = self.distribution(prompts).exp()                          # (P, V)
            g = torch.zeros_like(pi).scatter_add_(1, completions.reshape(P, G * T), psi)
            g -= pi * psi.sum(1, keepdim=True)                             # (P, V)
            if theta.grad is None:
                theta.grad = torch.zeros_like(theta)
            theta.grad.index_add_(0, prompts, g)


class MLPPolicy(AutogradPolicy):
    """π(y | x) = softmax(MLP(φ(x)))_y for a contextual bandit with context features φ (n_contexts, D).

    Prompts are context ids; ``features[prompts]`` is what the network sees.
    """

    def __init__(self, features: Tensor, n_actions: int, hidden: int = 32):
        super().__init__()
        self.register_buffer("features", torch.as_tensor(features, dtype=torch.get_default_dtype()))
        D = self.features.shape[1]
        self.net = nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, n_actions))

    def distribution(self, prompts: Tensor) -> Tensor:
        return torch.log_softmax(self.net(self.features[prompts]), dim=-1)   # (P, V)

    def next_token_logp(self, prompts: Tensor, prefix: Tensor) -> Tensor:
        P, G, _ = prefix.shape
        return self.distribution(prompts)[:, None, :].expand(P, G, -1)

    def log_probs(self, prompts: Tensor, completions: Tensor) -> Tensor:
        P, G, T = completions.shape
        return self.distribution(prompts).gather(1, completions.reshape(P, G * T)).view(P, G, T)


def frozen_copy(policy: nn.Module) -> nn.Module:
    """A detached, gradient-free copy: the usual anchor (π_anchor = the policy before RL)."""
    anchor = copy.deepcopy(policy)
    anchor.requires_grad_(False)
    return anchor.eval()
