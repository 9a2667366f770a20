"""Exercises of notebooks/08_labelling_by_hand.ipynb: thumbs labels as advantages (an unlabelled completion is
not applicable), and the number of preference pairs the labels make."""
from __future__ import annotations

import torch

from minigrpo.core.advantages import group_mean
from minigrpo.lab.exercises import Exercise
from minigrpo.rewards.labels import Label, LabelReward, labels_to_pairs

NOTEBOOK = "08_labelling_by_hand.ipynb"

_PROMPTS = ["47+85=", "23+14=", "58+67=", "91+9="]
_ANSWERS = {"47+85=": "132", "23+14=": "37", "58+67=": "125", "91+9=": "100"}
_WRONG = ["122", "131", "32", "1", "", "133", "0"]


def _label_advantages(labels, prompts, texts):
    """A (P, G): LabelReward's 1 / 0 / None per completion, then the group mean over the labelled ones."""
    human = LabelReward(labels)
    values = [[human(x, y) for y in group] for x, group in zip(prompts, texts)]
    valid = torch.tensor([[v is not None for v in row] for row in values])
    r = torch.tensor([[0.0 if v is None else v for v in row] for row in values])
    return group_mean(r, valid)


def _draw(gen: torch.Generator, P: int, G: int) -> tuple[list, list]:
    """P prompts with G sampled completions each (repeats likely), as the anchor gives them."""
    prompts = _PROMPTS[:P]
    options = {x: [_ANSWERS[x]] + _WRONG[:4] for x in prompts}
    texts = [[options[x][int(i)] for i in torch.randint(0, 5, (G,), generator=gen)] for x in prompts]
    return prompts, texts


def _label(gen: torch.Generator, prompts: list, texts: list, p_label: float) -> list:
    """The labeller: each distinct completion labelled (good iff exact) with probability p_label."""
    labels = []
    for x, group in zip(prompts, texts):
        for y in dict.fromkeys(group):
            if float(torch.rand(1, generator=gen)) < p_label:
                labels.append(Label(x, y, good=y == _ANSWERS[x]))
    return labels


def _advantage_cases(gen: torch.Generator) -> list[tuple]:
    cases = []
    for P, G, p_label in [(3, 6, 0.7), (4, 8, 0.5), (2, 4, 1.0)]:
        prompts, texts = _draw(gen, P, G)
        cases.append((_label(gen, prompts, texts, p_label), prompts, texts))
    # by hand: a completion sampled twice (one label serves both), a relabel (the last one wins), a step-only
    # label (no thumbs: not applicable), a label of another prompt's completion, and a group nobody labelled
    prompts, texts = ["47+85=", "23+14=", "58+67="], [["132", "132", "122", "32"], ["37", "36", "36", "370"],
                                                       ["125", "115", "25", "1255"]]
    labels = [Label("47+85=", "132", good=True), Label("47+85=", "122", good=True), Label("47+85=", "122", good=False),
              Label("47+85=", "32", steps=(1.0, 0.0)), Label("23+14=", "36", good=False),
              Label("23+14=", "132", good=True), Label("23+14=", "37", good=True)]
    cases.append((labels, prompts, texts))
    return cases


label_advantages = Exercise(
    id="08.1", title="thumbs labels → advantages", function="my_label_advantages",
    reference=_label_advantages, cases=_advantage_cases,
    hint="look each completion up by (prompt, completion) text, the last label written winning (a relabel "
         "corrects); 👍 → 1.0, 👎 → 0.0, unlabelled or without a thumbs label (good is None) → not applicable; "
         "then per group A = r − mean over the labelled completions only, and A = 0 for the unlabelled ones "
         "(a group with none labelled: all 0)")


def _pair_cases(gen: torch.Generator) -> list[tuple]:
    cases = [(labels,) for labels, _, _ in _advantage_cases(gen)]
    only_good = [Label("47+85=", "132", good=True), Label("23+14=", "37", good=True)]    # no 👎: no pair
    cases.append((only_good,))
    cases.append(([Label("47+85=", "132", good=True), Label("47+85=", "132", good=True),   # one label twice
                   Label("47+85=", "122", good=False), Label("47+85=", "131", good=False),
                   Label("91+9=", "100", good=False), Label("91+9=", "100", good=True)],))   # relabelled good
    return cases


pair_count = Exercise(
    id="08.2", title="how many preference pairs the labels make", function="my_pair_count",
    reference=lambda labels: len(labels_to_pairs(labels)), cases=_pair_cases,
    hint="one label per (prompt, completion), the last written winning; labels without thumbs (good is None) "
         "do not count; then per prompt every 👍 completion pairs with every 👎 one of the same prompt: "
         "Σ_prompts n_good·n_bad (never a 👍 of one prompt against a 👎 of another)")
