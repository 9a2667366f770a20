"""Solutions to the exercises of notebooks/02_tokens_and_logprobs.ipynb (checked by tests/test_exercises.py)."""
import torch


def my_completion_mask(completions, eos_id):
    # how many EOS came strictly before t: the running count minus the token's own EOS
    is_eos = completions == eos_id
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()
    return eos_before == 0                                        # the first EOS is still True


def my_completion_logp(logits, completions, mask):
    T = completions.shape[-1]
    # column L − 1 + t predicts y_t: the last T + 1 columns, all but the very last one
    logp_all = torch.log_softmax(logits[:, -T - 1:-1], dim=-1)    # (N, T, V), stable for large logits
    logp = logp_all.gather(-1, completions[..., None])[..., 0]   # (N, T) the sampled tokens' log-probs
    return torch.where(mask, logp, torch.zeros_like(logp))        # padding: 0


def my_top_p(logp_all, p):
    sorted_logp, order = logp_all.sort(dim=-1, descending=True)
    probs = sorted_logp.exp()
    before = probs.cumsum(-1) - probs                             # mass strictly before each token
    drop_sorted = before >= p                                     # the top token has 0 before it: always kept
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)   # back to vocabulary order
    return torch.log_softmax(logp_all.masked_fill(drop, float("-inf")), dim=-1)
