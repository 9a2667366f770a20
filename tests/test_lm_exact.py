"""The exact check at language-model level: a tiny GPT-2 over 3 symbols, completions of 3 tokens
(27 sequences), trained by the shared GRPO step with the anchor KL in the reward, reaches the
enumerated optimum π*(y) ∝ π_anchor(y)·exp(r(y)/β)."""
import itertools

import pytest
import torch

from minigrpo import FixedBeta, kl_divergence, optimal_policy, seed_grpo, train
from minigrpo.lm.policy import CausalLMPolicy

transformers = pytest.importorskip("transformers")

V, T = 3, 3
SEQS = torch.tensor(list(itertools.product(range(V), repeat=T)))        # (27, 3), every completion


def tiny_lm(seed):
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=8, n_embd=32, n_layer=1, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():                                    # a peaked, SFT-like anchor, far from uniform
        model.lm_head.weight.mul_(8.0) if not cfg.tie_word_embeddings else model.transformer.wte.weight.mul_(8.0)
    return CausalLMPolicy(model, pad_id=0)


def seq_logp(policy, prompt):
    """log π(y) for all 27 sequences: Σ_t log π(y_t | x, y_<t) from one full forward pass."""
    with torch.no_grad():
        return policy.log_probs(prompt, SEQS[None]).sum(-1)[0]          # (27,)


def reward(prompts, completions):
    """r(y) = (number of 2s) / 3, + 0.5 if the sequence is 0,1,2 — a sequence-level reward."""
    r = (completions == 2).float().mean(-1)
    return r + 0.5 * (completions == torch.tensor([0, 1, 2])).all(-1).float()


def test_tiny_gpt2_reaches_the_enumerated_optimum():
    torch.manual_seed(0)
    prompt = torch.tensor([[1]])                                         # one prompt, token 1 (≠ pad 0)
    policy = tiny_lm(0)
    anchor = policy.anchor()
    logp_anchor = seq_logp(anchor, prompt)
    r_all = reward(None, SEQS[None])[0]                                  # (27,)
    beta = 0.2
    logp_star = optimal_policy(logp_anchor, r_all, beta)                 # log π*, enumerated
    start = kl_divergence(seq_logp(policy, prompt), logp_star).item()
    assert start > 0.1, "the test must start far from the optimum"

    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t < 300 else 0.2)
    gen = torch.Generator().manual_seed(0)
    prompts = prompt.expand(4, 1)                                        # P = 4 copies: 4 groups per step
    for step in train(policy, anchor, prompts, reward, seed_grpo(), FixedBeta(beta), opt, G=32, steps=450,
                      generator=gen, max_new_tokens=T):
        sched.step()
    kl = kl_divergence(seq_logp(policy, prompt), logp_star).item()
    assert kl < 0.01, f"KL(π‖π*) = {kl:.4f} (started at {start:.3f})"
