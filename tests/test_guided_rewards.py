"""The reward interface: composing components, not-applicable values, step rewards, checks, errors."""
import math

import pytest
import torch

from minigrpo.core import advantages as adv
from minigrpo.rewards.checks import answer_format, exact_answer, forbidden_strings, length_penalty, step_checks, task_reward
from minigrpo.rewards.compose import Completions, RewardSet, fill_not_applicable, group_normalise, normalised_sum
from minigrpo.core.recipe import seed_grpo
from minigrpo.core.scored import Scored, StepRewards, check_scored
from minigrpo.lm.tasks import AdditionTask, ChainTask
from minigrpo.lm.tokens import char_tokenizer, encode_completions, encode_prompts


def batch_of(tok, prompts, completions, T=None):
    """Prompt texts [P] and completion texts [P][G] → (prompt ids, completion ids (P,G,T)) with EOS."""
    return encode_prompts(tok, prompts), encode_completions(tok, completions, T)


@pytest.fixture
def add():
    task = AdditionTask(2)
    return task, char_tokenizer(task.alphabet)


def test_a_plain_function_is_a_reward_and_every_component_is_logged(add):
    task, tok = add
    prompts, ids = batch_of(tok, ["47+85=", "10+20="], [["132", "122"], ["30", "3000"]])

    def short(prompt, completion):          # a plain Python function is a whole reward component
        return -0.5 * max(0, len(completion) - 3)

    reward = RewardSet(tok, {"correct": exact_answer(task), "short": (short, 2.0)})
    out = check_scored(reward(prompts, ids), (2, 2), reward)
    assert out.components["correct"].tolist() == [[1, 0], [1, 0]]
    assert out.components["short"].tolist() == [[0, 0], [0, -0.5]]
    assert out.r.tolist() == [[1, 0], [1, -1.0]]                       # 1·correct + 2·short


def test_normalised_combination_puts_components_on_equal_footing():
    big = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    small = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    r = normalised_sum({"big": big, "small": small}, {"big": 1.0, "small": 1.0})
    expect = group_normalise(big) + group_normalise(small)
    assert torch.allclose(r, expect)
    assert torch.allclose(group_normalise(big).std(1, unbiased=False), torch.tensor([1.0]), atol=1e-4)
    assert group_normalise(torch.ones(2, 3)).abs().sum() == 0                  # constant group → 0, not NaN


def test_not_applicable_is_left_out_of_the_baseline_not_scored_zero(add):
    task, tok = add
    prompts, ids = batch_of(tok, ["1+1="], [["2", "3", "4", "5"]])
    judged = {"2": 1.0, "3": 0.0}                      # a labeller saw only two of the four completions

    reward = RewardSet(tok, {"human": lambda p, c: judged.get(c)})
    out = check_scored(reward(prompts, ids), (1, 4), reward)
    assert out.valid.tolist() == [[True, True, False, False]]
    A = seed_grpo().baseline(out.r, None, valid=out.valid)
    assert A.tolist() == [[0.5, -0.5, 0.0, 0.0]]       # mean over the judged two, not over four with zeros
    # with another component present, the unjudged ones take the group's mean of "human": neutral
    both = RewardSet(tok, {"human": lambda p, c: judged.get(c), "len": lambda p, c: float(len(c))})
    out2 = both(prompts, ids)
    assert out2.valid is None
    assert out2.r.tolist() == [[2.0, 1.0, 1.5, 1.5]]
    assert out2.applicable["human"].tolist() == [[True, True, False, False]]
    assert out2.component_means()["human"] == 0.5


def test_fill_not_applicable_uses_the_group_mean_of_the_judged():
    c = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    ok = torch.tensor([[True, True, False], [False, False, False]])
    assert fill_not_applicable(c, ok).tolist() == [[1.0, 3.0, 2.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("name", ["group_mean", "group_mean_std", "leave_one_out", "batch_mean", "none"])
def test_masked_baselines_equal_the_baseline_of_the_valid_completions_alone(name):
    R = torch.tensor([[1.0, 4.0, 2.0, 9.0, 0.5]])
    valid = torch.tensor([[True, True, False, True, False]])
    A = adv.BASELINES[name](R, None, valid=valid)
    alone = adv.BASELINES[name](R[valid][None])
    assert torch.allclose(A[valid], alone[0])
    assert (A[~valid] == 0).all()


def test_group_mean_std_with_fewer_than_two_valid_gives_zero():
    R = torch.tensor([[1.0, 4.0, 2.0]])
    assert adv.group_mean_std(R, torch.tensor([[False, True, False]])).abs().sum() == 0


def test_step_advantages_by_hand():
    # one prompt, two completions, two steps each; T = 4 tokens; step ends at tokens 1 and 3
    values = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    ends = torch.tensor([[[1, 3], [1, 3]]])
    present = torch.ones(1, 2, 2, dtype=torch.bool)
    A = adv.step_advantages(values, ends, present, T=4)
    # step 1: both right → baseline 1, ã = 0; step 2: mean 0.5 → ã = +0.5 / −0.5
    assert A.tolist() == [[[0.5, 0.5, 0.5, 0.5], [-0.5, -0.5, -0.5, -0.5]]]
    values = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])                      # now the first step differs
    A = adv.step_advantages(values, ends, present, T=4)
    assert A.tolist() == [[[-0.5, -0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]]   # only tokens of step 1 are blamed


def test_missing_steps_are_left_out_of_that_steps_baseline():
    values = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]])
    present = torch.tensor([[[True, True], [True, False], [True, True]]])
    ends = torch.tensor([[[0, 1], [0, 0], [0, 1]]])
    A = adv.step_advantages(values, ends, present, T=2)
    # step 2 baseline over completions 0 and 2 only: mean 0.5
    assert torch.allclose(A[0, :, 1], torch.tensor([0.5, 0.0, -0.5]))


def test_chain_step_checks_give_each_step_its_own_reward():
    task = ChainTask(3)
    tok = char_tokenizer(task.alphabet)
    prompts, ids = batch_of(tok, ["7+5-3+8="], [["12,9,17", "2,9,7", "12,9", "12,9,17,1"]])
    batch = Completions.decode(tok, prompts, ids)
    assert batch.steps(0, 0, ",") == [(2, "12"), (4, "9"), (7, "17")]
    st = step_checks(task).score(batch)
    assert st.values[0].tolist() == [[1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, -1]]
    assert st.present[0].tolist() == [[True] * 3 + [False], [True] * 3 + [False], [True] * 3 + [False], [True] * 4]
    assert st.ends[0, 2, 2] == 4                          # the missing third step sits on the last token (EOS)


def test_stepwise_plain_function_returns_a_list_per_completion():
    task = ChainTask(2)
    tok = char_tokenizer(task.alphabet)
    prompts, ids = batch_of(tok, ["1+2+3="], [["3,6", "3,5"]])
    reward = RewardSet(tok, {"steps": lambda p, c: [float(s == t) for s, t in zip(c.split(","), ["3", "6"])]},
                       step_separators=",")
    out = check_scored(reward(prompts, ids), (1, 2), reward, T=ids.shape[-1])
    assert out.steps.values.tolist() == [[[1, 1], [1, 0]]]
    assert out.steps.ends.tolist() == [[[1, 3], [1, 3]]]
    bad = RewardSet(tok, {"steps": lambda p, c: [1.0]}, step_separators=",")
    with pytest.raises(ValueError, match="1 step rewards .* 2 steps"):
        bad(prompts, ids)


def test_programmatic_checks(add):
    task, tok = add
    prompts, ids = batch_of(tok, ["47+85="] * 1, [["132", "1+3", "13266", "666"]])
    ids[0, 1, -1] = tok.pad_token_id
    batch = Completions.decode(tok, prompts, ids)
    assert exact_answer(task).score(batch).tolist() == [[1, 0, 0, 0]]
    assert answer_format(task).score(batch).tolist() == [[1, 0, 1, 1]]
    assert length_penalty(3, 0.5).score(batch).tolist() == [[0, 0, -1.0, 0]]
    assert forbidden_strings(["666"]).score(batch).tolist() == [[0, 0, 0, -1]]


def test_task_reward_weights_and_errors(add):
    task, tok = add
    with pytest.raises(ValueError, match="style"):
        task_reward(task, tok, {"style": 1.0})
    with pytest.raises(ValueError, match="forbidden"):
        task_reward(task, tok, {"safety": 1.0})
    with pytest.raises(ValueError, match="steps"):
        task_reward(task, tok, {"steps": 1.0})
    with pytest.raises(ValueError, match="combine='max'"):
        task_reward(task, tok, combine="max")


@pytest.mark.parametrize("bad, match", [
    (lambda p, c: float("nan"), "returned nan"),
    (lambda p, c: math.inf, "returned inf"),
    (lambda p, c: "good", "returned 'good' \\(str\\)"),
])
def test_a_bad_component_is_named(add, bad, match):
    task, tok = add
    prompts, ids = batch_of(tok, ["1+1="], [["2", "3"]])
    reward = RewardSet(tok, {"mine": bad}, name="my_reward")
    with pytest.raises(ValueError, match=f"reward function 'mine' {match} \\(on prompt 0 of the batch: prompt "
                                         "'1\\+1=', completion 0: '2'\\)"):
        reward(prompts, ids)


class WrongCount:
    name = "wrong_count"

    def score(self, batch):
        return torch.zeros(3)


def test_wrong_count_from_a_batch_component_is_named(add):
    task, tok = add
    prompts, ids = batch_of(tok, ["1+1="], [["2", "3"]])
    with pytest.raises(ValueError, match=r"reward_set/bad.*shape \(3,\).*\(1, 2\)"):
        RewardSet(tok, {"bad": WrongCount()})(prompts, ids)


class Texts:
    """A batch component that returns text where numbers belong."""

    def __init__(self, value):
        self.value = value

    def score(self, batch):
        P, G, _ = batch.shape
        return [[self.value] * G for _ in range(P)]


@pytest.mark.parametrize("value", ["1.0", b"1", [1.0], 1j])
def test_a_batch_component_returning_text_is_refused_not_converted(add, value):
    task, tok = add
    prompts, ids = batch_of(tok, ["1+1="], [["2", "3"]])
    with pytest.raises(ValueError, match=r"component 'reward_set/texts' returned .* for \(prompt, completion\) = "
                                         r"\(0, 0\); return numbers"):
        RewardSet(tok, {"texts": Texts(value)})(prompts, ids)


def test_a_batch_component_may_return_numpy_and_torch_numbers_and_bools(add):
    import numpy as np

    task, tok = add
    prompts, ids = batch_of(tok, ["1+1="], [["2", "3"]])
    for value, want in ((np.float32(0.5), 0.5), (torch.tensor(2), 2.0), (True, 1.0), (np.int64(3), 3.0)):
        out = RewardSet(tok, {"n": Texts(value)})(prompts, ids)
        assert out.r.tolist() == [[want, want]]
    out = RewardSet(tok, {"rows": Rows()})(prompts, ids)
    assert out.r.tolist() == [[1.0, 0.0]]


class Rows:
    def score(self, batch):
        import numpy as np

        return np.array([[1.0, 0.0]])


def test_plain_tensor_rewards_are_checked_by_name():
    def r_fn(prompts, completions):
        return torch.zeros(2, 3)

    with pytest.raises(ValueError, match="r_fn.*shape"):
        check_scored(r_fn(None, None), (2, 2), r_fn)
    with pytest.raises(ValueError, match="returned None"):
        check_scored([[1.0, None]], (1, 2), r_fn)
    with pytest.raises(ValueError, match="step ends"):
        check_scored(Scored(torch.zeros(1, 1), steps=StepRewards(torch.zeros(1, 1, 1), torch.full((1, 1, 1), 9),
                                                                torch.ones(1, 1, 1, dtype=torch.bool))), (1, 1), r_fn, T=3)
