"""Where PPO, DPO, IPO and offline GRPO land on the bandit, checked against exact answers.

The bandit is the default one (5 arms, means 0.1 … 0.9, the skewed anchor, β = 0.1, G = 128). Each
method's final policy is compared with its closed-form fixed point:

* PPO (a learned value, GAE, the k1 KL as a per-token reward) — π* ∝ π_anchor·exp(r/β); with β = 0, the best arm;
* DPO — π* with the population preferences, and *exactly* π_anchor·exp(ŝ/β) with ŝ the Bradley–Terry
  maximum-likelihood scores of the pairs actually drawn (the DPO loss on counted pairs is that likelihood);
* IPO — ``optimum.ipo_optimum`` (log-ratios follow win rates against the anchor), not π*;
* offline GRPO (importance ratios to the behaviour policy) — π* when the behaviour covers every arm, exactly
  π_anchor·exp(r̂/β) on the logged mean rewards r̂; nothing at all about an arm it never logged.

Each test quotes the gaps measured (torch CPU, seeds 0/1/2 by hand; the test runs seed 0) and its bound.
"""
import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from minigrpo.bandit.config import BanditConfig, skewed_anchor
from minigrpo.bandit.policies import TabularSoftmaxPolicy
from minigrpo.bandit.runner import run_bandit
from minigrpo.cli import main
from minigrpo.core.offline import LoggedBatch, offline_step
from minigrpo.core.optimizer import LeanAdam
from minigrpo.core.optimum import bradley_terry, ipo_optimum, kl_divergence, optimal_policy
from minigrpo.core.recipe import compose

pytestmark = pytest.mark.usefixtures("one_thread")

MEANS = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
ANCHOR = torch.tensor(skewed_anchor(5))
BETA = 0.1
STAR = optimal_policy(ANCHOR.log(), MEANS, BETA).exp()      # π*(best arm) = 0.826


def kl(p, q):
    """KL(p ‖ q) for probability vectors, in float64."""
    return kl_divergence(p.double().log(), q.double().log()).item()


def run(**kw):
    return run_bandit(BanditConfig(**kw))


# --- PPO ----------------------------------------------------------------------------------------------------

def test_ppo_with_the_kl_in_the_reward_reaches_pi_star():
    """PPO (critic V(x), GAE, clip 0.2, 4 epochs, k1 per-token KL reward), 1000 steps: KL(π ‖ π*) measured
    6.0e-4 / 6.2e-4 / 1.0e-3 (seeds 0/1/2; 4.3e-4 at the default 4000 steps); bound 2e-3. It starts at KL 3.0
    (the anchor)."""
    res = run(method="ppo", steps=1000)
    assert res.config.recipe == "ppo" and res.config.kl == "token:k1" and res.config.baseline == "gae"
    gap = res.kl_to_optimum()[-1, 0].item()
    assert gap < 2e-3, gap
    assert res.kl_to_optimum()[0, 0].item() > 1000 * gap


def test_ppo_without_a_kl_goes_to_the_best_arm():
    """β = 0: the fixed point is the point mass on the best arm. 500 steps: π(best) measured
    0.9985 / 0.9985 / 0.9987 (seeds 0/1/2); bound > 0.99."""
    res = run(method="ppo", kl="token:k1", beta=0.0, steps=500)
    assert res.policy[0].argmax().item() == 4 and res.policy[0, 4].item() > 0.99, res.policy[0].tolist()


# --- DPO ----------------------------------------------------------------------------------------------------

def bradley_terry_mle(wins: torch.Tensor) -> torch.Tensor:
    """Scores ŝ (s_0 = 0) maximising Σ_{a,b} n_ab·log σ(s_a − s_b) for the win counts n (K, K): Newton, float64."""
    n = wins.double()
    games = n + n.T
    s = torch.zeros(len(n), dtype=torch.float64)
    for _ in range(30):
        p = torch.sigmoid(s[:, None] - s[None, :])
        grad = (n - games * p).sum(1)
        info = games * p * (1 - p)
        info = torch.diag(info.sum(1)) - info                   # the Fisher information, a graph Laplacian
        s[1:] += torch.linalg.solve(info[1:, 1:], grad[1:])
    assert grad[1:].abs().max() < 1e-8 * n.sum()
    return s


@pytest.fixture(scope="module")
def dpo_runs():
    """DPO for 10³ … 10⁶ pairs, 2000 full-batch steps each (the least likely arm's log-prob is still 5e-4 off
    its limit after 1000 steps, 1e-5 after 2000)."""
    return {pairs: run(method="dpo", pairs=pairs, steps=2000) for pairs in (10**3, 10**4, 10**5, 10**6)}


def test_dpo_reaches_pi_star_and_the_gap_shrinks_with_more_pairs(dpo_runs):
    """KL(π ‖ π*) measured for 10³ / 10⁴ / 10⁵ / 10⁶ pairs:
    seed 0: 4.8e-2 / 1.3e-2 / 4.5e-4 / 1.3e-4;  seed 1: 6.4e-2 / 1.3e-2 / 6.7e-3 / 4.8e-4;
    seed 2: 0.74 / 1.6e-2 / 2.0e-4 / 2.7e-4. Not monotone for every seed (seed 2), but the smallest set is
    ≥ 130× farther than the largest for each; bounds: ≥ 10× and < 2e-3 at 10⁶ pairs."""
    gaps = [kl(r.policy[0], STAR) for r in dpo_runs.values()]
    assert gaps[0] > 10 * gaps[-1], gaps
    assert gaps[-1] < 2e-3, gaps


def test_dpo_lands_on_the_bradley_terry_fit_of_the_pairs_it_drew(dpo_runs):
    """DPO's loss on the counted pairs is the Bradley–Terry negative log-likelihood with scores β·log π/π_anchor,
    so it converges to π_emp ∝ π_anchor·exp(ŝ/β), ŝ the maximum-likelihood scores of ``pair_wins``, whatever
    the sampling error of the pairs. Measured max |log π − log π_emp| 2.6e-6 … 1.2e-5 (float32 weights) for every
    pair count and seed; bound 1e-4 on the log-probabilities — while KL(π ‖ π*) is as large as 0.74."""
    for pairs, res in dpo_runs.items():
        s = bradley_terry_mle(res.extra["pair_wins"][0])
        emp = torch.log_softmax(ANCHOR.double().log() + s / BETA, -1)
        diff = (res.policy[0].double().log() - emp).abs().max().item()
        assert diff < 1e-4, (pairs, diff)


# --- IPO ----------------------------------------------------------------------------------------------------

def test_ipo_lands_on_its_own_fixed_point_not_pi_star():
    """10⁶ pairs, 1000 steps (IPO is a least-squares fit: converged after a few hundred).
    KL to ``ipo_optimum`` measured 2.1e-5 / 3.1e-5 / 4.2e-5 (seeds 0/1/2; 1.5e-4 … 5e-4 with 10⁵ pairs),
    bound 1e-3; KL to π* 1.33, bound > 1. On the pairs drawn, the least-squares point of
    Σ n_ab·(u_a − u_b − 1/(2τ))² matches to max |Δ log π| ≈ 2e-7 … 4e-7; bound 1e-5."""
    res = run(method="ipo", pairs=10**6, steps=1000)
    fixed = ipo_optimum(ANCHOR.double().log(), bradley_terry(MEANS.double()), BETA).exp()
    torch.testing.assert_close(res.fixed_point()[0].double(), fixed, rtol=1e-5, atol=1e-6)
    assert kl(res.policy[0], fixed) < 1e-3
    assert kl(res.policy[0], STAR) > 1.0
    # the empirical least-squares solution on the drawn pair counts: normal equations on the comparison graph
    n = res.extra["pair_wins"][0].double()
    games = n + n.T
    laplacian = torch.diag(games.sum(1)) - games
    u = torch.zeros(5, dtype=torch.float64)
    u[1:] = torch.linalg.solve(laplacian[1:, 1:], (n.sum(1) - n.sum(0))[1:] / (2 * BETA))
    emp = torch.log_softmax(ANCHOR.double().log() + u, -1)
    assert (res.policy[0].double().log() - emp).abs().max().item() < 1e-5


@pytest.mark.parametrize("case", ["bradley_terry_anchor", "random_preferences_other_sampler"])
def test_ipo_optimum_minimises_the_population_ipo_loss(case):
    """ipo_optimum against a direct minimisation (float64, autograd + LBFGS) over log-ratios u of

        L(u) = Σ_{y,y'} μ(y)μ(y')·[p(y≻y')·(u_y − u_y' − 1/(2τ))² + p(y'≻y)·(u_y' − u_y − 1/(2τ))²]

    for pairs drawn from μ and labelled by p; π ∝ π_anchor·exp(u). Measured agreement 1.1e-8 in log π
    (LBFGS's own tolerance); bound 1e-6."""
    g = torch.Generator().manual_seed(0)
    K, tau = 6, 0.3
    logp_anchor = torch.log_softmax(torch.randn(K, generator=g, dtype=torch.float64), -1)
    if case == "bradley_terry_anchor":
        pref, mu, sampler = bradley_terry(torch.rand(K, generator=g, dtype=torch.float64) * 3), logp_anchor.exp(), None
    else:
        upper = torch.rand(K, K, generator=g, dtype=torch.float64).triu(1)
        pref = upper + (1 - upper.T).tril(-1) + 0.5 * torch.eye(K, dtype=torch.float64)   # p + pᵀ = 1, not BT
        mu = sampler = torch.softmax(torch.randn(K, generator=g, dtype=torch.float64), -1)
    assert torch.allclose(pref + pref.T, torch.ones(K, K, dtype=torch.float64))

    u = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    c = 1 / (2 * tau)
    w = mu[:, None] * mu[None, :]

    def closure():
        opt.zero_grad()
        d = u[:, None] - u[None, :]                             # d[y, y'] = u_y − u_y'
        loss = (w * (pref * (d - c) ** 2 + pref.T * (-d - c) ** 2)).sum()
        loss.backward()
        return loss

    opt = torch.optim.LBFGS([u], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")
    opt.step(closure)
    direct = torch.log_softmax(logp_anchor + u.detach(), -1)
    torch.testing.assert_close(ipo_optimum(logp_anchor, pref, tau, sampler), direct, rtol=0, atol=1e-6)


# --- offline GRPO -----------------------------------------------------------------------------------------------

def empirical_fixed_point(res):
    """π ∝ π_anchor·exp(r̂/β) with r̂ the logged mean reward of each arm (every arm logged)."""
    return torch.softmax(ANCHOR.double().log() + res.extra["logged_reward"][0].double() / BETA, -1)


def test_offline_grpo_reaches_pi_star_and_exactly_the_fixed_point_of_its_logged_data():
    """Behaviour = the anchor (every arm logged), 4000 steps. KL(π ‖ π*) measured for 10³ / 10⁵ logged pulls:
    seed 0 2.0e-2 / 2.0e-4, seed 1 1.5e-2 / 1.5e-4, seed 2 4.2e-2 / 1.2e-4 (≥ 79× apart); bounds ≥ 10× apart and
    < 1e-3 at 10⁵. KL to the logged data's own fixed point π_anchor·exp(r̂/β): 2.5e-4 / 1.1e-4, 1.8e-4 / 2.1e-4,
    6.6e-4 / 1.2e-4; bound < 1e-3 and, at 10³ pulls, ≤ 1/10 of the gap to π* (measured 63× … 84× smaller)."""
    few, many = run(method="offline_grpo", logged=10**3), run(method="offline_grpo", logged=10**5)
    gap_few, gap_many = kl(few.policy[0], STAR), kl(many.policy[0], STAR)
    assert gap_many < 1e-3 and gap_few > 10 * gap_many, (gap_few, gap_many)
    for res, gap in ((few, gap_few), (many, gap_many)):
        assert res.extra["logged_arms"].all()
        own = empirical_fixed_point(res)
        torch.testing.assert_close(res.fixed_point()[0].double(), own, rtol=1e-5, atol=1e-7)
        assert kl(res.policy[0], own) < 1e-3
        assert res.summary()["kl_to_fixed_point"] == pytest.approx(kl(res.policy[0], own), rel=1e-3, abs=1e-7)
    assert kl(few.policy[0], empirical_fixed_point(few)) < gap_few / 10


def test_offline_grpo_cannot_learn_an_arm_it_never_saw():
    """Behaviour [¼, ¼, ¼, ¼, 0]: the best arm is never logged. On the four logged arms π, renormalised, is π*
    renormalised (KL measured 3.0e-4 / 2.4e-4 / 7.4e-5, seeds 0/1/2; bound 2e-3), but π(best) ends at 0.002
    where π*(best) = 0.83 (bound < 0.05), and KL(π ‖ π*) ≈ 1.73 (bound > 1)."""
    res = run(method="offline_grpo", behaviour=[0.25, 0.25, 0.25, 0.25, 0.0])
    pi = res.policy[0]
    assert res.extra["logged_arms"][0].tolist() == [True, True, True, True, False]
    assert kl(pi[:4] / pi[:4].sum(), STAR[:4] / STAR[:4].sum()) < 2e-3
    assert pi[4].item() < 0.05 and STAR[4].item() > 0.8
    assert kl(pi, STAR) > 1.0
    # the fixed point the runner reports keeps the run's own mass on the unseen arm
    assert res.fixed_point()[0, 4].item() == pytest.approx(pi[4].item(), rel=1e-5)
    assert res.summary()["kl_to_fixed_point"] < 2e-3


def offline_by_hand(importance: bool, baseline: str, steps: int, G: int = 128, lr: float = 0.03, seed: int = 0):
    """Offline GRPO written out: each step G pulls from the behaviour μ = π_anchor with noiseless rewards
    r = μ_arm, and ``offline_step`` with the ratio either to μ (``importance``) or to the policy's own current
    log-probs (ratio 1: no importance weights). Adam with the runner's linear learning-rate decay."""
    g = torch.Generator().manual_seed(seed)
    policy = TabularSoftmaxPolicy.from_probs(ANCHOR)
    anchor = TabularSoftmaxPolicy.from_probs(ANCHOR, trainable=False)
    opt, recipe = LeanAdam(policy.parameters(), lr=lr), compose("seed", baseline=baseline)
    prompts = torch.zeros(1, dtype=torch.long)
    mask, valid = torch.ones(1, G, 1, dtype=torch.bool), torch.ones(1, G, dtype=torch.bool)
    for t in range(steps):
        y = torch.multinomial(ANCHOR, G, replacement=True, generator=g).view(1, G, 1)
        logp = ANCHOR.log()[y] if importance else policy.log_probs(prompts, y).detach()
        offline_step(policy, anchor, LoggedBatch(prompts, y, mask, MEANS[y[..., 0]], valid, logp), recipe, BETA, opt)
        opt.lr = lr * (1 - 0.99 * (t + 1) / (steps - 1))
    return policy.distribution(prompts)[0].exp()


def no_importance_fixed_point(baseline_none: bool = True) -> torch.Tensor:
    """Where offline GRPO with ratio 1 and no baseline settles: its expected step in the logits,
    μ_k·R_k − π_k·Σ_y μ_y·R_y with R_k = r_k − β·log(π_k/π_anchor,k), vanishes. For a given c = Σ μ·R,
    π_k·c = μ_k·R_k has one root per arm (left side rising, right side falling in π_k); c is set by Σ π = 1.
    Both roots by bisection, in float64."""
    mu, a, r = ANCHOR.double(), ANCHOR.double(), MEANS.double()

    def pi_of(c):
        lo, hi = torch.full_like(r, -700.0), torch.zeros_like(r)            # bisect on x = log π_k
        for _ in range(80):
            x = (lo + hi) / 2
            up = c * x.exp() > mu * (r - BETA * (x - a.log()))
            lo, hi = torch.where(up, lo, x), torch.where(up, x, hi)
        return ((lo + hi) / 2).exp()

    c_lo, c_hi = 1e-6, 10.0
    for _ in range(80):
        c = (c_lo + c_hi) / 2
        c_lo, c_hi = (c, c_hi) if pi_of(c).sum() > 1 else (c_lo, c)
    return pi_of((c_lo + c_hi) / 2)


def test_offline_grpo_without_importance_weights():
    """Importance weights matter where the update's zero depends on who sampled. Noiseless rewards, behaviour = anchor:

    * baseline 'none' with ratios to μ: π* (KL measured 8.5e-4 / 5.0e-4, seeds 0/1, 3000 steps; bound 3e-3);
    * baseline 'none' with ratio 1: lands where μ_k·R_k = π_k·E_μ[R] (``no_importance_fixed_point``), KL to it
      measured 2.0e-4 / 6.4e-5 (1500 steps; bound 1e-3), KL to π* 1.70 (bound > 1);
    * baseline 'group_mean' with ratio 1: π* again (KL measured 1e-8; bound 1e-5): the expected step,
      ∝ μ_k·(R_k − E_μ[R]), vanishes where R_k is the same on every arm μ samples — π* ∝ π_anchor·exp(r/β), a
      condition that does not involve μ. So on this bandit the group mean, not the ratio, is what keeps
      offline GRPO on π*; the ratio matters without a baseline (and for how fast each arm moves)."""
    fixed = no_importance_fixed_point()
    mu, R = ANCHOR.double(), MEANS.double() - BETA * (fixed.log() - ANCHOR.double().log())
    torch.testing.assert_close(mu * R, fixed * (mu * R).sum(), rtol=0, atol=1e-12)     # it is the stationary point
    weighted = offline_by_hand(True, "none", 3000)
    assert kl(weighted, STAR) < 3e-3
    unweighted = offline_by_hand(False, "none", 1500)
    assert kl(unweighted, fixed) < 1e-3 and kl(unweighted, STAR) > 1.0
    assert kl(offline_by_hand(False, "group_mean", 1500), STAR) < 1e-5


# --- GRPO and the command line ---------------------------------------------------------------------------------

def test_grpo_with_the_default_recipe_still_reaches_pi_star():
    """method None → grpo, recipe seed, 4000 steps: KL(π ‖ π*) measured 2.4e-4; bound 1e-3."""
    res = run()
    assert (res.config.method, res.config.recipe, res.config.updates) == ("grpo", "seed", 1)
    assert res.fixed_point() is None and "fixed_point" not in res.summary()
    assert res.summary()["kl_to_optimum"] < 1e-3


def test_cli_method_round_trip_json():
    """`minigrpo bandit --method dpo --json` in a fresh process prints one JSON object; ipo and offline_grpo
    add their own fixed point."""
    out = subprocess.run([sys.executable, "-m", "minigrpo.cli", "bandit", "--method", "dpo", "--json", "--steps", "500"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout
    res = json.loads(lines[0])
    assert res["method"] == "dpo" and res["config"]["method"] == "dpo"
    assert len(res["policy"]) == 5 and abs(sum(res["policy"]) - 1) < 1e-5
    assert res["optimum"] == pytest.approx(STAR.tolist(), rel=1e-5)
    assert 0 <= res["kl_to_optimum"] < 1e-2 and "fixed_point" not in res


@pytest.mark.parametrize("method", ["ipo", "offline_grpo"])
def test_cli_json_and_text_carry_the_methods_own_fixed_point(method, capsys):
    assert main(["bandit", "--method", method, "--steps", "300", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == method and len(res["fixed_point"]) == 5
    assert math.isfinite(res["kl_to_fixed_point"]) and res["kl_to_fixed_point"] >= 0
    assert main(["bandit", "--method", method, "--steps", "300"]) == 0
    text = capsys.readouterr().out
    for word in (f"method={method}", "optimum pi*", "fixed point", "KL(pi || fixed)"):
        assert word in text, text


def test_cli_text_names_the_method_and_only_its_own_data(capsys):
    assert main(["bandit", "--method", "dpo", "--steps", "50", "--pairs", "1000"]) == 0
    text = capsys.readouterr().out
    assert "method=dpo" in text and "pairs=1000" in text and "fixed point" not in text and "recipe=" not in text


# --- refusals and sweeps ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--method", "ppo", "--recipe", "deepseek"], "recipe='deepseek'"),
    (["--recipe", "ppo", "--method", "grpo"], "recipe='ppo'"),
    (["--method", "offline_grpo", "--behaviour", "0.5,0.5"], "behaviour=[0.5, 0.5]"),
    (["--method", "offline_grpo", "--behaviour", "0.2,0.2,0.2,0.2,0.3"], "summing to 1"),
    (["--method", "offline_grpo", "--behaviour", "0.6,0.2,0.2,0.2,-0.2"], "-0.2]"),
    (["--method", "dpo", "--behaviour", "0.2,0.2,0.2,0.2,0.2"], "offline_grpo only"),
    (["--method", "ppo", "--baseline", "value"], "baseline='value'"),
    (["--method", "ppo", "--kl", "reward:k1"], "token:"),
])
def test_config_refusals_are_one_clear_line(args, needle, capsys):
    assert main(["bandit", *args, "--steps", "10"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("method", ["dpo", "offline_grpo"])
def test_beta_sweep_runs_one_by_one_and_gives_per_beta_policies(method):
    """A β sweep for dpo and offline_grpo is one run per β, one after another: row i equals the single run
    at β_i, and each row sits near its own π*(β_i). 1000 steps; KL(π ‖ π*(β)) for β = 0.1 / 0.3 / 1 measured
    dpo 4.6e-4 / 2.2e-4 / 3.7e-5 (seed 0; at most 6.6e-3 over seeds 0–2), offline_grpo 4.6e-3 / 2.3e-4 / 1.3e-5
    (at most 4.6e-3); bound 2e-2."""
    betas = [0.1, 0.3, 1.0]
    cfg = BanditConfig(method=method, steps=1000)
    res = run_bandit(cfg, betas=betas)
    assert res.policy.shape == (3, 5) and res.optimum.shape == (3, 5) and res.betas.tolist() == betas
    for i, b in enumerate(betas):
        torch.testing.assert_close(res.optimum[i], optimal_policy(ANCHOR.log(), MEANS, b).exp())
        assert res.summary(i)["beta"] == b
        assert res.kl_to_optimum()[-1, i].item() < 2e-2, (b, res.kl_to_optimum()[-1].tolist())
    single = run_bandit(replace(cfg, beta=0.3))
    torch.testing.assert_close(res.policy[1], single.policy[0])
    extra = "pair_wins" if method == "dpo" else "logged_reward"
    assert res.extra[extra].shape[0] == 3
