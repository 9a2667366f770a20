"""`minigrpo train --method {grpo,ppo,dpo,ipo,offline_grpo}` on the shipped tiny addition anchor, as a user
runs it: from the API and from the command line, the run folder each method leaves (metrics, checkpoints,
the data it built), exact resume, DPO/IPO from your own pairs or labels, and one-line refusals of bad input.

Every run is tiny (3–6 steps, 16–32 held-out prompts, 2 samples each): the file takes well under a
minute and a half on two shared CPU cores.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from minigrpo.cli import main
from minigrpo.lm.tasks import AdditionTask, in_test_split
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.folder import RunFolder
from minigrpo.runs.lm_run import train_lm

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ("grpo", "ppo", "offline_grpo", "dpo", "ipo")
SAMPLED = ("reward", "kl", "loss")                     # what a method that samples and scores reports
KEYS = {"grpo": SAMPLED, "ppo": SAMPLED + ("value_loss",), "offline_grpo": SAMPLED,
        "dpo": ("loss", "margin", "pair_accuracy"), "ipo": ("loss", "margin", "pair_accuracy")}
# (recipe, updates, minibatches) a run records when they are left None; ppo: minibatches = min(4, prompts_per_step)
FILLED = {"grpo": ("seed", 1, 1), "ppo": ("ppo", 4, 4), "offline_grpo": ("seed", 1, 1), "dpo": ("seed", 1, 1),
          "ipo": ("seed", 1, 1)}
TIMING = ("step_seconds", "data_seconds")              # wall-clock fields: differ between any two runs
TINY = dict(steps=3, group_size=4, prompts_per_step=4, eval_every=3, eval_size=16, eval_samples=2, sample_every=3,
            save_every=3, offline_prompts=8, device="cpu")
TASK = AdditionTask(2)                                 # the shipped anchor's task: "47+85=" -> "132"


def tiny(tmp, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(tmp), **kw})


def untimed(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def train_prompts(n: int, seed: int, test: bool = False) -> list[str]:
    """``n`` different addition prompts with a carry (so the careless answer is wrong), from the training
    split (or, ``test=True``, the held-out split the run evaluates on)."""
    gen, out = torch.Generator().manual_seed(seed), []
    while len(out) < n:
        p = TASK.draw(gen)
        if p not in out and in_test_split(p, TASK.test_fraction) == test and TASK.careless_answer(p) != TASK.solve(p):
            out.append(p)
    return out


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def api_runs(tmp_path_factory):
    """One tiny run of each method through ``train_lm`` (module-scoped: one_thread, a function fixture, is
    not active yet, so torch is put on one thread here)."""
    root, threads = tmp_path_factory.mktemp("api"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {m: train_lm(tiny(root, method=m), run_dir=root / m, progress=False) for m in METHODS}
    finally:
        torch.set_num_threads(threads)


SUBPROCESS = ("ppo", "dpo")     # run as `python -m minigrpo.cli`; the other methods through cli.main in-process


def cli_argv(method, out):
    return ["train", "--method", method, "--steps", "3", "--group-size", "4", "--prompts-per-step", "4",
            "--eval-every", "3", "--eval-size", "16", "--eval-samples", "2", "--offline-prompts", "8",
            "--device", "cpu", "--out", str(out), "--json"]


@pytest.fixture(scope="module")
def cli_processes(tmp_path_factory):
    """`python -m minigrpo.cli train --method M …` for the methods in SUBPROCESS, started together (a process
    spends its first seconds importing; one torch thread each). Yields method → a function that waits for
    that process and returns (exit code, stdout, stderr)."""
    root = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {}
    for m in SUBPROCESS:
        out, err = open(root / f"{m}.out", "w"), open(root / f"{m}.err", "w")
        procs[m] = (subprocess.Popen([sys.executable, "-m", "minigrpo.cli", *cli_argv(m, root / m)], stdout=out,
                                     stderr=err, env=env), out, err)

    def result(m):
        proc, out, err = procs[m]
        rc = proc.wait(timeout=240)
        out.close(), err.close()
        return rc, (root / f"{m}.out").read_text(), (root / f"{m}.err").read_text()

    yield result
    for proc, out, err in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close(), err.close()


def check_run_folder(run_dir, method, steps=3):
    """What a finished tiny run of ``method`` leaves: metrics with the method's keys (finite) at every step,
    eval/kl at the eval steps (0 and the last), the last checkpoint, and config.json with the method and the
    settings filled in for it."""
    folder = RunFolder(run_dir)
    metrics = folder.read("metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(steps + 1))
    for record in metrics[1:]:
        for key in KEYS[method]:
            assert key in record and math.isfinite(record[key]), (method, record["step"], key, record)
    if method != "ppo":
        assert "value_loss" not in metrics[-1]
    assert [m["step"] for m in metrics if "eval/kl" in m] == [0, steps]
    ckpt = folder.latest_checkpoint()
    assert ckpt.name == f"step-{steps:06d}" and (ckpt / "model.safetensors").exists()
    assert RunFolder.load_state(ckpt)["step"] == steps
    cfg = folder.read_config()
    assert cfg["method"] == method
    assert (cfg["recipe"], cfg["updates"], cfg["minibatches"]) == FILLED[method]
    return metrics


# --- 1. every method trains, from the API and from the command line -----------------------------

@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_from_the_api(api_runs, method):
    res = api_runs[method]
    metrics = check_run_folder(res.run_dir, method)
    assert untimed(res.metrics) == untimed(metrics)           # what train_lm returns is what it wrote
    assert not math.isnan(res.anchor_accuracy) and not math.isnan(res.final_accuracy)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_from_the_command_line(cli_processes, method, tmp_path, capsys):
    """`minigrpo train --method M … --json`: exit 0, one JSON summary, the run folder of check_run_folder.
    ppo and dpo run as a separate process (`python -m minigrpo.cli`), the others through ``cli.main`` in this
    process (the same parsing and code, without paying the imports again)."""
    if method in SUBPROCESS:
        rc, out, err = cli_processes(method)
    else:
        rc = main(cli_argv(method, tmp_path))
        out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["steps"] == 3 and summary["anchor_accuracy"] is not None
    check_run_folder(summary["run_dir"], method)


def test_method_and_recipe_fill_each_other():
    """method None follows the recipe (ppo ↔ ppo); ppo's minibatches are at most the prompts per step."""
    assert TrainConfig(recipe="ppo").method == "ppo"
    assert (TrainConfig().method, TrainConfig().recipe) == ("grpo", "seed")
    assert TrainConfig(method="grpo", recipe="deepseek").recipe == "deepseek"
    ppo = TrainConfig(method="ppo", prompts_per_step=2)
    assert (ppo.recipe, ppo.updates, ppo.minibatches) == ("ppo", 4, 2)
    assert TrainConfig(method="ppo", updates=2, minibatches=1).updates == 2


# --- 2. ppo: the critic is checkpointed and resume is exact -------------------------------------

def test_ppo_checkpoint_holds_the_trained_critic(api_runs):
    state = RunFolder.load_state(RunFolder(api_runs["ppo"].run_dir).latest_checkpoint())
    assert {"critic", "critic_optimizer"} <= set(state)
    assert state["critic"] and all(torch.is_tensor(v) for v in state["critic"].values())
    assert state["critic_optimizer"]["state"], "the critic's optimizer took no step"
    grpo_state = RunFolder.load_state(RunFolder(api_runs["grpo"].run_dir).latest_checkpoint())
    assert "critic" not in grpo_state


# PPO resumes to the bit because the critic computes with the policy's attention (ValueModel.attention_for):
# a trunk copied with whichever implementation the anchor last used differed by ~1e-7 after a resume.


@pytest.mark.parametrize("method,extra", [
    ("ppo", {}),
    ("offline_grpo", {}),
    ("offline_grpo", {"online_prompts": 2}),
    ("dpo", {}),
], ids=["ppo", "offline_grpo", "offline_grpo-hybrid", "dpo"])
def test_resume_continues_exactly(tmp_path, method, extra):
    """Stop at 2 (a checkpoint), resume to 4: the same metrics and final weights, bit for bit, as 4 straight
    steps — for ppo also the same critic; for offline/dpo the data built from the anchor is rebuilt the same."""
    full, resumed = run_and_resume(tmp_path, method, extra)
    assert untimed(resumed.metrics) == untimed(full.metrics)
    for (name, a), (_, b) in zip(full.policy.state_dict().items(), resumed.policy.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    if method == "ppo":
        for (name, a), (_, b) in zip(final_critic(tmp_path / "full").items(), final_critic(tmp_path / "half").items()):
            torch.testing.assert_close(a, b, atol=0, rtol=0, msg=f"critic {name}")


def run_and_resume(tmp_path, method, extra):
    kw = dict(method=method, steps=4, eval_every=2, save_every=2, warmup_steps=0, lr=1e-3, **extra)
    full = train_lm(tiny(tmp_path, **kw), run_dir=tmp_path / "full", progress=False)
    train_lm(tiny(tmp_path, **{**kw, "steps": 2}), run_dir=tmp_path / "half", progress=False)
    return full, train_lm(tiny(tmp_path, **kw), resume=tmp_path / "half", progress=False)


def final_critic(run_dir):
    return RunFolder.load_state(RunFolder(run_dir).latest_checkpoint())["critic"]


def test_ppo_resume_restores_the_critic(tmp_path):
    """PPO resumed at 2 continues as the straight run did, to rounding (and exactly: the test above): a critic
    restarted from scratch instead (head 0, so V = 0) would change value_loss and the advantages at once."""
    full, resumed = run_and_resume(tmp_path, "ppo", {})
    got, want = untimed(resumed.metrics), untimed(full.metrics)
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for g, w in zip(got, want):
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-3, abs=1e-5), (g["step"], k)
    for (name, a), (_, b) in zip(final_critic(tmp_path / "full").items(), final_critic(tmp_path / "half").items()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3, msg=f"critic {name}")


# --- 3. offline grpo ---------------------------------------------------------------------------

def test_offline_grpo_logs_its_anchor_samples(api_runs, anchor_policy):
    """Without offline_data the run samples offline_prompts × group_size completions from the anchor, once,
    and writes them as logged.jsonl: prompt (training split), completion, reward, and logp — the anchor's
    own per-token log-probs (the behaviour policy)."""
    from minigrpo.lm.logged import encode_logged, group_logged, read_logged

    path = api_runs["offline_grpo"].run_dir / "logged.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(raw) == TINY["offline_prompts"] * TINY["group_size"]
    assert all({"prompt", "completion", "reward", "logp"} <= set(r) for r in raw)
    records = read_logged(path)
    assert not any(in_test_split(r.prompt, TASK.test_fraction) for r in records)   # never a held-out prompt
    assert {r.reward for r in records} <= {0.0, 1.0}
    assert all(r.reward == float(r.completion == TASK.solve(r.prompt)) for r in records)
    bank = encode_logged(api_runs["offline_grpo"].tokenizer, group_logged(records))
    with torch.no_grad():
        logp = anchor_policy.log_probs(bank.prompts, bank.completions).masked_fill(~bank.mask, 0.0)
    torch.testing.assert_close(bank.logp, logp, atol=1e-4, rtol=1e-4)


def test_offline_grpo_from_a_logged_file_trains_on_the_same_data(api_runs, tmp_path):
    """A second run reading the first run's logged.jsonl (offline_data=) takes the same steps: the file
    holds exactly the data the first run built."""
    first = api_runs["offline_grpo"]
    res = train_lm(tiny(tmp_path, method="offline_grpo", offline_data=str(first.run_dir / "logged.jsonl")),
                   run_dir=tmp_path / "from-file", progress=False)
    check_run_folder(res.run_dir, "offline_grpo")
    got, want = untimed(res.metrics), untimed(first.metrics)
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for g, w in zip(got, want):
        for k in w:
            assert g[k] == pytest.approx(w[k], abs=1e-5), (g["step"], k)


def test_offline_grpo_hybrid_learns_from_logged_and_online_groups(tmp_path, monkeypatch):
    """online_prompts=2: each step samples 2 fresh prompts (group_size each) and learns from them beside
    the prompts_per_step logged groups, in one update."""
    import minigrpo.runs.methods as methods

    seen = []
    real = methods.hybrid_step

    def spy(policy, anchor, prompts, reward_fn, batch, *args, **kwargs):
        step = real(policy, anchor, prompts, reward_fn, batch, *args, **kwargs)
        seen.append((prompts.shape[0], batch.r.shape[0], step.rollout.completions.shape[0]))
        return step

    monkeypatch.setattr(methods, "hybrid_step", spy)
    records = []
    res = train_lm(tiny(tmp_path, method="offline_grpo", online_prompts=2), run_dir=tmp_path / "hybrid",
                   progress=False, on_step=records.append)
    assert seen == [(2, 4, 6)] * 3                         # (online, logged, learned-from) prompts per step
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    metrics = check_run_folder(res.run_dir, "offline_grpo")
    assert json.loads((res.run_dir / "config.json").read_text())["online_prompts"] == 2
    assert all(r.get("ended_fraction") is not None for r in metrics[1:])


# --- 4. dpo and ipo ------------------------------------------------------------------------------

def careless_pairs(n, seed, test=False):
    """Correct sum chosen over the careless one (the carry forgotten: 47+85= "132" over "122")."""
    return [{"prompt": p, "chosen": TASK.solve(p), "rejected": TASK.careless_answer(p)}
            for p in train_prompts(n, seed, test)]


def pair_margins(policy, anchor, tokenizer, pairs):
    """Per pair: (h = log-ratio of chosen − of rejected, chosen log-prob under policy, under anchor)."""
    from minigrpo.core.masks import masked_sum
    from minigrpo.lm.pairs import Pair, encode_pairs

    b = encode_pairs(tokenizer, [Pair(p["prompt"], p["chosen"], p["rejected"]) for p in pairs])
    with torch.no_grad():
        lp = masked_sum(policy.log_probs(b.prompts, b.completions), b.mask, dim=-1)     # (P, 2)
        la = masked_sum(anchor.log_probs(b.prompts, b.completions), b.mask, dim=-1)
    ratio = lp - la
    return ratio[:, 0] - ratio[:, 1], lp[:, 0], la[:, 0]


@pytest.fixture(scope="module")
def anchor_policy():
    from minigrpo.lm.models import load_causal_lm
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.runs.lm_run import resolve_model

    model, tok = load_causal_lm(resolve_model(TrainConfig(device="cpu")), device="cpu")
    return CausalLMPolicy(model, tok.pad_token_id).freeze()


@pytest.mark.parametrize("method", ["dpo", "ipo"])
def test_pairs_from_a_prefs_file_are_learned(tmp_path, method, anchor_policy):
    """16 pairs of your own (correct over careless sums): the step's pair accuracy and margin rise from 0
    (the policy starts as the anchor: every margin 0 up to rounding), and afterwards the policy ranks
    every training pair right."""
    pairs = careless_pairs(16, seed=0)
    prefs = write_jsonl(tmp_path / "prefs.jsonl", pairs)
    res = train_lm(tiny(tmp_path, method=method, prefs=prefs, steps=6, eval_every=6, save_every=6,
                        prompts_per_step=8, lr=2e-4, warmup_steps=0, beta=0.1),
                   run_dir=tmp_path / "run", progress=False)
    m = check_run_folder(res.run_dir, method, steps=6)
    assert abs(m[1]["margin"]) < 1e-4
    assert m[-1]["margin"] > 0.5 and m[-1]["pair_accuracy"] >= 0.75
    assert not (res.run_dir / "pairs.jsonl").exists()         # the pairs were given, nothing was built
    h, _, _ = pair_margins(res.policy, anchor_policy, res.tokenizer, pairs)
    assert (h > 0).all(), h


def test_pairs_from_a_labels_file(tmp_path, anchor_policy):
    """Good/bad labels: each good completion of a prompt is preferred to each of its bad ones."""
    prompts = train_prompts(8, seed=1)
    labels = []
    for p in prompts:
        labels += [{"prompt": p, "completion": TASK.solve(p), "label": "good"},
                   {"prompt": p, "completion": TASK.careless_answer(p), "label": "bad"},
                   {"prompt": p, "completion": str(int(TASK.solve(p)) + 1), "label": 0}]
    path = write_jsonl(tmp_path / "labels.jsonl", labels)
    res = train_lm(tiny(tmp_path, method="dpo", labels=path, steps=4, eval_every=4, save_every=4, prompts_per_step=8,
                        lr=2e-4, warmup_steps=0, beta=0.1), run_dir=tmp_path / "run", progress=False)
    m = check_run_folder(res.run_dir, "dpo", steps=4)
    assert m[-1]["margin"] > 0
    pairs = [{"prompt": p, "chosen": TASK.solve(p), "rejected": bad} for p in prompts
             for bad in (TASK.careless_answer(p), str(int(TASK.solve(p)) + 1))]
    h, _, _ = pair_margins(res.policy, anchor_policy, res.tokenizer, pairs)
    assert (h > 0).float().mean() >= 0.9, h


@pytest.mark.parametrize("method", ["dpo", "ipo"])
def test_pairs_built_from_anchor_samples_are_written(api_runs, method):
    """Without prefs/labels the run pairs anchor samples by the reward (best vs worst of a group) and writes
    them as pairs.jsonl: training prompts only, the right sum always chosen over a wrong one."""
    from minigrpo.rewards.preferences import load_preferences

    pairs, _ = load_preferences(api_runs[method].run_dir / "pairs.jsonl")
    assert 1 <= len(pairs) <= TINY["offline_prompts"]
    for p in pairs:
        assert not in_test_split(p.prompt, TASK.test_fraction)
        assert p.chosen == TASK.solve(p.prompt) != p.rejected


def judges_odd_endings(prompt, completion, **columns):
    """A reward that applies only to answers ending in an odd digit (0 right, -1 wrong); None otherwise."""
    if not completion[-1:].isdigit() or int(completion[-1]) % 2 == 0:
        return None
    return 0.0 if completion == TASK.solve(prompt) else -1.0


def test_pairs_from_anchor_samples_use_only_judged_completions(tmp_path):
    """A preference the reward never expressed must not reach DPO: a completion the reward does not apply to
    (None) is in no pair built from anchor samples."""
    from minigrpo.rewards.preferences import load_preferences

    res = train_lm(tiny(tmp_path, method="dpo", steps=1, group_size=8, offline_prompts=32, eval_samples=0),
                   run_dir=tmp_path / "run", progress=False, rewards=judges_odd_endings)
    pairs, _ = load_preferences(res.run_dir / "pairs.jsonl")
    unjudged = [p for p in pairs if judges_odd_endings(p.prompt, p.chosen) is None
                or judges_odd_endings(p.prompt, p.rejected) is None]
    assert not unjudged, unjudged


def test_dpo_generalises_to_held_out_pairs(tmp_path, anchor_policy):
    """After DPO on 32 correct-vs-careless pairs, on 32 held-out prompts it never saw the policy ranks the
    correct sum above the careless one, and gives the correct sum more probability than the anchor did.

    Held-out pairs rather than held-out greedy accuracy: at this size greedy accuracy on 16–64 prompts
    moves by a few points either way (and a larger lr, 1e-3, drives it to 0 while the training pairs'
    margins keep growing — DPO lowers both completions' likelihoods), so it is not a robust signal; the
    held-out log-probs of the right and the careless answer are."""
    prefs = write_jsonl(tmp_path / "prefs.jsonl", careless_pairs(32, seed=2))
    held_out = careless_pairs(32, seed=3, test=True)
    res = train_lm(tiny(tmp_path, method="dpo", prefs=prefs, steps=6, eval_every=6, save_every=6, prompts_per_step=8,
                        eval_size=32, lr=2e-4, warmup_steps=0, beta=0.1), run_dir=tmp_path / "run", progress=False)
    h, chosen, chosen_anchor = pair_margins(res.policy, anchor_policy, res.tokenizer, held_out)
    assert (h > 0).float().mean() >= 0.9, h
    assert chosen.mean() > chosen_anchor.mean() + 0.2, (chosen.mean(), chosen_anchor.mean())
    assert res.metrics[-1]["eval/kl"] > 0.05                  # it moved away from the anchor, measurably


# --- 5. bad input: one line, exit 2 ---------------------------------------------------------------

@pytest.fixture()
def no_reward_file(tmp_path):
    return write_jsonl(tmp_path / "no_reward.jsonl", [{"prompt": "12+7=", "completion": "19"}])


BAD = [  # (argv, what the one line must name: the setting and the value)
    (["--method", "ppo", "--recipe", "deepseek"], ["recipe", "deepseek", "ppo"]),
    (["--method", "grpo", "--prefs", "p.jsonl"], ["prefs", "p.jsonl", "grpo"]),
    (["--method", "dpo", "--offline-data", "o.jsonl"], ["offline_data", "o.jsonl", "dpo"]),
    (["--method", "grpo", "--online-prompts", "2"], ["online_prompts", "2", "grpo"]),
    (["--method", "dpo", "--prefs", "p.jsonl", "--labels", "l.jsonl"], ["prefs", "labels", "l.jsonl"]),
    (["--method", "dpo", "--group-size", "1"], ["group_size", "1", "dpo"]),
    (["--method", "ppo", "--minibatches", "9", "--prompts", "4"], ["minibatches", "9"]),
    (["--method", "sft"], ["method", "sft"]),
]
# refused only once the file is read: after the anchor's evaluation
BAD_FILES = [
    (["--method", "dpo", "--prefs", "{tmp}/no/such.jsonl"], ["{tmp}/no/such.jsonl", "does not exist"]),
    (["--method", "ipo", "--labels", "{tmp}/no/such.jsonl"], ["{tmp}/no/such.jsonl", "does not exist"]),
    (["--method", "offline_grpo", "--offline-data", "{tmp}/no/such.jsonl"], ["{tmp}/no/such.jsonl", "does not exist"]),
    (["--method", "offline_grpo", "--offline-data", "{reward}"], ["{reward}", "'reward'"]),
]


def run_bad(argv, needles, tmp_path, capsys, no_reward_file):
    fill = lambda s: s.replace("{tmp}", str(tmp_path)).replace("{reward}", no_reward_file)
    out = tmp_path / "runs"
    rc = main(["train", *map(fill, argv), "--steps", "1", "--eval-size", "16", "--eval-samples", "0",
               "--device", "cpu", "--out", str(out), "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("minigrpo train: error: "), err
    assert "Traceback" not in err
    for needle in map(fill, needles):
        assert needle in err, (needle, err)
    return out


@pytest.mark.parametrize("argv,needles", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_settings_exit_2_with_one_line_and_no_run_folder(argv, needles, tmp_path, capsys, no_reward_file):
    out = run_bad(argv, needles, tmp_path, capsys, no_reward_file)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("argv,needles", BAD_FILES, ids=["missing prefs", "missing labels", "missing offline_data",
                                                         "offline_data without reward"])
def test_bad_data_files_exit_2_with_one_line(argv, needles, tmp_path, capsys, no_reward_file):
    run_bad(argv, needles, tmp_path, capsys, no_reward_file)


@pytest.mark.parametrize("argv,needles", BAD_FILES[:1] + BAD_FILES[3:], ids=["missing prefs", "no reward column"])
def test_bad_data_files_leave_no_run_folder(argv, needles, tmp_path, capsys, no_reward_file):
    out = run_bad(argv, needles, tmp_path, capsys, no_reward_file)
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


# --- 6. eval/kl --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_eval_kl_is_zero_at_the_anchor_and_not_negative_after(api_runs, method):
    """eval/kl is KL(π ‖ anchor) per completion on the held-out samples: exactly 0 before the first step
    (the policy is the anchor), and ≥ 0 up to the estimate's noise after training."""
    metrics = api_runs[method].metrics
    assert abs(metrics[0]["eval/kl"]) < 1e-6
    assert metrics[-1]["eval/kl"] > -0.05


def test_eval_kl_needs_samples(tmp_path):
    """eval/kl is estimated on the sampled answers: with eval_samples=0 (greedy only) it is not reported."""
    res = train_lm(tiny(tmp_path, steps=1, eval_samples=0), run_dir=tmp_path / "run", progress=False)
    assert all("eval/kl" not in r for r in res.metrics) and "test_accuracy" in res.metrics[0]
