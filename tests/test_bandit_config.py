"""BanditConfig validation, the NaN-reward guard and the import-weight promise."""
import math
import subprocess
import sys

import pytest
import torch

from minigrpo import TabularSoftmaxPolicy, grpo_step, seed_grpo, LeanAdam
from minigrpo.bandit.config import BanditConfig, skewed_anchor
from minigrpo.bandit.runner import run_bandit


def test_defaults_are_valid_and_anchor_is_skewed():
    cfg = BanditConfig()
    assert math.isclose(sum(cfg.anchor), 1.0) and cfg.anchor[0] > cfg.anchor[-1]
    assert skewed_anchor(4) == sorted(skewed_anchor(4), reverse=True)


@pytest.mark.parametrize("field,value,needle", [
    ("beta", -1.0, "beta=-1.0"), ("beta", float("nan"), "beta=nan"), ("means", [0.5], "arms=1"),
    ("anchor", [0.2, 0.2, 0.2, 0.2, 0.1], "sum to 1"), ("anchor", [0.5, 0.5], "anchor="),
    ("anchor", [1.0, 0.0, 0.0, 0.0, 0.0], "> 0"), ("group_size", 0, "group_size=0"),
    ("baseline", "median", "baseline='median'"), ("noise", "poisson", "noise='poisson'"),
    ("record_every", 0, "record_every=0"), ("final_lr_frac", 0.0, "final_lr_frac=0.0"),
])
def test_bad_fields_name_themselves(field, value, needle):
    with pytest.raises(ValueError) as e:
        BanditConfig(**{field: value})
    assert needle in str(e.value) and "allowed" in str(e.value)


def test_group_baseline_needs_two_samples():
    with pytest.raises(ValueError, match="group_size=1.*G ≥ 2"):
        BanditConfig(group_size=1, baseline="group_mean_std")


def test_nan_reward_is_an_error_naming_the_reward_not_a_silent_nan():
    pol, anc = TabularSoftmaxPolicy(1, 3), TabularSoftmaxPolicy(1, 3)
    anc.requires_grad_(False)

    def broken_reward(prompts, completions):
        r = torch.ones(completions.shape[:2])
        r[0, 1] = float("nan")
        return r

    before = pol.theta.detach().clone()
    with pytest.raises(ValueError, match="broken_reward.*non-finite"):
        grpo_step(pol, anc, torch.arange(1), broken_reward, seed_grpo(), 0.1, LeanAdam(pol.parameters(), 0.1), 4)
    assert torch.equal(pol.theta.detach(), before)          # the weights were not touched


def test_wrong_reward_count_is_an_error():
    pol, anc = TabularSoftmaxPolicy(1, 3), TabularSoftmaxPolicy(1, 3)
    with pytest.raises(ValueError, match="short.*shape"):
        def short(prompts, completions):
            return torch.ones(3)
        grpo_step(pol, anc, torch.arange(1), short, seed_grpo(), 0.1, LeanAdam(pol.parameters(), 0.1), 4)


def test_same_seed_same_run():
    cfg = BanditConfig(steps=100, group_size=8)
    assert torch.equal(run_bandit(cfg).probs, run_bandit(cfg).probs)


def test_sweep_rows_match_single_runs_in_distribution():
    """A β sweep trains each row as its own run: each row lands on its own β's optimum."""
    from minigrpo.bandit.runner import sweep_beta
    res = sweep_beta(BanditConfig(steps=1500), [0.2, 2.0])
    assert (res.kl_to_optimum()[-1] < 2e-3).all()
    assert res.policy[0, -1] > res.policy[1, -1]            # smaller β, more weight on the best arm


def test_bandit_layer_does_not_import_transformers():
    code = "import sys, minigrpo, minigrpo.bandit.runner, minigrpo.bandit.envs; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
