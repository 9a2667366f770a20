"""Your own task, end to end: a model of your own and a file of your own, SFT then GRPO from the command line,
and the README's "Your own task" commands run as written (fewer steps), so the section cannot rot.

The learning test uses a task built to be learnt in seconds by a two-layer GPT-2 of width 32 with a byte-level BPE
tokenizer: "Ann has 7 pens. How many?" → "7", demonstrated by a helper who miscounts by one half the time. SFT
learns both answers; the exact-answer reward then has something to choose between in every group. Measured with
seeds 0–3 for the model, SFT and GRPO (300 SFT steps, 100 GRPO steps, one thread, 11–16 s each on a busy 2-core
CPU): mean training reward of the last 12 steps minus the first 12, +0.34, +0.34, +0.39, +0.38; held-out greedy
exact-answer reward 0.32, 0.36, 0.58, 0.38 → 1.0 every time. (60 GRPO steps after 200 SFT steps was not enough:
one seed rose by only +0.12.)
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
import shlex
from pathlib import Path

import pytest

from local_models import bpe_tokenizer, save_model, tiny_gpt2
from minigrpo.cli import main
from minigrpo.rewards.functions import RewardFunction, load_function
from minigrpo.runs.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "word_problems"

# what a TRL user writes: the batched form, the data's answer column by name
TRL_REWARD = '''
def exact(prompts, completions, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]
'''


pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def counting_rows(n: int, rng: random.Random, slip: float) -> list[dict]:
    """'Ann has 7 pens. How many?' → answer '7'; the completion is 8 with probability ``slip``."""
    rows = []
    for _ in range(n):
        who, what, k = rng.choice(["Ann", "Bob", "Cat", "Dan", "Eve", "Fay"]), rng.choice(["pens", "eggs", "cups"]), \
            rng.randint(1, 9)
        helper = k + 1 if rng.random() < slip else k
        rows.append({"prompt": f"{who} has {k} {what}. How many?", "completion": str(helper), "answer": str(k)})
    return rows


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def only_run(parent: Path) -> Path:
    (run,) = [p for p in parent.iterdir() if p.is_dir()]
    return run


# --- a model of your own, SFT then GRPO, from the command line ----------------------------------------------

def test_sft_then_grpo_on_your_data_with_a_bpe_gpt2_raises_the_reward(tmp_path, capsys):
    rng = random.Random(0)
    train = write_jsonl(tmp_path / "train.jsonl", counting_rows(400, rng, slip=0.5))
    test = write_jsonl(tmp_path / "test.jsonl", counting_rows(50, rng, slip=0.0))
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(TRL_REWARD)
    texts = [r["prompt"] + r["completion"] for r in map(json.loads, Path(train).read_text().splitlines())]
    tok = bpe_tokenizer(texts, vocab_size=300, kind="bytelevel")
    base = save_model(tiny_gpt2(tok, seed=0), tok, tmp_path / "base")

    assert main(["sft", "--model", base, "--data", train, "--out", str(tmp_path / "sft"), "--steps", "300",
                 "--batch-size", "32", "--lr", "3e-3"]) == 0
    sft = json.loads((tmp_path / "sft" / "sft.json").read_text())
    assert sft["final_loss"] < 0.5 * sft["first_loss"]

    assert main(["train", "--data", train, "--test-data", test, "--model", str(tmp_path / "sft"),
                 "--reward-fn", f"{rewards}:exact", "--steps", "100", "--lr", "1e-3", "--eval-every", "100",
                 "--eval-size", "50", "--out", str(tmp_path / "runs"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = only_run(tmp_path / "runs")
    assert summary["run_dir"] == str(run)
    records = metrics(run)
    steps = [r for r in records if "reward" in r]
    k = 12
    first = sum(r["reward"] for r in steps[:k]) / k
    last = sum(r["reward"] for r in steps[-k:]) / k
    assert last > first + 0.15, (first, last)                     # measured: +0.34 … +0.39 over 4 seeds
    evals = [r for r in records if "eval/greedy/reward" in r]
    assert [r["step"] for r in evals] == [0, 100]
    assert evals[-1]["eval/greedy/exact"] > evals[0]["eval/greedy/exact"] + 0.3      # measured: +0.42 … +0.68
    assert evals[-1]["test_accuracy"] == evals[-1]["eval/greedy/exact"]             # the same check, twice
    assert summary["anchor_reward"] == evals[0]["eval/greedy/reward"]
    assert summary["final_reward"] == evals[-1]["eval/greedy/reward"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["reward_fns"] == {f"{rewards}:exact": 1.0} and saved["model"] == str(tmp_path / "sft")


# --- the shipped example ------------------------------------------------------------------------------------

def test_the_shipped_data_is_what_make_data_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLE / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.main(tmp_path)
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), f"rerun make_data.py: {name} differs"
    rows = [json.loads(line) for line in (EXAMPLE / "train.jsonl").read_text().splitlines()]
    held_out = [json.loads(line) for line in (EXAMPLE / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 2400 and len(held_out) == 200
    assert not {r["prompt"] for r in rows} & {r["prompt"] for r in held_out}
    assert max(len(r["prompt"]) for r in rows + held_out) <= 60
    assert all(r["completion"] == r["answer"] for r in held_out)
    assert 0.25 < sum(r["completion"] != r["answer"] for r in rows) / len(rows) < 0.35   # the helper's slips
    assert sum(p.stat().st_size for p in EXAMPLE.iterdir() if p.is_file()) < 300_000


def test_the_shipped_rewards_are_read_in_their_two_signatures():
    exact = load_function(f"{EXAMPLE / 'rewards.py'}:exact")
    close = load_function(f"{EXAMPLE / 'rewards.py'}:close")
    assert RewardFunction(exact).batched and not RewardFunction(close).batched
    assert RewardFunction(exact).columns == ["answer"] and RewardFunction(close).columns == ["answer"]
    assert exact(["p"] * 4, ["12", " 12\n", "13", "twelve"], ["12"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert [close("p", c, "12") for c in ["12", " 13\n", "9", "1212", "-3", "twelve", "", "--3", "1_2"]] == \
        [0.0, -0.1, -0.3, -1.0, -1.0, None, None, None, None]


# --- the README's commands, as written ----------------------------------------------------------------------

def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Your own task\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, "README.md has no '## Your own task' section"
    return m.group(1)


def readme_commands(section: str) -> list[list[str]]:
    """Every `minigrpo sft` / `minigrpo train` command of the section's bash blocks, continuation lines joined and
    comments dropped, as argument lists."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args[:2] in (["minigrpo", "sft"], ["minigrpo", "train"]):
                commands.append(args[1:])
    return commands


def set_flag(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag``'s value replaced, or the flag added."""
    if flag in args:
        i = args.index(flag)
        return args[:i + 1] + [value] + args[i + 2:]
    return args + [flag, value]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


DOCUMENTED_KEYS = ["reward", "reward/exact", "reward/close", "kl", "eval/greedy/reward", "eval/greedy/exact",
                   "eval/greedy/close", "eval/sampled/reward", "eval/pass@4/exact", "test_accuracy"]


def test_the_readme_commands_run_as_written_and_log_the_documented_keys(tmp_path, monkeypatch, capsys):
    section = readme_section()
    commands = readme_commands(section)
    sft = [c for c in commands if c[0] == "sft" and "--data" in c and flag(c, "--model") == "tiny"]
    train = [c for c in commands if c[0] == "train" and "--data" in c and "--reward-fn" in c]
    assert sft and train, f"no SFT or GRPO command on the example in the README section: {commands}"
    sft, train = sft[0], train[0]
    anchor = flag(sft, "--out")
    assert flag(train, "--model") == anchor, "the GRPO command should start from the SFT command's folder"
    for key in DOCUMENTED_KEYS:
        assert f"`{key}`" in section, f"the README section does not name the metric {key!r}"

    monkeypatch.chdir(ROOT)                     # the commands' paths are relative to the repository root
    out = str(tmp_path / "anchor")
    assert main(set_flag(set_flag(sft, "--out", out), "--steps", "30")) == 0
    grpo = set_flag(set_flag(set_flag(train, "--model", out), "--steps", "4"), "--eval-every", "2")
    grpo = set_flag(set_flag(grpo, "--eval-size", "16"), "--out", str(tmp_path / "runs"))
    grpo += [] if "--json" in grpo else ["--json"]
    assert main(grpo) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = metrics(summary["run_dir"])
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    seen = set().union(*records)
    assert set(DOCUMENTED_KEYS) <= seen, sorted(set(DOCUMENTED_KEYS) - seen)

    yaml_blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    if yaml_blocks:                             # the config-file form names the same run
        (tmp_path / "run.yaml").write_text(yaml_blocks[0])
        from_file = TrainConfig.from_file(tmp_path / "run.yaml")
        assert from_file.data == flag(train, "--data") and from_file.test_data == flag(train, "--test-data")
        specs = [train[i + 1] for i, a in enumerate(train) if a == "--reward-fn"]
        assert from_file.reward_fns == TrainConfig(data=flag(train, "--data"), model=anchor,
                                                   reward_fns=dict.fromkeys(specs, 1.0)).reward_fns
