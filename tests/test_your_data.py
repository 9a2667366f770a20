"""Your own problem: data files read with 🤗 datasets, reward functions in both signatures, the run on
them from the command line and from Python, and every bad input answered by one line naming it."""
import json
import warnings

import pytest
import torch

from minigrpo.assets import asset_path
from minigrpo.cli import main
from minigrpo.cli.flags import merge_repeats
from minigrpo.core.step import flat_groups
from minigrpo.lm.data import PromptData, Row, prompt_text
from minigrpo.lm.sources import DataPrompts, load_train_test
from minigrpo.lm.tasks import make_task
from minigrpo.lm.tokens import char_tokenizer, encode_completions, encode_prompts
from minigrpo.rewards.compose import RewardSet
from minigrpo.rewards.functions import RewardFunction, RewardFunctionError, load_function, parse_spec
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.errors import NothingToLearn, NothingToLearnWarning, UnjudgedRewardWarning
from minigrpo.runs.lm_run import train_lm

ANCHOR = str(asset_path("anchors") / "addition")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def addition_rows():
    return make_task("addition").dataset(240, seed=3).to_list()


@pytest.fixture()
def add_jsonl(tmp_path, addition_rows):
    return write_jsonl(tmp_path / "add.jsonl", addition_rows)


# --- reading data ------------------------------------------------------------------------------------

def test_every_format_reads_to_the_same_rows(tmp_path, addition_rows):
    import datasets

    ds = datasets.Dataset.from_list(addition_rows[:20])
    ds.to_json(str(tmp_path / "a.jsonl"))
    ds.to_csv(str(tmp_path / "a.csv"), index=False)
    ds.to_parquet(str(tmp_path / "a.parquet"))
    ds.save_to_disk(str(tmp_path / "folder"))
    loaded = [PromptData.load(tmp_path / name) for name in ("a.jsonl", "a.csv", "a.parquet", "folder")]
    for data in loaded:
        assert [r.prompt for r in data.rows] == [r["prompt"] for r in addition_rows[:20]]
        assert [str(r.columns["answer"]) for r in data.rows] == [r["answer"] for r in addition_rows[:20]]
        assert data.columns == ["answer"] and data.rows[3].index == 3


def test_a_dataset_dict_folder_gives_its_test_split_as_held_out(tmp_path, addition_rows):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(addition_rows[:30]),
                          "test": datasets.Dataset.from_list(addition_rows[30:40])}).save_to_disk(str(tmp_path / "dd"))
    train, test = load_train_test(str(tmp_path / "dd"))
    assert len(train) == 30 and len(test) == 10


def test_templated_prompts_split_near_the_asked_fraction():
    """CRC32 (the tasks' split) is linear: prompts that differ in two characters hash into a cluster,
    and 100 of them held out none at 10%. The data split's hash spreads them."""
    rows = [Row(f"what is {a} plus {b}?") for a in range(10) for b in range(10)]
    for fraction in (0.1, 0.3):
        held = PromptData(rows, "mem", []).split(fraction)[1]
        assert abs(len(held) - 100 * fraction) <= 3 * (100 * fraction * (1 - fraction)) ** 0.5


def test_the_held_out_split_is_fixed_by_prompt_hash_and_every_row_once_per_epoch(add_jsonl):
    train, test = load_train_test(add_jsonl, test_fraction=0.25)
    again_train, again_test = load_train_test(add_jsonl, test_fraction=0.25)
    assert [r.prompt for r in test.rows] == [r.prompt for r in again_test.rows] and 20 < len(test) < 100
    assert not {r.prompt for r in train.rows} & {r.prompt for r in test.rows}
    source = DataPrompts(train, test, seed=7)
    n = len(train)
    epoch = [r.index for t in range(1, n // 4 + 1) for r in source.train_rows(t, 4)]
    assert len(set(epoch)) == len(epoch) == n // 4 * 4                  # no row twice within an epoch
    assert [r.index for r in DataPrompts(train, test, seed=7).train_rows(5, 4)] == \
        [r.index for r in source.train_rows(5, 4)]                      # a function of seed and step alone
    assert [r.index for r in DataPrompts(train, test, seed=8).train_rows(5, 4)] != \
        [r.index for r in source.train_rows(5, 4)]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"question": "1+1="}\n', "has no 'prompt' column (its columns: ['question'])"),
    ('{"prompt": "1+1="}\n{"prompt": 7}\n', "row 1: prompt=7 is not allowed"),
    ('{"prompt": "1+1="}\n{"prompt": ""}\n', "row 1: the prompt is empty"),
    ('{"prompt": "1+1="}\nnot json\n', "line 2 is not valid JSON"),
    ('{"prompt": [{"role": "user"}]}\n', "row 0: prompt=[{'role': 'user'}] is not allowed"),
])
def test_bad_data_is_refused_naming_the_file_and_row(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError) as e:
        PromptData.load(path)
    assert message in str(e.value) and "bad.jsonl" in str(e.value)


def test_missing_files_and_unknown_types_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="'nope.jsonl' does not exist"):
        PromptData.load("nope.jsonl")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"the file type '.txt' is not read"):
        PromptData.load(tmp_path / "a.txt")
    with pytest.raises(ValueError, match="hub did not provide it"):
        PromptData.load("someone/no-such-dataset")             # offline in tests: fails at once


def test_chat_prompts_go_through_the_chat_template():
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz <>|_:\n")
    row = Row([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="has no chat template"):
        prompt_text(tok, row.prompt)
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    assert prompt_text(tok, row.prompt) == "<|user|>hi\n<|assistant|>"


# --- reward functions ----------------------------------------------------------------------------

TOK = char_tokenizer("0123456789+= ")


def batch_for(prompts, completions, rows):
    """A bound reward's input: prompt ids (P, L), completion ids (P, G, T)."""
    return encode_prompts(TOK, prompts), encode_completions(TOK, completions)


def trl_exact(prompts, completions, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def per_exact(prompt, completion, answer):
    return float(completion.strip() == answer)


def test_both_signatures_score_the_same_and_see_their_rows_columns():
    rows = [Row("1+2=", {"answer": "3"}, 0), Row("4+4=", {"answer": "8"}, 1)]
    prompts, comps = batch_for([r.prompt for r in rows], [["3", " 3", "4"], ["8", "9", "88"]], rows)
    for fn in (trl_exact, per_exact):
        rs = RewardSet(TOK, {"exact": fn})
        scored = rs.bind(rows, "mem")(prompts, comps)
        assert scored.r.tolist() == [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    seen = {}

    def spy(prompts, completions, completion_ids, **columns):
        seen.update(prompts=prompts, completions=completions, ids=completion_ids, columns=columns)
        return [None] * len(completions)

    RewardSet(TOK, {"spy": spy, "exact": per_exact}).bind(rows, "mem")(prompts, comps)
    assert seen["prompts"] == ["1+2="] * 3 + ["4+4="] * 3                   # prompt-major, as TRL repeats them
    assert seen["completions"][1] == " 3" and seen["columns"] == {"answer": ["3"] * 3 + ["8"] * 3}
    assert seen["ids"][0] == TOK.encode("3", add_special_tokens=False)


def test_chat_rows_reach_functions_in_trls_conversational_form():
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz0123456789 <>|\n")
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    rows = [Row([{"role": "user", "content": "say hi"}], {}, 0)]
    got = []

    def chatty(prompts, completions):
        got.extend(zip(prompts, completions))
        return [1.0] * len(completions)

    prompts = encode_prompts(tok, [prompt_text(tok, rows[0].prompt)])
    RewardSet(tok, {"chatty": chatty}).bind(rows)(prompts, encode_completions(tok, [["hi"]]))
    assert got == [([{"role": "user", "content": "say hi"}], [{"role": "assistant", "content": "hi"}])]


@pytest.mark.parametrize("fn, message", [
    (lambda prompt, completion, answer: 1 / 0, "raised ZeroDivisionError: division by zero (on row 11 of data"),
    (lambda prompt, completion: "yes", "returned 'yes' (str) (on row 11"),
    (lambda prompt, completion: float("nan"), "returned nan (on row 11"),
    (lambda prompts, completions: [1.0], "returned 1 values for 4 completions (2 prompts × 2)"),
    (lambda prompts, completions: 1.0, "returned float; the batched form returns a list of 4"),
])
def test_a_misbehaving_reward_function_is_named_with_its_row(fn, message):
    rows = [Row("1+2=", {"answer": "3"}, 11), Row("4+4=", {"answer": "8"}, 12)]
    prompts, comps = batch_for([r.prompt for r in rows], [["3", "4"], ["8", "9"]], rows)
    with pytest.raises(RewardFunctionError) as e:
        RewardSet(TOK, {"mine": fn}).bind(rows, "f.jsonl")(prompts, comps)
    assert "reward function 'mine'" in str(e.value) and message in str(e.value)


def test_a_function_may_return_bools_none_and_step_lists():
    rows = [Row("1+2=", {"answer": "3"}, 0)]
    prompts, comps = batch_for(["1+2="], [["3", "4", "3 4"]], rows)
    scored = RewardSet(TOK, {"b": lambda prompt, completion: completion == "3",
                             "n": lambda prompt, completion: None if completion == "4" else 0.5,
                             "s": (lambda prompt, completion: [1.0] * len(completion.split(" ")))},
                       step_separators=" ").bind(rows)(prompts, comps)
    assert scored.components["b"].tolist() == [[1.0, 0.0, 0.0]]
    assert scored.applicable["n"].tolist() == [[True, False, True]]
    assert scored.steps is not None and scored.steps.present.sum().item() == 4


def test_reward_specs_load_from_files_and_modules(tmp_path):
    (tmp_path / "mine.py").write_text("def exact(prompts, completions, answer, **kw):\n    return [1.0]*len(completions)\n"
                                      "def helper():\n    pass\nX = 3\n")
    assert parse_spec(f"{tmp_path}/mine.py:exact=0.5") == (f"{tmp_path}/mine.py:exact", 0.5)
    assert parse_spec("pkg.mod:f") == ("pkg.mod:f", 1.0)
    assert load_function(f"{tmp_path}/mine.py:exact").__name__ == "exact"
    assert load_function("minigrpo.rewards.checks:exact_answer").__name__ == "exact_answer"
    for spec, message in [(f"{tmp_path}/mine.py:nope", "has no 'nope' (its functions: ['exact', 'helper'])"),
                          (f"{tmp_path}/mine.py:X", "'X' is a int, not a function"),
                          ("missing.py:f", "the file 'missing.py' does not exist"),
                          ("no_such_module_xyz:f", "the module 'no_such_module_xyz' failed to import"),
                          ("mine.py", "write FILE.py:NAME")]:
        with pytest.raises((ValueError, FileNotFoundError), match=message.replace("[", r"\[").replace("(", r"\(")
                           .replace(")", r"\)")):
            load_function(spec)
    with pytest.raises(ValueError, match="name its parameters like"):
        RewardFunction(lambda x: 0.0, "one_arg")


def test_flags_of_many_values_may_repeat(tmp_path, capsys):
    groups = {"--reward-fn": "reward_fns", "--reward-fns": "reward_fns", "--forbidden": "forbidden"}
    assert merge_repeats(["--reward-fn", "a.py:f", "--steps", "3", "--reward-fn=b.py:g=0.2", "--reward-fns", "c:h"],
                         groups) == ["--reward-fn", "a.py:f", "b.py:g=0.2", "c:h", "--steps", "3"]
    from minigrpo.cli import parse

    _, settings = parse("train", ["--reward-fn", "r.py:exact", "--reward-fn", "r.py:short=0.2", "--forbidden", "6"])
    assert settings["reward_fns"] == {"r.py:exact": 1.0, "r.py:short": 0.2}


# --- runs on your data -----------------------------------------------------------------------------

REWARDS = '''
def exact(prompts, completions, answer, **kwargs):
    return [float(c.strip() == str(a)) for c, a in zip(completions, answer)]

def close(prompt, completion, answer):
    try:
        return -abs(int(completion) - int(answer)) / 100
    except ValueError:
        return None

def never(prompts, completions, **kwargs):
    return [0.0] * len(completions)
'''


def test_train_on_a_jsonl_with_reward_files_from_the_command_line(tmp_path, add_jsonl, capsys):
    (tmp_path / "rewards.py").write_text(REWARDS)
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {add_jsonl}\nmodel: {ANCHOR}\nreward_fns:\n  {tmp_path}/rewards.py:exact: 1.0\n"
                      f"  {tmp_path}/rewards.py:close: 0.5\nreport_to: [tensorboard]\n")
    rc = main(["train", "--config", str(config), "--steps", "3",
               "--prompts", "4", "--group-size", "4", "--eval-size", "12", "--eval-samples", "2",
               "--out", str(tmp_path / "runs"), "--json"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    records = [json.loads(line) for line in open(f"{summary['run_dir']}/metrics.jsonl")]
    saved = json.load(open(f"{summary['run_dir']}/config.json"))
    assert saved["reward_fns"] == {f"{tmp_path}/rewards.py:exact": 1.0, f"{tmp_path}/rewards.py:close": 0.5}
    assert saved["reward_weights"] == {}
    for key in ("eval/greedy/reward", "eval/greedy/exact", "eval/greedy/close", "eval/sampled/exact",
                "eval/pass@2/exact", "eval/greedy/correct", "test_accuracy"):
        assert key in records[0] and key in records[-1], key
    assert records[0]["eval/greedy/exact"] == records[0]["test_accuracy"] > 0.3       # the anchor adds well
    for key in ("reward/exact", "reward/close", "frac_flat_groups", "reward_valid_fraction", "ended_fraction"):
        assert key in records[1]
    assert summary["anchor_reward"] == records[0]["eval/greedy/reward"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(f"{summary['run_dir']}/tensorboard").Reload()
    assert [e.step for e in board.Scalars("reward/exact")] == [1, 2, 3]
    assert [e.value for e in board.Scalars("eval/greedy/exact")] == pytest.approx(
        [r["eval/greedy/exact"] for r in records if "eval/greedy/exact" in r])


def test_a_run_on_data_resumes_exactly(tmp_path, add_jsonl):
    cfg = TrainConfig(data=add_jsonl, model=ANCHOR, steps=4, save_every=2, prompts_per_step=4, group_size=4,
                      eval_every=2, eval_size=8, eval_samples=2, out=str(tmp_path / "runs"), device="cpu", lr=1e-3)
    whole = train_lm(cfg, run_dir=tmp_path / "whole", progress=False)
    train_lm(TrainConfig(**{**cfg.to_dict(), "steps": 2}), run_dir=tmp_path / "part", progress=False)
    resumed = train_lm(cfg, resume=tmp_path / "part", progress=False)
    for a, b in zip(whole.metrics, resumed.metrics):
        assert {k: v for k, v in a.items() if k != "step_seconds"} == \
            pytest.approx({k: v for k, v in b.items() if k != "step_seconds"}, nan_ok=True)
    from minigrpo.lm.models import load_causal_lm

    model, _ = load_causal_lm(tmp_path / "whole")              # a run's folder: its newest checkpoint
    final, _ = load_causal_lm(tmp_path / "whole" / "checkpoints" / "step-000004")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), final.state_dict().values()))


@pytest.mark.parametrize("args, message", [
    (["--data", "missing.jsonl"], "data 'missing.jsonl' does not exist"),
    (["--reward-fn", "REWARDS:absent"], "has no 'absent'"),
    (["--reward-fn", "REWARDS:exact", "--data", "NOANSWER"], "asks for the column 'answer', which data"),
    (["--data", "NOANSWER"], "has no 'answer' column for the built-in 'correct' check"),
    (["--model", "tiny"], "'tiny' is a built-in task's anchor; with data give a model folder"),
    (["--test-data", "x.jsonl", "--data", None], "test_data"),
    (["--report-to", "tensorbord"], "report_to=['tensorbord'] is not allowed; 'tensorbord' is unknown"),
    (["--max-new-tokens", "60"], "over the model's context of 48 tokens"),
])
def test_bad_runs_are_refused_before_a_run_folder_is_made(tmp_path, add_jsonl, capsys, args, message):
    (tmp_path / "rewards.py").write_text(REWARDS)
    noanswer = write_jsonl(tmp_path / "noanswer.jsonl", [{"prompt": "1+1="}] * 5)
    args = [{"REWARDS:absent": f"{tmp_path}/rewards.py:absent", "REWARDS:exact": f"{tmp_path}/rewards.py:exact",
             "NOANSWER": noanswer}.get(a, a) for a in args]
    base = {"--data": add_jsonl, "--model": ANCHOR}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["train", *[t for k, v in base.items() if v is not None for t in (k, v)], "--steps", "2",
            "--out", str(tmp_path / "runs")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigrpo train: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_run_that_teaches_nothing_warns_and_stops(tmp_path, add_jsonl):
    (tmp_path / "rewards.py").write_text(REWARDS)
    cfg = TrainConfig(data=add_jsonl, model=ANCHOR, reward_fns={f"{tmp_path}/rewards.py:never": 1.0}, steps=10,
                      stop_after_flat=3, prompts_per_step=4, group_size=4, eval_size=8, eval_samples=0,
                      out=str(tmp_path / "runs"))
    with pytest.warns(NothingToLearnWarning, match="Every completion got the same reward, 0, so the reward cannot"):
        with pytest.raises(NothingToLearn, match="Stopped after 3 steps that all taught nothing"):
            train_lm(cfg, progress=False)
    (run,) = (tmp_path / "runs").iterdir()
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["frac_flat_groups"] for r in records[1:]] == [1.0, 1.0, 1.0]
    with warnings.catch_warnings(record=True) as caught:            # allowed: the run goes on to its end
        warnings.simplefilter("always")
        result = train_lm(TrainConfig(**{**cfg.to_dict(), "stop_after_flat": 0, "steps": 4}), progress=False)
    assert len(result.metrics) == 5 and sum(w.category is NothingToLearnWarning for w in caught) == 1


def test_a_component_that_judges_nothing_is_named_at_its_first_step_and_at_the_end(tmp_path, add_jsonl):
    cfg = TrainConfig(data=add_jsonl, model=ANCHOR, steps=3, prompts_per_step=4, group_size=4, eval_size=8,
                      eval_samples=0, stop_after_flat=0, out=str(tmp_path / "runs"))
    rewards = {"nothing": lambda prompt, completion: None, "length": lambda prompt, completion: len(completion)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_lm(cfg, rewards=rewards, progress=False)
    said = [str(w.message) for w in caught if w.category is UnjudgedRewardWarning]
    assert said == ["reward component 'nothing' judged none of the 16 completions at step 1 (it returned None for "
                    "every one), so it gave that step no signal; None means 'does not apply': check the columns it "
                    "reads and what it returns",
                    "reward component 'nothing' judged no completion in any of the 3 steps of this run, so it did "
                    "not shape training"]


def test_python_api_takes_data_and_trl_style_functions(tmp_path, add_jsonl):
    cfg = TrainConfig(data=add_jsonl, model=ANCHOR, steps=2, prompts_per_step=4, group_size=4, eval_size=8,
                      eval_samples=0, out=str(tmp_path / "runs"))
    result = train_lm(cfg, rewards=trl_exact, progress=False)
    assert "eval/greedy/trl_exact" in result.metrics[0] and result.anchor_reward == result.anchor_accuracy


def test_frac_flat_groups_counts_groups_with_nothing_to_teach():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [2.0, 5.0, 2.0]])
    assert flat_groups(r) == pytest.approx(1 / 3)
    valid = torch.tensor([[True, True, True], [True, False, True], [True, False, False]])
    assert flat_groups(r, valid) == 1.0                   # group 1's judged pair is equal; group 2 has one judged


def test_chat_data_on_a_qwen2_model_and_plain_data_on_llama_train_from_the_command_line(tmp_path, capsys):
    """Beyond GPT-2: a Qwen2 folder with a ChatML template (its EOS the end-of-turn token) on chat
    messages, and a Llama folder with a SentencePiece-style tokenizer on plain prompts, each SFT'd a
    little and then trained with a TRL-style reward that sees TRL's conversational form."""
    from local_models import bpe_tokenizer, save_model, tiny_llama, tiny_qwen2

    texts = [f"what is {a} plus {b}? it is {a + b}." for a in range(10) for b in range(10)]
    qwen = save_model(tiny_qwen2(t := bpe_tokenizer(texts, 200, "bytelevel", chat_template=True)), t, tmp_path / "q")
    llama = save_model(tiny_llama(t := bpe_tokenizer(texts, 200, "metaspace")), t, tmp_path / "l")
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": [{"role": "user", "content": f"what is {a} plus {b}?"}],
                                                  "completion": str(a + b), "answer": str(a + b)}
                                                 for a in range(10) for b in range(10)])
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": f"what is {a} plus {b}? it is", "completion": f" {a + b}",
                                                    "answer": str(a + b)} for a in range(10) for b in range(10)])
    (tmp_path / "rw.py").write_text(
        "import json\n"
        "def exact(prompts, completions, answer, **kw):\n"
        "    with open(__file__ + '.seen', 'a') as f:\n"
        "        f.write(json.dumps([prompts[0], completions[0]]) + '\\n')\n"
        "    text = lambda c: c[0]['content'] if isinstance(c, list) else c\n"
        "    return [float(text(c).strip() == a) for c, a in zip(completions, answer)]\n")
    for model, data, name in ((qwen, chat, "q"), (llama, plain, "l")):
        assert main(["sft", "--model", model, "--data", data, "--out", str(tmp_path / f"{name}-sft"), "--steps", "20",
                     "--batch-size", "16", "--lr", "3e-3"]) == 0, capsys.readouterr().err
        assert main(["train", "--data", data, "--model", str(tmp_path / f"{name}-sft"), "--reward-fn",
                     f"{tmp_path}/rw.py:exact", "--steps", "2", "--prompts", "4", "--group-size", "4", "--eval-size",
                     "8", "--eval-samples", "2", "--max-new-tokens", "6", "--out", str(tmp_path / "runs"),
                     "--json"]) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        records = [json.loads(line) for line in open(f"{summary['run_dir']}/metrics.jsonl")]
        assert "eval/greedy/exact" in records[0] and "reward/exact" in records[-1]
    seen = [json.loads(line) for line in open(tmp_path / "rw.py.seen")]
    chat_prompt, chat_completion = seen[0]
    assert chat_prompt[0]["role"] == "user" and chat_completion[0]["role"] == "assistant"
    assert any(isinstance(p, str) and p.startswith("what is") for p, _ in seen)


def test_the_correct_check_reads_csv_numbers_and_skips_rows_without_an_answer(tmp_path):
    """A CSV answer column with a gap is read as floats (1.0): it still matches "1"; a row with no answer
    is not judged (None), not scored 0."""
    (tmp_path / "a.csv").write_text("prompt,answer\n1+0=,1\n2+0=,\n")
    data = PromptData.load(tmp_path / "a.csv")
    assert data.rows[0].columns["answer"] == 1.0 and data.rows[1].columns["answer"] is None
    from minigrpo.rewards.checks import exact_answer

    prompts, comps = batch_for([r.prompt for r in data.rows], [["1", "2"], ["2", "3"]], data.rows)
    scored = RewardSet(TOK, {"correct": exact_answer()}).bind(data.rows, "a.csv")(prompts, comps)
    assert scored.components["correct"][0].tolist() == [1.0, 0.0]
    assert scored.applicable["correct"].tolist() == [[True, True], [False, False]]
    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    with pytest.raises(ValueError, match="'.*blank.jsonl' is empty"):
        PromptData.load(tmp_path / "blank.jsonl")


def test_a_prompt_column_of_another_name_serves_sft_and_grpo(tmp_path, capsys):
    """A hub-style file whose prompts are in 'question' (and a gsm8k-style config name refused for a
    local file): --prompt-column names it, for SFT and GRPO alike; the row's other columns stay columns."""
    rows = [{"question": f"{a}+{b}=", "answer": str(a + b), "completion": str(a + b)} for a in range(10)
            for b in range(10)]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    loaded = PromptData.load(data, prompt_column="question")
    assert loaded.rows[0].prompt == "0+0=" and loaded.columns == ["answer", "completion"]
    with pytest.raises(ValueError, match="has no 'prompt' column .* prompt_column \\(--prompt-column\\)"):
        PromptData.load(data)
    out = tmp_path / "anchor"
    assert main(["sft", "--data", data, "--prompt-column", "question", "--out", str(out), "--steps", "5",
                 "--batch-size", "8"]) == 0, capsys.readouterr().err
    assert "--prompt-column question" in json.load(open(out / "sft.json"))["command"]
    capsys.readouterr()
    assert main(["train", "--data", data, "--prompt-column", "question", "--model", str(out), "--steps", "1",
                 "--prompts", "4", "--group-size", "2", "--eval-size", "4", "--eval-samples", "0",
                 "--out", str(tmp_path / "runs"), "--json"]) == 0, capsys.readouterr().err
    assert main(["train", "--data", data, "--data-config", "main", "--model", str(out),
                 "--out", str(tmp_path / "runs")]) == 2
    assert "data_config='main' names a hub dataset's configuration; data" in capsys.readouterr().err


def test_a_run_records_its_rewards_and_refuses_to_resume_without_those_given_in_code(tmp_path, add_jsonl):
    cfg = TrainConfig(data=add_jsonl, model=ANCHOR, steps=2, save_every=1, prompts_per_step=4, group_size=2,
                      eval_size=4, eval_samples=0, out=str(tmp_path / "runs"))
    train_lm(cfg, run_dir=tmp_path / "run", rewards={"exact": trl_exact}, progress=False)
    recorded = json.load(open(tmp_path / "run" / "rewards.json"))
    from minigrpo.runs.lm_setup import code_fingerprint

    assert recorded == {"exact": {"weight": 1.0, "function": f"{__name__}.trl_exact", "from": "code",
                                  "import_path": f"{__name__}:trl_exact", "fingerprint": code_fingerprint(trl_exact)}}
    more = TrainConfig(**{**cfg.to_dict(), "steps": 3})
    with pytest.raises(ValueError, match="was trained with rewards given in code \\(exact\\); resuming with the "
                                         "configured reward would change"):
        train_lm(more, resume=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="components \\['exact'\\]; the reward given now has \\['other'\\]"):
        train_lm(more, resume=tmp_path / "run", rewards={"other": trl_exact}, progress=False)
    assert len(train_lm(more, resume=tmp_path / "run", rewards={"exact": trl_exact}, progress=False).metrics) == 4


def test_a_module_beside_you_loads_as_the_minigrpo_command_runs(tmp_path, monkeypatch):
    """The `minigrpo` console script does not put the working directory on sys.path (`python -m` does):
    `--reward-fn mypkg.rewards:exact` still finds the package in the folder you run it from."""
    import sys

    (tmp_path / "mypkg_beside").mkdir()
    (tmp_path / "mypkg_beside" / "__init__.py").write_text("")
    (tmp_path / "mypkg_beside" / "rewards.py").write_text("def exact(prompt, completion):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_function("mypkg_beside.rewards:exact")("1+1=", "2") == 1.0
