"""Masked reductions: the one helper every loss, KL and metric uses to ignore padding.

Symbols: ``x`` any tensor, ``mask`` a boolean or 0/1 tensor of the same shape (True on real tokens).
"""
from __future__ import annotations

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim=None) -> Tensor:
    """Σ x·m over ``dim`` (all dims when None). Padding contributes exactly zero, even if x is inf there."""
    x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim=None) -> Tensor:
    """Σ x·m / Σ m over ``dim``. An all-padding slice gives 0, not NaN (its count is clamped to 1)."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp_min(1).to(x.dtype)
