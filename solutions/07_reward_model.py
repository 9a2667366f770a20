"""Solutions to the exercises of notebooks/07_reward_model.ipynb (checked by tests/test_exercises.py)."""
import torch
import torch.nn.functional as F


def my_bradley_terry_loss(r_chosen, r_rejected):
    # −log σ(margin), averaged over the pairs; logsigmoid stays finite for any margin
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def my_pair_accuracy(r_chosen, r_rejected):
    # a pair is ordered right when the chosen scores strictly higher (a tie is wrong)
    return (r_chosen > r_rejected).float().mean().item()


def my_judge_score(logp_all, verdict_ids, values):
    # the verdicts' log-probs (N, n_v), renormalised over the verdicts alone
    p = torch.softmax(logp_all[:, verdict_ids], dim=-1)
    # the expected value of the verdict: Σ_v value_v·p(v)   (N,)
    return p @ values
