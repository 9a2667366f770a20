"""lab/drift.py: the drift views of a language model, as pure functions from data to figures, and the data
functions against hand computations on a tiny GPT-2 (issue 15, item 4)."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("transformers")

from matplotlib.figure import Figure  # noqa: E402

from minigrpo.lab import drift as D  # noqa: E402
from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2  # noqa: E402
from minigrpo.lm.policy import CausalLMPolicy  # noqa: E402
from minigrpo.lm.tokens import char_tokenizer, encode_completions, encode_prompts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = TinyGPT2(n_layer=1, n_embd=16, n_head=2, n_positions=16)


@pytest.fixture(scope="module")
def tiny():
    """A tokenizer and two different tiny GPT-2s over it: the policy (seed 0) and the anchor (seed 1)."""
    tok = char_tokenizer("0123456789+=")
    make = lambda seed: CausalLMPolicy(build_tiny_gpt2(tok, SHAPE, seed=seed), tok.pad_token_id)
    return tok, make(0), make(1)


def full_logp(policy, ids: list[int]) -> torch.Tensor:
    """log-softmax of the logits of one unpadded row, (len(ids), V): row i predicts token i + 1."""
    with torch.no_grad():
        return torch.log_softmax(policy.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)


# --- figures on synthetic data -----------------------------------------------------------------------------

def test_token_strip_draws_one_text_per_token_and_a_colour_bar():
    fig = D.plot_token_strip(["4", "7", " ", "<eos>"], [0.0, 0.5, 0.1, 2.0])
    assert isinstance(fig, Figure)
    ax, bar = fig.axes                                           # the strip and its colour bar
    assert [t.get_text() for t in ax.texts] == ["4", "7", "␣", "<eos>"]
    wrapped = D.plot_token_strip([str(i % 10) for i in range(40)], [-0.2 + 0.01 * i for i in range(40)], per_row=16)
    assert len(wrapped.axes[0].texts) == 40                      # three rows; negative values: diverging map


@pytest.mark.parametrize("tokens, values", [(["a", "b"], [0.1]), ([], []), (["a"], [float("nan")])])
def test_token_strip_refuses_bad_input(tokens, values):
    with pytest.raises(ValueError, match="plot_token_strip"):
        D.plot_token_strip(tokens, values)


def test_next_token_bars_side_by_side():
    fig = D.plot_next_token([0.5, 0.3, 0.2], [0.1, 0.8, 0.1], ["1", "2", "(rest)"])
    (ax,) = fig.axes
    assert len(ax.patches) == 6                                  # two bars per label
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "(rest)"]
    with pytest.raises(ValueError, match="lengths differ"):
        D.plot_next_token([0.5, 0.5], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="nothing to plot"):
        D.plot_next_token([], [], [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        D.plot_next_token([1.5], [0.2], ["a"])


def test_answer_shift_shows_top_answers_and_tv_kl_in_the_title():
    answers = [str(n) for n in range(20)]
    before = torch.full((20,), 0.05)
    after = torch.zeros(20).index_fill_(0, torch.tensor([3, 7]), 0.5)
    fig = D.plot_answer_shift(answers, before, after, correct="7", top=5)
    (ax,) = fig.axes
    assert len(ax.patches) == 2 * 6                              # 5 answers + "(others)", before and after
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "7 ✓" in labels and labels[-1] == "(others)"
    title = ax.get_title()
    assert f"TV = {D.tv(after, before):.3f}" in title and f"KL(after ‖ before) = {D.kl(after, before):.3f}" in title
    with pytest.raises(ValueError, match="lengths differ"):
        D.plot_answer_shift(answers[:3], before, after)
    with pytest.raises(ValueError, match="nothing to plot"):
        D.plot_answer_shift([], [], [])
    with pytest.raises(ValueError, match="summing to 1"):
        D.plot_answer_shift(["a", "b"], [0.5, 0.6], [0.5, 0.5])


def test_drift_plot_one_line_per_measure():
    fig = D.plot_drift([2, 4, 6], {"KL": [0.0, 0.1, 0.3], "TV": [0.0, 0.05, 0.1]})
    assert len(fig.axes[0].lines) == 2
    assert len(D.plot_drift([1, 2], [0.1, 0.2]).axes[0].lines) == 1
    with pytest.raises(ValueError, match="lengths differ"):
        D.plot_drift([1, 2, 3], [0.1, 0.2])
    with pytest.raises(ValueError, match="nothing to plot"):
        D.plot_drift([], [])


def test_tv_and_kl():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert D.tv(p, p) == 0 and D.kl(p, p) == 0
    assert D.tv(p, q) == pytest.approx(0.5)
    assert D.kl(p, q) == pytest.approx(math.log(2))              # p = 0 terms count 0
    assert D.kl(q, p) == math.inf                                # q puts mass where p has none
    with pytest.raises(ValueError, match="must match"):
        D.tv([1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="summing to 1"):
        D.kl([0.2, 0.2], [0.5, 0.5])


# --- data functions against hand computations ---------------------------------------------------------------

def test_token_kl_is_zero_against_itself_and_matches_a_hand_computation(tiny):
    tok, policy, anchor = tiny
    prompts_text, groups = ["1+2=", "12+34="], [["3", "47"], ["46", ""]]
    prompts = encode_prompts(tok, prompts_text)                  # left-padded: the short prompt is padded
    comps = encode_completions(tok, groups)                      # (2, 2, 3), EOS then pad
    for exact in (False, True):
        assert token_kl_max(policy, policy, prompts, comps, exact) < 1e-6
    k1, exact = D.token_kl(policy, anchor, prompts, comps), D.token_kl(policy, anchor, prompts, comps, exact=True)
    assert k1.shape == exact.shape == (2, 2, 3)
    for p, text in enumerate(prompts_text):
        x = tok.encode(text, add_special_tokens=False)
        for g in range(2):
            y = comps[p, g].tolist()
            lp, la = full_logp(policy, x + y)[len(x) - 1:-1], full_logp(anchor, x + y)[len(x) - 1:-1]   # (T, V)
            want_k1 = torch.stack([lp[t, y[t]] - la[t, y[t]] for t in range(3)])
            want_exact = (lp.exp() * (lp - la)).sum(-1)
            torch.testing.assert_close(k1[p, g], want_k1, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(exact[p, g], want_exact, atol=1e-4, rtol=1e-4)
    assert bool((exact >= 0).all()) and bool((k1 < 0).any())


def token_kl_max(policy, anchor, prompts, comps, exact):
    return float(D.token_kl(policy, anchor, prompts, comps, exact=exact).abs().max())


def test_token_strip_data_ends_at_eos(tiny):
    tok, policy, anchor = tiny
    tokens, values = D.token_strip_data(policy, anchor, tok, "47+85=", "132")
    assert tokens == ["1", "3", "2", "<eos>"] and len(values) == 4 and min(values) >= 0
    assert isinstance(D.plot_token_strip(tokens, values), Figure)


def test_next_token_distributions_match_the_models(tiny):
    tok, policy, anchor = tiny
    nt = D.next_token_distributions(policy, anchor, tok, "47+85=", prefix="1", top=4)
    x = tok.encode("47+85=1", add_special_tokens=False)
    p, q = full_logp(policy, x)[-1].exp(), full_logp(anchor, x)[-1].exp()
    ids = torch.maximum(p, q).topk(4).indices.sort().values
    assert nt.labels[:4] == D.token_texts(tok, ids.tolist()) and nt.labels[-1] == "(rest)"
    torch.testing.assert_close(torch.tensor(nt.policy[:4]), p[ids], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(nt.anchor[:4]), q[ids], atol=1e-5, rtol=1e-4)
    assert sum(nt.policy) == pytest.approx(1, abs=1e-5) and sum(nt.anchor) == pytest.approx(1, abs=1e-5)
    assert nt.kl == pytest.approx(float((p * (p.log() - q.log())).sum()), abs=1e-5)
    assert len(D.plot_next_token(nt.anchor, nt.policy, nt.labels).axes[0].patches) == 2 * 5


def test_answer_distribution_is_the_normalised_sequence_probability(tiny):
    tok, policy, _ = tiny
    answers = ["3", "12", "", "100"]
    d = D.answer_distribution(policy, tok, "1+2=", answers)
    x = tok.encode("1+2=", add_special_tokens=False)
    logp = []
    for a in answers:
        y = tok.encode(a, add_special_tokens=False) + [tok.eos_token_id]
        lp = full_logp(policy, x + y)[len(x) - 1:-1]
        logp.append(sum(float(lp[t, y[t]]) for t in range(len(y))))
    torch.testing.assert_close(d.logp, torch.tensor(logp, dtype=torch.float64), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(d.probs, torch.softmax(torch.tensor(logp, dtype=torch.float64), 0), atol=1e-5, rtol=1e-4)
    assert float(d.probs.sum()) == pytest.approx(1)
    assert float(d.logp.exp().sum()) + d.outside == pytest.approx(1, abs=1e-6)   # list + outside = everything
    with pytest.raises(ValueError, match="without repeats"):
        D.answer_distribution(policy, tok, "1+2=", ["3", "3"])
    with pytest.raises(ValueError, match="non-empty"):
        D.answer_distribution(policy, tok, "1+2=", [])


def test_addition_answers_enumerates_every_sum():
    assert D.addition_answers(1) == [str(n) for n in range(19)]
    assert D.addition_answers(2)[-1] == "198"


# --- over a run's checkpoints -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.lm_run import train_lm

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("drift-runs")
    cfg = TrainConfig(steps=4, save_every=2, keep_checkpoints=10, eval_size=16, eval_samples=0,
                      prompts_per_step=4, group_size=4, device="cpu", out=str(out))
    return train_lm(cfg, progress=False)


def test_drift_over_checkpoints_has_one_entry_per_checkpoint(tiny_run):
    prompts = ["47+85=", "12+30="]
    drift = D.drift_over_checkpoints(tiny_run.run_dir, prompts)
    assert drift.steps == [2, 4]
    assert len(drift.at) == len(drift.tv) == len(drift.kl) == 2 and all(len(at) == 2 for at in drift.at)
    assert drift.correct == ["132", "42"]
    for d in [*drift.anchor, *drift.at[-1]]:
        assert len(d.answers) == 199 and float(d.probs.sum()) == pytest.approx(1)
    assert all(v >= 0 for v in drift.tv + drift.kl)
    # the last checkpoint is the trained policy the run returned
    final = D.answer_distribution(tiny_run.policy, tiny_run.tokenizer, prompts[0], drift.at[-1][0].answers)
    torch.testing.assert_close(final.probs, drift.at[-1][0].probs, atol=1e-5, rtol=1e-4)
    assert D.drift_over_checkpoints(tiny_run.run_dir, prompts[:1], ["132", "122"], every=5).steps == [4]


def test_drift_slider_redraws_on_a_new_step(tiny_run):
    pytest.importorskip("ipywidgets")
    box = D.drift_slider(tiny_run.run_dir, ["47+85="], answers=["132", "122", "13"])
    assert list(box.slider.options) == [2, 4] and box.slider.value == 4
    assert "step 4" in box.figure.axes[0].get_title()
    box.slider.value = 2                                         # observed: redraws the answer shift
    assert "step 2" in box.figure.axes[0].get_title() and len(box.figure.axes[0].patches) == 2 * 3
    with pytest.raises(ValueError, match="prompts"):
        D.drift_slider(tiny_run.run_dir)
