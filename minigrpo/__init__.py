"""minigrpo: GRPO written out piece by piece, exact on bandits, the same code on language models.

The bandit layer imports only torch, numpy and gymnasium; language-model pieces import
transformers where they are used.
"""
from .advantages import (BASELINES, BATCH_MEAN, GROUP_MEAN, GROUP_MEAN_STD, LEAVE_ONE_OUT, NONE, Baseline,
                         LearnedValue, batch_mean, group_mean, group_mean_std, leave_one_out, no_baseline)
from .bandit import BanditConfig, BanditResult, run_bandit, skewed_anchor, sweep_beta
from .kl import (ESTIMATORS, K1, K2, K3, AdaptiveBeta, Estimator, FixedBeta, KLInLoss, KLInReward, NoKL, exact_kl,
                 k1, k2, k3, parse_kl)
from .loss import (PLAIN, Surrogate, aggregate, clip_fraction, clipped, constant_normaliser, pg_loss, pg_loss_grad,
                   seq_mean_token_mean, token_mean)
from .masks import masked_mean, masked_sum
from .optim import LeanAdam
from .optimum import (expected_reward, kl_divergence, objective, optimal_policy, reverse_kl_fixed_point,
                      total_variation)
from .policies import AutogradPolicy, MLPPolicy, TabularSoftmaxPolicy, frozen_copy
from .recipe import PRESETS, Recipe, deepseek_grpo, dr_grpo, preset, rloo, seed_grpo
from .rewards import ArmRewards, check_rewards
from .sampling import Rollout, sample_categorical, sample_group
from .train import Step, grpo_step, train

__version__ = "0.1.0"
