"""minigrpo: GRPO written out piece by piece, exact on bandits, the same code on language models.

The bandit layer imports only torch, numpy and gymnasium; language-model pieces import
transformers where they are used.
"""
from minigrpo.core.advantages import (BASELINES, BATCH_MEAN, GROUP_MEAN, GROUP_MEAN_STD, LEAVE_ONE_OUT, NONE, Baseline,
                         LearnedValue, batch_mean, group_mean, group_mean_std, leave_one_out, no_baseline)
from minigrpo.bandit.config import BanditConfig, skewed_anchor
from minigrpo.bandit.runner import BanditResult, run_bandit, sweep_beta
from minigrpo.core.kl import (ESTIMATORS, K1, K2, K3, AdaptiveBeta, Estimator, FixedBeta, KLInLoss, KLInReward,
                 KLInTokenReward, NoKL, exact_kl,
                 k1, k2, k3, parse_kl)
from minigrpo.core.loss import (PLAIN, AutogradGradient, Surrogate, aggregate, clip_fraction, clipped, constant_normaliser,
                   group_token_mean, pg_loss, pg_loss_grad, seq_mean_token_mean, token_mean)
from minigrpo.core.masks import masked_mean, masked_sum
from minigrpo.core.optimizer import LeanAdam
from minigrpo.core.optimum import (bradley_terry, dpo_optimum, expected_reward, ipo_optimum, kl_divergence,
                                   logged_optimum, objective, optimal_policy, reverse_kl_fixed_point, total_variation)
from minigrpo.bandit.policies import AutogradPolicy, MLPPolicy, TabularSoftmaxPolicy, frozen_copy
from minigrpo.core.recipe import METHODS, PRESETS, Recipe, deepseek_grpo, dr_grpo, ppo, preset, rloo, seed_grpo
from minigrpo.core.critic import GAE, Critic, ValueTable, gae, value_loss
from minigrpo.core.preference import DPO, IPO, preference_margin, preference_step
from minigrpo.core.offline import LoggedBatch, hybrid_step, offline_step
from minigrpo.bandit.arms import ArmRewards
from minigrpo.core.scored import check_rewards
from minigrpo.core.protocols import (Anchor, Decoder, Named, NextTokenPolicy, Policy, Reward, RewardComponent,
                                     RolloutReward, Sampler, TextReward, require)
from minigrpo.core.sampling import PrefixDecoding, Rollout, sample_categorical, sample_group
from minigrpo.core.step import Step, collect, grpo_step, learn, train

__version__ = "0.1.0"
