"""The written-down interfaces (core/protocols.py, and the task abilities in lm/tasks.py): every policy,
decoder, reward and reward component of the package provides its protocol with compatible signatures,
and an object that lacks a member is refused with an error that names it."""
import inspect
from typing import Protocol

import pytest
import torch

from minigrpo.bandit.arms import ArmRewards
from minigrpo.bandit.policies import MLPPolicy, TabularSoftmaxPolicy, frozen_copy
from minigrpo.core.protocols import (Anchor, Decoder, Named, NextTokenPolicy, Policy, Reward, RewardComponent,
                                     RolloutReward, Sampler, TextReward, protocol_members, require)
from minigrpo.core.recipe import seed_grpo
from minigrpo.core.kl import FixedBeta
from minigrpo.core.optimizer import LeanAdam
from minigrpo.core.sampling import PrefixDecoder, PrefixDecoding, sample_group
from minigrpo.core.scored import call_reward, reward_name
from minigrpo.core.step import train
from minigrpo.lm.policy import AdapterOffAnchor, CausalLMPolicy, KVCacheDecoder, _AdapterOffDecoder
from minigrpo.lm.tasks import AdditionTask, ChainTask, JudgeTask, TaskWithCarelessAnswers, TaskWithSteps
from minigrpo.rewards.checks import answer_format, exact_answer, forbidden_strings, length_penalty, step_checks
from minigrpo.rewards.compose import RewardSet
from minigrpo.rewards.judge import LMJudge
from minigrpo.rewards.labels import LabelReward
from minigrpo.rewards.reward_model import RewardModelReward


def members(spec) -> list[str]:
    """What ``spec`` asks for: a Protocol's members, or ``__call__`` for the RolloutReward base class."""
    return protocol_members(spec) if issubclass(spec, Protocol) else ["__call__"]


def positional(fn) -> list[tuple[str, bool]]:
    """(name, has a default) of each parameter after ``self``, ``*args``/``**kwargs`` left out."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [(p.name, p.default is not p.empty) for p in params if p.kind in kinds]


IMPLEMENTATIONS = [
    (TabularSoftmaxPolicy, Policy), (TabularSoftmaxPolicy, NextTokenPolicy),
    (MLPPolicy, Policy), (MLPPolicy, NextTokenPolicy),
    (CausalLMPolicy, Policy), (AdapterOffAnchor, Anchor), (AdapterOffAnchor, Sampler),
    (PrefixDecoding, Sampler),
    (PrefixDecoder, Decoder), (KVCacheDecoder, Decoder), (_AdapterOffDecoder, Decoder),
    (ArmRewards, Reward), (RewardSet, RolloutReward),
    (exact_answer, RewardComponent), (answer_format, RewardComponent), (length_penalty, RewardComponent),
    (forbidden_strings, RewardComponent), (step_checks, RewardComponent), (RewardModelReward, RewardComponent),
    (LMJudge, RewardComponent), (LabelReward, TextReward),
    (ChainTask, TaskWithSteps), (ChainTask, TaskWithCarelessAnswers), (AdditionTask, TaskWithCarelessAnswers),
]


@pytest.mark.parametrize("cls, spec", IMPLEMENTATIONS, ids=lambda x: x.__name__)
def test_every_member_exists_with_a_compatible_signature(cls, spec):
    """Static check on the class: each method the protocol names exists, takes the protocol's
    parameters in order and by the same names (``call_reward`` passes ``rollout=`` by keyword), and
    any extra parameter has a default."""
    for name in members(spec):
        assert name in dir(cls), f"{cls.__name__} has no {name} ({spec.__name__})"
        want, have = positional(getattr(spec, name)), positional(getattr(cls, name))
        assert [n for n, _ in have[:len(want)]] == [n for n, _ in want], f"{cls.__name__}.{name}{have} vs {want}"
        assert all(default for _, default in have[len(want):]), f"{cls.__name__}.{name}: extra parameters need defaults"


def test_policy_lists_what_grpo_step_and_sample_group_call():
    assert set(protocol_members(Policy)) == {"decoder", "sampling_context", "log_probs", "accumulate_grad",
                                             "parameters"}
    assert protocol_members(Anchor) == ["log_probs"] and protocol_members(Named) == ["name"]


# --- instances ---------------------------------------------------------------------------------------------

def test_bandit_policies_are_policies():
    for pol in (TabularSoftmaxPolicy(2, 3), MLPPolicy(torch.eye(2), 3), frozen_copy(TabularSoftmaxPolicy(1, 4))):
        assert isinstance(pol, Policy) and isinstance(pol, NextTokenPolicy)
        assert isinstance(pol.decoder(torch.arange(1), 3, 1), Decoder)


@pytest.fixture(scope="module")
def tok():
    from minigrpo.lm.tokens import char_tokenizer

    return char_tokenizer("0123456789+=,-")


def tiny_policy(tok):
    from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2

    model = build_tiny_gpt2(tok, TinyGPT2(n_layer=1, n_embd=8, n_head=2, n_positions=16))
    return CausalLMPolicy(model, tok.pad_token_id)


def test_the_language_model_policy_and_its_anchors(tok):
    from minigrpo.lm.models import add_lora
    from minigrpo.lm.tokens import encode_prompts

    policy = tiny_policy(tok)
    prompts = encode_prompts(tok, ["1+2="])
    assert isinstance(policy, Policy) and isinstance(policy.anchor(), Policy)
    assert isinstance(policy.decoder(prompts, 2, 3), Decoder)
    lora = CausalLMPolicy(add_lora(tiny_policy(tok).model, r=2), tok.pad_token_id)
    anchor = lora.anchor()
    assert isinstance(anchor, AdapterOffAnchor) and isinstance(anchor, Anchor) and isinstance(anchor, Sampler)
    assert not isinstance(anchor, Policy)                        # it is never trained: no accumulate_grad
    assert isinstance(anchor.decoder(prompts, 2, 3), Decoder)


def test_rewards_and_components(tok):
    task = ChainTask()
    arms = ArmRewards([0.2, 0.8])
    assert isinstance(arms, Named) and not isinstance(arms, RolloutReward)
    components = [exact_answer(task), answer_format(task), length_penalty(3), forbidden_strings(["9"]),
                  step_checks(task)]
    for c in components:
        assert isinstance(c, RewardComponent) and isinstance(c, Named)
    labels = LabelReward([])
    assert isinstance(labels, Named) and not isinstance(labels, RewardComponent) and callable(labels)
    rs = RewardSet(tok, {c.name: c for c in components} | {"human": labels})
    assert isinstance(rs, RolloutReward) and isinstance(rs, Named)


def test_task_abilities():
    assert isinstance(ChainTask(), TaskWithSteps) and isinstance(ChainTask(), TaskWithCarelessAnswers)
    assert isinstance(AdditionTask(), TaskWithCarelessAnswers) and not isinstance(AdditionTask(), TaskWithSteps)
    assert not isinstance(JudgeTask(), TaskWithSteps) and not isinstance(JudgeTask(), TaskWithCarelessAnswers)


# --- refusals ----------------------------------------------------------------------------------------------

class OnlyNextToken:
    """A NextTokenPolicy that forgot to inherit PrefixDecoding: no decoder, no sampling_context."""

    def next_token_logp(self, prompts, prefix):
        P, G, _ = prefix.shape
        return torch.zeros(P, G, 3).log_softmax(-1)


def test_sample_group_names_what_a_policy_lacks():
    with pytest.raises(TypeError, match=r"sample_group: policy: OnlyNextToken does not provide protocols\.Sampler; "
                                        r"missing: decoder, sampling_context"):
        sample_group(OnlyNextToken(), torch.arange(2), 4)

    class WithPrefixDecoding(PrefixDecoding, OnlyNextToken):
        pass

    assert sample_group(WithPrefixDecoding(), torch.arange(2), 4).shape == (2, 4, 1)


def test_train_refuses_a_policy_or_anchor_that_lacks_a_member():
    class NoGradient(PrefixDecoding, torch.nn.Module):     # samples and scores, cannot be trained
        def next_token_logp(self, prompts, prefix):
            return OnlyNextToken().next_token_logp(prompts, prefix)

        def log_probs(self, prompts, completions):
            return torch.zeros(completions.shape)

    good = TabularSoftmaxPolicy(1, 3)
    kw = dict(prompts=torch.arange(1), reward_fn=ArmRewards([[0.1, 0.5, 0.9]]), recipe=seed_grpo(),
              beta_ctl=FixedBeta(0.1), optimizer=LeanAdam(good.parameters(), 0.1), G=4, steps=1)
    with pytest.raises(TypeError, match=r"train: policy: NoGradient does not provide protocols\.Policy; "
                                        r"missing: accumulate_grad"):
        next(train(NoGradient(), frozen_copy(good), **kw))
    with pytest.raises(TypeError, match=r"train: anchor: OnlyNextToken does not provide protocols\.Anchor; "
                                        r"missing: log_probs"):
        next(train(good, OnlyNextToken(), **kw))
    assert next(train(good, frozen_copy(good), **kw)).r.shape == (1, 4)


def test_require_passes_a_provider_silently():
    require(TabularSoftmaxPolicy(1, 2), Policy, "test")


def test_reward_set_refuses_a_component_that_is_neither_kind(tok):
    with pytest.raises(ValueError, match="component 'x' is 5; give a function f\\(prompt, completion\\), "
                                         "f\\(prompts, completions\\) or an object with score\\(batch\\)"):
        RewardSet(tok, {"x": 5})


def test_step_checks_refuse_a_task_without_steps():
    with pytest.raises(ValueError, match="step_checks: task 'addition' has no steps\\(\\)"):
        step_checks(AdditionTask())


def test_a_rollout_reward_must_define_call_and_receives_the_rollout():
    class Forgot(RolloutReward):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Forgot()

    class ReadsLogProbs(RolloutReward):
        def __call__(self, prompts, completions, rollout=None):
            return rollout.logp.sum(-1)                                          # (P, G)

    def plain(prompts, completions):                                             # no rollout parameter at all
        return completions[..., 0].float()

    ro = sample_group(TabularSoftmaxPolicy(1, 3), torch.arange(1), 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(call_reward(ReadsLogProbs(), ro.prompts, ro), ro.logp.sum(-1))
    assert torch.equal(call_reward(plain, ro.prompts, ro), ro.completions[..., 0].float())


def test_reward_names():
    def my_reward(prompts, completions):
        return None

    class Unnamed:
        def __call__(self, prompts, completions):
            return None

    assert reward_name(ArmRewards([0.5, 0.5], noise="none")) == "arm_rewards[none]"
    assert reward_name(my_reward) == "my_reward" and reward_name(lambda p, c: 0) == "<lambda>"
    assert reward_name(Unnamed()) == "Unnamed" and reward_name("given") == "given" and reward_name(None) == "reward"
