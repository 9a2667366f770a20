"""The KL variants: the KL per reasoning step (core/step_kl.py) and the embedding drift (lm/embedding.py).

References: the sequence KL the step logs (the steps must add up to it), a plain Python loop over tokens,
the step reward's own cut into steps (checks.step_checks), a full Hugging Face forward pass per row for the
embeddings, and the step with no per-step KL (β_step = 0 must leave it bit for bit).
"""
import copy

import pytest
import torch

from minigrpo.core.advantages import step_advantages
from minigrpo.core.kl import K1, K3
from minigrpo.core.masks import masked_sum
from minigrpo.core.optimizer import adamw
from minigrpo.core.recipe import seed_grpo
from minigrpo.core.sampling import completion_mask
from minigrpo.core.step import grpo_step
from minigrpo.core.step_kl import StepKL, StepKLs, step_kl, step_spans, step_sums
from minigrpo.lab.plots_kl import plot_drift_against_kl, plot_step_kl_curves, plot_step_kl_profile
from minigrpo.lm.embedding import completion_embeddings, embedding_drift
from minigrpo.lm.models import load_causal_lm
from minigrpo.lm.policy import CausalLMPolicy
from minigrpo.lm.sft import anchor_dir
from minigrpo.lm.tasks import ChainTask
from minigrpo.lm.tokens import char_tokenizer, encode_completions, encode_prompts, step_ids
from minigrpo.rewards.checks import step_checks, task_reward
from minigrpo.rewards.compose import Completions
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.experiments import kl_profile

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = ChainTask()
GROUP = ["12,9,17", "2,9,7", "12,9,16", "12,8,16", "12,9,17,", ""]      # right, careless, slips, an extra step, empty


def random_steps(P, G, T, seed, full=False):
    g = torch.Generator().manual_seed(seed)
    logp, logp_anchor = -3 * torch.rand(P, G, T, generator=g), -3 * torch.rand(P, G, T, generator=g)
    mask = torch.arange(T) < torch.randint(1, T + 1, (P, G), generator=g)[..., None]
    seps = (torch.rand(P, G, T, generator=g) < 0.3).long()
    ids = seps.cumsum(-1) - seps
    if not full:                        # some completion tokens in no step
        ids = torch.where(torch.rand(P, G, T, generator=g) < 0.2, -1, ids)
    return logp, logp_anchor, mask, torch.where(mask, ids, -1)


# --- the per-step KL: pure tensor functions ----------------------------------------------------------

@pytest.mark.parametrize("estimator", [K1, K3])
def test_steps_add_up_to_the_sequence_kl_when_every_token_is_in_a_step(estimator):
    logp, logp_anchor, mask, ids = random_steps(3, 4, 10, 0, full=True)
    kl = step_kl(logp, logp_anchor, mask, ids, estimator=estimator)                         # (P, G, S)
    seq = masked_sum(estimator.value(logp, logp_anchor), mask, dim=-1)                       # (P, G)
    torch.testing.assert_close(kl.sum(-1), seq)


def test_step_sums_against_a_loop_over_tokens():
    logp, logp_anchor, mask, ids = random_steps(2, 3, 9, 1)
    S = 6
    got = step_kl(logp, logp_anchor, mask, ids, S)
    want = torch.zeros(2, 3, S)
    for p in range(2):
        for g in range(3):
            for t in range(9):
                s = int(ids[p, g, t])
                if mask[p, g, t] and s >= 0:
                    want[p, g, s] += float(logp[p, g, t] - logp_anchor[p, g, t])
    torch.testing.assert_close(got, want)
    # padding holding inf and a step id adds nothing
    bad = logp.masked_fill(~mask, float("inf"))
    torch.testing.assert_close(step_kl(bad, logp_anchor, mask, torch.where(mask, ids, 0), S), want)
    assert step_sums(torch.ones(1, 1, 3), torch.full((1, 1, 3), -1)).shape == (1, 1, 0)


def test_step_ids_cut_as_the_step_reward_does():
    """The KL's steps are the step reward's steps: same token ends (checks.step_checks on the chain task)."""
    tok = char_tokenizer(TASK.alphabet)
    ids = encode_completions(tok, [GROUP])                                                  # (1, G, T)
    mask = completion_mask(ids, tok.eos_token_id)
    sid = step_ids(tok, ids, mask)
    assert sid[0, 0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, -1]                               # "12,9,17⏎"
    batch = Completions.decode(tok, encode_prompts(tok, ["7+5-3+8="]), ids)
    st = step_checks(TASK).score(batch)
    ends, present = step_spans(sid)
    for g in range(len(GROUP)):
        cut = [end for end, _ in batch.steps(0, g, ",")]
        assert ends[0, g][present[0, g]].tolist() == cut, GROUP[g]
        assert st.ends[0, g][st.present[0, g]].tolist()[:len(cut)] == cut
    assert torch.equal(sid >= 0, mask)                                                      # every token in a step


def test_step_kl_metrics_are_the_profile():
    kl = torch.tensor([[[0.1, 0.3, 0.0], [0.2, -0.1, 0.5]]])
    present = torch.tensor([[[True, True, False], [True, True, True]]])
    m = StepKLs(kl, torch.zeros_like(kl, dtype=torch.long), present).metrics()
    assert m["kl/step/0"] == pytest.approx(0.15) and m["kl/step/1"] == pytest.approx(0.1)
    assert m["kl/step/2"] == pytest.approx(0.5)
    assert m["kl/step_mean"] == pytest.approx((0.1 + 0.3 + 0.2 - 0.1 + 0.5) / 5)
    assert m["kl/step_max"] == pytest.approx((0.3 + 0.5) / 2)
    recs = [{"step": 1, "kl/step_mean": 0, "kl/step/0": 1.0, "kl/step/1": 3.0},
            {"step": 2, "kl/step_mean": 0, "kl/step/0": 2.0}, {"step": 2, "eval/kl": 9.0}]
    assert kl_profile(recs, last=1.0) == [1.5, 3.0]


# --- in the step -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain_models():
    model, tok = load_causal_lm(anchor_dir("chain"), device="cpu")
    policy = CausalLMPolicy(model, tok.pad_token_id)
    return policy, copy.deepcopy(policy).freeze(), tok


def one_step(policy, anchor, tok, step_kl_obj, seed=0):
    policy = copy.deepcopy(policy)
    opt = adamw([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    problems = TASK.sample(4, "train", torch.Generator().manual_seed(seed))
    prompts = encode_prompts(tok, [p.prompt for p in problems])
    reward = task_reward(TASK, tok, {"correct": 1.0})
    step = grpo_step(policy, anchor, prompts, reward, seed_grpo(), 0.02, opt, 8,
                     generator=torch.Generator().manual_seed(seed + 1), max_new_tokens=TASK.max_answer_len + 1,
                     eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, step_kl=step_kl_obj)
    return step, policy


def test_beta_step_zero_leaves_the_step_bit_identical(chain_models):
    policy, anchor, tok = chain_models
    cut = lambda y, m: step_ids(tok, y, m)
    plain, p_plain = one_step(policy, anchor, tok, None)
    seen, p_seen = one_step(policy, anchor, tok, StepKL(0.0, cut))
    assert torch.equal(plain.A, seen.A) and torch.equal(plain.psi, seen.psi)
    assert all(torch.equal(a, b) for a, b in zip(p_plain.parameters(), p_seen.parameters()))
    assert plain.kl_steps is None and "kl/step_mean" not in plain.metrics()
    # measured all the same, and adding up to the logged sequence KL
    torch.testing.assert_close(seen.kl_steps.kl.sum(-1), seen.kl)
    assert {"kl/step_mean", "kl/step_max", "kl/step/0"} <= set(seen.metrics())


def test_beta_step_adds_the_per_step_penalty_to_the_advantages(chain_models):
    policy, anchor, tok = chain_models
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    cut = lambda y, m: step_ids(tok, y, m)
    plain, _ = one_step(moved, anchor, tok, StepKL(0.0, cut))
    pen, _ = one_step(moved, anchor, tok, StepKL(0.5, cut))
    T = plain.rollout.shape[2]
    k = plain.kl_steps
    want = plain.A[..., None] + step_advantages(-0.5 * k.kl, k.ends, k.present, T)
    torch.testing.assert_close(pen.A, want)
    assert not torch.equal(pen.psi, plain.psi)


def test_a_tiny_chain_run_logs_the_step_kl_and_the_embedding_drift(tmp_path):
    from minigrpo.runs.lm_run import train_lm

    cfg = TrainConfig(task="chain", steps=2, prompts_per_step=4, group_size=4, eval_every=1, eval_size=8,
                      eval_samples=2, save_every=0, out=str(tmp_path), device="cpu", step_kl_beta=0.1)
    res = train_lm(cfg, run_dir=tmp_path / "run", progress=False)
    steps = [r for r in res.metrics if r["step"] > 0]
    assert all({"kl/step_mean", "kl/step_max", "kl/step/0"} <= set(r) for r in steps)
    evals = [r for r in res.metrics if "eval/kl" in r]
    assert [r["step"] for r in evals] == [0, 1, 2] and all("eval/embedding_drift" in r for r in evals)
    assert evals[0]["eval/embedding_drift"] == pytest.approx(0.0, abs=1e-6)      # the anchor against itself


def test_a_task_without_steps_logs_no_step_kl(tmp_path):
    from minigrpo.runs.lm_run import train_lm

    cfg = TrainConfig(task="addition", steps=1, prompts_per_step=2, group_size=4, eval_every=1, eval_size=4,
                      eval_samples=0, save_every=0, out=str(tmp_path), device="cpu")
    res = train_lm(cfg, run_dir=tmp_path / "run", progress=False)
    assert not any(k.startswith("kl/step") for r in res.metrics for k in r)
    assert not any("eval/embedding_drift" in r for r in res.metrics)             # no samples: no drift


@pytest.mark.parametrize("kw, match", [
    (dict(task="addition", step_kl_beta=0.1), "step_kl_beta=0.1 is not allowed; > 0 needs completions with "
                                              "reasoning steps: a multi-step task such as 'chain' \\('addition'"),
    (dict(task="chain", step_kl_beta=0.1, method="dpo"), "needs an online method, grpo or ppo"),
    (dict(task="chain", step_kl_beta=-0.1), "step_kl_beta=-0.1 is not allowed"),
])
def test_config_refuses_a_step_kl_it_cannot_apply(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        TrainConfig(**kw)
    assert "\n" not in str(e.value)
    assert TrainConfig(task="addition").step_kl_beta == 0.0                 # report-only default: fine anywhere
    assert TrainConfig(task="chain", step_kl_beta=0.5, method="ppo").step_kl_beta == 0.5


def test_step_kl_beta_is_a_flag():
    from minigrpo.cli import parse

    assert parse("train", ["--step-kl-beta", "0.3"])[1] == {"step_kl_beta": 0.3}


# --- embedding drift ---------------------------------------------------------------------------------

def test_completion_embeddings_match_a_plain_forward_per_row(chain_models):
    _, anchor, tok = chain_models
    prompts = encode_prompts(tok, ["7+5-3+8=", "1+2="])                      # left-padded (2, L)
    ids = encode_completions(tok, [GROUP[:3], ["3,5", "3", "12,9,16"]])        # (2, 3, T)
    mask = completion_mask(ids, tok.eos_token_id)
    e = completion_embeddings(anchor, prompts, ids, mask)                      # (2, 3, d)
    for p, text in enumerate(["7+5-3+8=", "1+2="]):
        x = tok.encode(text, add_special_tokens=False)
        for g in range(3):
            y = ids[p, g][mask[p, g]].tolist()
            with torch.no_grad():
                h = anchor.model(input_ids=torch.tensor([x + y]), output_hidden_states=True).hidden_states[-1][0]
            torch.testing.assert_close(e[p, g], h[len(x):].mean(0), rtol=1e-4, atol=1e-5)


def test_a_lora_anchor_embeds_as_its_base_model(chain_models):
    from minigrpo.lm.models import add_lora

    _, anchor, tok = chain_models
    lora = CausalLMPolicy(add_lora(copy.deepcopy(anchor.model), 4), tok.pad_token_id)
    with torch.no_grad():                                  # a trained adapter: the policy now differs from its base
        for name, p in lora.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    prompts, ids = encode_prompts(tok, ["7+5-3+8="]), encode_completions(tok, [GROUP[:4]])
    mask = completion_mask(ids, tok.eos_token_id)
    base = completion_embeddings(anchor, prompts, ids, mask)
    torch.testing.assert_close(completion_embeddings(lora.anchor(), prompts, ids, mask), base)
    assert not torch.allclose(completion_embeddings(lora, prompts, ids, mask), base, atol=1e-3)


def test_embedding_drift_is_zero_for_the_anchor_and_positive_for_a_perturbed_policy(chain_models):
    from minigrpo.lm.data import Row
    from minigrpo.runs.evaluation import evaluate

    policy, anchor, tok = chain_models
    rows = [Row(p.prompt, {"answer": p.answer}) for p in TASK.test_set(16)]
    reward = task_reward(TASK, tok, {"correct": 1.0})
    kw = dict(samples=4, seed=5, anchor=anchor)
    same = evaluate(copy.deepcopy(policy), tok, rows, reward, TASK.max_answer_len + 1, **kw)
    assert same["eval/embedding_drift"] == pytest.approx(0.0, abs=1e-6)
    assert same["eval/kl"] == pytest.approx(0.0, abs=1e-5)
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    away = evaluate(moved, tok, rows, reward, TASK.max_answer_len + 1, **kw)
    assert away["eval/embedding_drift"] > 1e-3 and away["eval/kl"] > 0


def test_embedding_drift_is_a_distance_not_a_kl():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 4, 8, generator=g)
    assert torch.allclose(embedding_drift(e, e), torch.zeros(3), atol=1e-6)
    other = torch.randn(3, 4, 8, generator=g)
    torch.testing.assert_close(embedding_drift(e, other), embedding_drift(other, e))          # symmetric
    # different completions (a permuted, rescaled group) with the same mean direction: drift 0 all the same
    assert torch.allclose(embedding_drift(e, 2 * e.flip(1)), torch.zeros(3), atol=1e-6)
    assert bool(((embedding_drift(e, other) >= 0) & (embedding_drift(e, other) <= 2)).all())


# --- plots: pure functions from numbers to figures ---------------------------------------------------

def test_plots_draw_what_they_are_given():
    fig = plot_step_kl_profile({"a": [0.1, 0.2, 0.3], "b": [0.0, 0.1]})
    assert len(fig.axes[0].patches) == 5
    recs = [{"step": t, "kl": 0.3 * t, "kl/step_mean": 0.1 * t, "kl/step/0": 0.1 * t, "kl/step/1": 0.2 * t}
            for t in range(1, 6)]
    fig = plot_step_kl_curves(recs, smooth=1)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["step 1", "step 2", "whole completion"]
    assert list(lines[1].get_ydata()) == pytest.approx([0.2 * t for t in range(1, 6)])
    assert len(plot_step_kl_curves(recs, max_steps=1).axes[0].get_lines()) == 2
    evals = [{"step": t, "eval/kl": 0.1 * t, "eval/embedding_drift": 0.01 * t} for t in (0, 5)]
    fig = plot_drift_against_kl({"run": recs + evals})
    assert list(fig.axes[1].get_lines()[0].get_xdata()) == pytest.approx([0.0, 0.5])
    assert plot_step_kl_profile({}).axes and plot_drift_against_kl({}).axes


@pytest.mark.parametrize("build", ["tiny_gpt2", "tiny_llama", "tiny_qwen2"])
def test_completion_embeddings_of_other_architectures_match_a_plain_forward(build):
    """Rotary positions, grouped key/value heads and a BPE tokenizer with left-padded prompts: the shared-prompt
    pass gives each completion token the hidden state a plain forward over its own unpadded row gives."""
    import local_models

    tok = local_models.bpe_tokenizer(["what is 12 plus 7? the answer is 19.", "the quick brown fox jumps"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = getattr(local_models, build)(tok)
    policy = CausalLMPolicy(model, tok.pad_token_id).freeze()
    texts = ["what is 12 plus 7?", "the fox"]
    prompts = encode_prompts(tok, texts)
    ids = encode_completions(tok, [[" the answer is 19.", " 19"], [" jumps", " the quick brown fox"]])
    mask = completion_mask(ids, tok.eos_token_id)
    e = completion_embeddings(policy, prompts, ids, mask)
    for p, text in enumerate(texts):
        x = tok.encode(text, add_special_tokens=False)
        for g in range(2):
            y = ids[p, g][mask[p, g]].tolist()
            with torch.no_grad():
                h = model(input_ids=torch.tensor([x + y]), output_hidden_states=True).hidden_states[-1][0]
            torch.testing.assert_close(e[p, g], h[len(x):].mean(0), rtol=1e-4, atol=1e-4)
