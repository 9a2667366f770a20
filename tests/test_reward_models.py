"""Learned and human rewards: Bradley–Terry reward models, preference data, LM judges, labels, the panel."""
import json

import pytest
import torch

from minigrpo.rewards.compose import Completions, RewardSet
from minigrpo.rewards.judge import LMJudge
from minigrpo.rewards.labels import Label, LabelReward, append_label, labels_to_pairs, load_labels
from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2
from minigrpo.rewards.preferences import (PreferencePair, agreement, closeness, column_checker, load_preferences,
                                  pairs_from_ranking, parse_preferences, save_preferences, synthetic_preferences)
from minigrpo.rewards.reward_model import (RewardModel, RewardModelReward, RMTrainConfig, bradley_terry_loss, pair_accuracy,
                                   train_reward_model)
from minigrpo.lm.sft import anchor_dir
from minigrpo.lm.tasks import AdditionTask, JudgeTask
from minigrpo.lm.tokens import char_tokenizer, encode_prompts

ANCHOR = anchor_dir("addition")


# --- Bradley–Terry ---------------------------------------------------------------------------------------

def test_bradley_terry_loss_is_the_negative_log_likelihood_of_the_preferences():
    rc, rr = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 3.0])
    expect = -torch.log(torch.sigmoid(rc - rr)).mean()
    assert torch.allclose(bradley_terry_loss(rc, rr), expect)
    assert torch.isfinite(bradley_terry_loss(torch.tensor([-1e4]), torch.tensor([1e4])))     # no log(0)
    assert pair_accuracy(rc, rr) == pytest.approx(1 / 3)


def test_reward_model_learns_the_hidden_rule_to_90_percent_held_out_pair_accuracy():
    torch.manual_seed(0)
    task = AdditionTask()
    rule = closeness(task)
    train = synthetic_preferences(task, rule, 600, "train", 8, torch.Generator().manual_seed(0))
    test = synthetic_preferences(task, rule, 100, "test", 8, torch.Generator().manual_seed(1))
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
    assert agreement(test, rule) == 1.0
    rm = RewardModel.from_causal_lm(ANCHOR)
    before = rm.evaluate(test)
    history = train_reward_model(rm, train, test, RMTrainConfig(steps=300, lr=1e-3, eval_every=100))
    assert history[-1]["test_accuracy"] >= 0.9, (before, history[-1])
    s = rm.scores([p.prompt for p in train[:500]], [p.chosen for p in train[:500]])
    assert abs(s.mean().item()) < 2 and 0.1 < s.std().item() < 10          # standardised, so β keeps its meaning


def test_reward_model_saves_loads_and_drops_into_a_reward_set(tmp_path):
    rm = RewardModel.from_causal_lm(ANCHOR)
    rm.offset, rm.scale = 0.5, 2.0
    rm.save(tmp_path / "rm", note="test")
    back = RewardModelReward.load(tmp_path / "rm")
    assert back.rm.offset == 0.5 and back.rm.meta["note"] == "test"
    prompts, comps = ["47+85="] * 2, ["132", "122"]
    assert torch.allclose(back.rm.scores(prompts, comps), rm.scores(prompts, comps))
    tok = rm.tokenizer
    p_ids = encode_prompts(tok, ["47+85="])
    ids = torch.tensor([[tok.encode("132") + [tok.eos_token_id], tok.encode("122") + [tok.eos_token_id]]])
    out = RewardSet(tok, {"rm": back})(p_ids, ids)
    assert torch.allclose(out.components["rm"][0], rm.scores(prompts, comps))


def test_loads_a_hugging_face_sequence_classification_folder(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = char_tokenizer("ab")
    for labels in (1, 2):
        cfg = GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16, n_layer=1, n_head=2, num_labels=labels,
                         pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        model = GPT2ForSequenceClassification(cfg)
        model.save_pretrained(tmp_path / f"clf{labels}")
        tok.save_pretrained(tmp_path / f"clf{labels}")
    rm = RewardModel.load(tmp_path / "clf1")
    ids = torch.tensor([tok.encode("ab") + [tok.eos_token_id]])
    direct = GPT2ForSequenceClassification.from_pretrained(tmp_path / "clf1").eval()(input_ids=ids).logits[0, 0]
    assert torch.allclose(rm.scores(["a"], ["b"])[0], direct, atol=1e-5)
    with pytest.raises(ValueError, match="num_labels=2"):
        RewardModel.load(tmp_path / "clf2")
    two = RewardModel.load(tmp_path / "clf2", label=1)
    assert (two.scores(["a"], ["b"]) <= 0).all()                    # a log-probability of label 1
    with pytest.raises(FileNotFoundError, match="config.json"):
        RewardModel.load(tmp_path / "nothing")


# --- preference data ---------------------------------------------------------------------------------------

def test_rankings_become_every_ordered_pair():
    pairs = pairs_from_ranking("x", ["a", "b", "c", "b"])
    assert pairs == [PreferencePair("x", "a", "b"), PreferencePair("x", "a", "c"), PreferencePair("x", "b", "c")]


def test_bad_preference_records_raise_by_line_or_are_counted(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n'
                    '{"prompt": "1+1=", "chosen": "2"}\n'
                    '{"prompt": "1+1=", "chosen": "2", "rejected": "2"}\n'
                    'not json\n'
                    '{"prompt": "2+2=", "ranking": ["4", "5", "44"]}\n')
    with pytest.raises(ValueError, match="prefs.jsonl:2: missing field"):
        load_preferences(path)
    pairs, report = load_preferences(path, strict=False)
    assert len(pairs) == 1 + 3
    assert report.skipped == {"missing field": 1, "identical": 1, "not valid JSON": 1}
    assert "4 pairs kept" in str(report)
    save_preferences(pairs, tmp_path / "out.jsonl")
    assert load_preferences(tmp_path / "out.jsonl")[0] == pairs
    with pytest.raises(ValueError, match="identical"):
        parse_preferences([{"prompt": "p", "chosen": "a", "rejected": "a"}])


def test_the_lazy_rater_agrees_with_the_truth_mostly_and_prefers_careless_answers():
    task = AdditionTask()
    lazy, truth = column_checker(task), closeness(task)
    pairs = synthetic_preferences(task, lazy, 200, "train", 8, torch.Generator().manual_seed(0))
    assert 0.6 < agreement(pairs, truth) < 0.95
    assert lazy("47+85=", "122") > lazy("47+85=", "132")            # careless beats right when carrying
    assert lazy("12+34=", "46") == max(lazy("12+34=", c) for c in ["46", "47", "56", "4"])


# --- LM judge -------------------------------------------------------------------------------------------

def test_judge_score_is_the_renormalised_verdict_probability():
    task = JudgeTask()
    tok = char_tokenizer(task.alphabet)
    model = build_tiny_gpt2(tok, TinyGPT2(n_layer=1, n_embd=32, n_head=2), seed=3)
    judge = LMJudge(model, tok, template="{prompt}{completion}?", verdicts={"Y": 1.0, "N": 0.0})
    probs = judge.verdict_probs(["47+85=", "1+2="], ["132", "3"])
    for i, text in enumerate(["47+85=132?", "1+2=3?"]):
        ids = torch.tensor([tok.encode(text)])
        logits = model(input_ids=ids).logits[0, -1]
        y, n = logits[tok.convert_tokens_to_ids("Y")], logits[tok.convert_tokens_to_ids("N")]
        assert probs[i, 0].item() == pytest.approx(torch.sigmoid(y - n).item(), abs=1e-5)
    grader = LMJudge(model, tok, verdicts={"1": 1.0, "2": 2.0, "3": 3.0})
    g = grader.scores(["1+2="], ["3"])
    assert 1.0 <= g.item() <= 3.0
    with pytest.raises(ValueError, match="exactly one token"):
        LMJudge(model, tok, verdicts={"YN": 1.0, "N": 0.0})
    with pytest.raises(ValueError, match="completion"):
        LMJudge(model, tok, template="{prompt}")


def test_judge_task_keeps_base_prompts_in_their_split():
    task = JudgeTask()
    g = torch.Generator().manual_seed(0)
    train = task.sample(300, "train", g)
    test = task.sample(100, "test", g)
    base = lambda ps: {task.split_key(p.prompt) for p in ps}
    assert base(train).isdisjoint(base(test))
    assert 0.3 < sum(p.answer == "Y" for p in train) / 300 < 0.7
    assert task.solve("47+85=132?") == "Y" and task.solve("47+85=122?") == "N"


# --- human labels and the panel --------------------------------------------------------------------------

def test_labels_round_trip_and_become_a_reward_and_pairs(tmp_path):
    path = tmp_path / "labels.jsonl"
    append_label(path, Label("1+1=", "2", good=True, annotator="ana"))
    append_label(path, Label("1+1=", "3", good=False))
    append_label(path, Label("1+1=", "4", good=True))
    append_label(path, Label("1+1=", "4", good=False))                 # relabelled: the last one wins
    append_label(path, Label("1+2+3=", "3,5", steps=(1.0, 0.0)))
    labels, skipped = load_labels(path)
    assert len(labels) == 5 and not skipped
    reward = LabelReward(labels)
    assert reward("1+1=", "2") == 1.0 and reward("1+1=", "4") == 0.0 and reward("1+1=", "9") is None
    assert LabelReward(labels, stepwise=True)("1+2+3=", "3,5") == [1.0, 0.0]
    assert sorted((p.chosen, p.rejected) for p in labels_to_pairs(labels)) == [("2", "3"), ("2", "4")]


def test_bad_label_lines_are_named_or_counted(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"prompt": "1+1=", "completion": "2", "label": "good"}\n'
                    '{"prompt": "1+1=", "label": "good"}\n'
                    '{"prompt": "1+1=", "completion": "3", "label": "meh"}\n'
                    '{"prompt": "1+1=", "completion": "3", "steps": [1, "x"]}\n')
    with pytest.raises(ValueError, match=r"labels.jsonl:2: missing"):
        load_labels(path)
    labels, skipped = load_labels(path, strict=False)
    assert len(labels) == 1 and sum(skipped.values()) == 3


def test_labelling_panel_writes_the_jsonl_the_loaders_read(tmp_path):
    from minigrpo.lab.labelling import LabellingPanel

    items = [("1+1=", "2"), ("1+1=", "3"), ("2+2=", "4")]
    panel = LabellingPanel(items, tmp_path / "l.jsonl", annotator="me")
    panel.thumb(True)
    panel.skip()
    panel.thumb(False)
    assert panel.done
    labels, _ = load_labels(tmp_path / "l.jsonl")
    assert [(l.completion, l.good, l.annotator) for l in labels] == [("2", True, "me"), ("4", False, "me")]

    steps = LabellingPanel([("1+2+3=", "3,5")], tmp_path / "s.jsonl", steps=True)
    steps.step_toggles[0].value, steps.step_toggles[1].value = "✓", "✗"
    steps.save_steps()
    assert load_labels(tmp_path / "s.jsonl")[0][0].steps == (1.0, 0.0)

    rank = LabellingPanel(items, tmp_path / "r.jsonl", mode="rank")
    rank.rank_boxes[0].value, rank.rank_boxes[1].value = 2, 1          # "3" above "2"
    assert rank.prompts == ["1+1="]                                     # "2+2=" has one completion: nothing to rank
    rank.save_ranking()
    assert rank.done
    pairs, _ = load_preferences(tmp_path / "r.jsonl")
    assert pairs == [PreferencePair("1+1=", "3", "2")]
    with pytest.raises(ValueError, match="mode"):
        LabellingPanel(items, tmp_path / "x.jsonl", mode="stars")


def test_labelling_panel_asks_about_each_distinct_completion_once(tmp_path):
    """A group of 8 where the anchor wrote "83" four times asks 4 questions, not 8: labels are keyed by the
    texts, so one serves every copy; the view says how many copies there are."""
    from minigrpo.lab.labelling import LabellingPanel

    group = ["83", "83", "73", "83", "93", "83", "73", "82"]
    panel = LabellingPanel([("41+42=", y) for y in group], tmp_path / "l.jsonl")
    assert panel.items == [("41+42=", "83"), ("41+42=", "73"), ("41+42=", "93"), ("41+42=", "82")]
    assert panel.counts[("41+42=", "83")] == 4 and "sampled 4 times" in panel.view.value
    asked = []
    while not panel.done:
        asked.append(panel.current)
        panel.thumb(panel.current[1] == "83")
    assert len(asked) == 4 and len(load_labels(tmp_path / "l.jsonl")[0]) == 4
