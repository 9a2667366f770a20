"""Solutions to the exercises of notebooks/10_reward_hacking.ipynb (checked by tests/test_exercises.py)."""
import torch


def my_tv(p, q):
    # half the total absolute change of probability
    return 0.5 * (p - q).abs().sum().item()


def my_kl(p, q):
    # Σ p·(log p − log q) over the answers p gives mass to (0·log 0 counts 0, not NaN)
    terms = torch.where(p > 0, p * (p.log() - q.log()), 0.0)
    return terms.sum().item()


def my_true_reward_at_optimum(logp_anchor, r_proxy, r_true, beta):
    # the optimum of the objective GRPO maximises, built from the proxy, in log space
    log_pi_star = torch.log_softmax(logp_anchor + r_proxy / beta, dim=-1)
    # judged by the true reward: E_{π*}[r_true]
    return (log_pi_star.exp() * r_true).sum().item()


def my_adaptive_beta(beta, kl, target_kl, n, horizon):
    # proportional error, clipped to ±0.2
    e = min(max(kl / target_kl - 1.0, -0.2), 0.2)
    # a multiplicative step, scaled by how many samples this step saw
    return beta * (1.0 + e * n / horizon)
