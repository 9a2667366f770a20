"""The LM training run: config validation, run folder files, checkpoints, exact resume, the CLI."""
import json

import pytest
import torch

from minigrpo.cli import main
from minigrpo.lm.models import TinyGPT2
from minigrpo.runs.folder import RunFolder
from minigrpo.lm.sft import SFTConfig, build_anchor
from minigrpo.lm.tasks import AdditionTask, ChainTask, in_test_split, make_task
from minigrpo.rewards.checks import TaskReward
from minigrpo.lm.tokens import char_tokenizer, encode_prompts
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.lm_run import train_lm

SHAPE = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 24}


@pytest.fixture(scope="module")
def anchor(tmp_path_factory):
    """A tiny addition model after a few SFT steps (1 digit, so answers have ≤ 2 characters)."""
    out = tmp_path_factory.mktemp("anchor")
    return str(build_anchor(SFTConfig(task="addition", task_args={"digits": 1}, steps=40, shape=TinyGPT2(**SHAPE)),
                            out, device="cpu", eval_size=20, progress=False))


def small_cfg(anchor, tmp_path, **kw):
    base = dict(model=anchor, task_args={"digits": 1}, steps=6, group_size=4, prompts_per_step=4, eval_every=3,
                eval_size=10, sample_every=3, save_every=3, out=str(tmp_path), device="cpu", lr=1e-3)
    return TrainConfig(**{**base, **kw})


# --- tasks and rewards -------------------------------------------------------------------------------

def test_tasks_solve_and_split():
    assert AdditionTask(3).solve("347+85=") == "432"
    assert ChainTask(3).solve("7+5-3+8=") == "12,9,17"
    assert ChainTask(2).solve("1-5-7=") == "-4,-11"
    task = AdditionTask(2)
    train = {p.prompt for p in task.sample(300, "train", torch.Generator().manual_seed(0))}
    test = {p.prompt for p in task.test_set(100)}
    assert not train & test
    assert all(in_test_split(p, task.test_fraction) for p in test)


def test_task_reward_scores_components_per_completion():
    task = AdditionTask(1)
    tok = char_tokenizer(task.alphabet)
    prompts = encode_prompts(tok, ["3+4=", "9+9="])
    ids = lambda s: tok.encode(s, add_special_tokens=False)
    rows = [[ids("7") + [1, 0], ids("70") + [1]], [ids("18") + [1], ids("181")]]     # P=2, G=2, T=3
    out = TaskReward(task, tok)(prompts, torch.tensor(rows))
    assert out.r.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert out.components["correct"].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert out.components["format"].tolist() == [[1.0, 1.0], [1.0, 0.0]]          # "181" never ended


def test_task_reward_rejects_unknown_weights():
    task = AdditionTask(1)
    tok = char_tokenizer(task.alphabet)
    with pytest.raises(ValueError, match="style"):
        TaskReward(task, tok, {"style": 1.0})(encode_prompts(tok, ["1+1="]), torch.tensor([[[5, 1]]]))


# --- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,match", [
    ("beta", -0.1, "beta"), ("group_size", 0, "group_size"), ("lr", 0, "lr"), ("kl", "loss:k9", "kl"),
    ("baseline", "median", "baseline"), ("task", "poetry", "task"), ("precision", "fp8", "precision"),
    ("top_p", 1.5, "top_p"), ("temperature", 0, "temperature"), ("steps", 2.5, "steps"),
])
def test_bad_settings_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_group_baseline_needs_a_group():
    with pytest.raises(ValueError, match="group_size"):
        TrainConfig(group_size=1, baseline="leave_one_out")


def test_config_file_yaml_and_json(tmp_path):
    (tmp_path / "c.yaml").write_text("beta: 0.05\ngroup_size: 4\ntask_args: {digits: 2}\n")
    cfg = TrainConfig.from_file(tmp_path / "c.yaml")
    assert (cfg.beta, cfg.group_size, cfg.task_args) == (0.05, 4, {"digits": 2})
    (tmp_path / "c.json").write_text(json.dumps({"betta": 0.1}))
    with pytest.raises(ValueError, match="betta"):
        TrainConfig.from_file(tmp_path / "c.json")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        TrainConfig.from_file(tmp_path / "nope.yaml")


# --- the run -----------------------------------------------------------------------------------------

def test_run_folder_holds_metrics_samples_and_checkpoints(anchor, tmp_path):
    res = train_lm(small_cfg(anchor, tmp_path), run_dir=tmp_path / "run", progress=False)
    folder = RunFolder(res.run_dir)
    metrics = folder.read("metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(7))
    for key in ("reward", "reward/correct", "reward/format", "kl", "entropy_proxy", "completion_length",
                "clip_fraction", "grad_norm", "loss", "lr"):
        assert key in metrics[1], key
    assert [m["step"] for m in metrics if "test_accuracy" in m] == [0, 3, 6]
    assert folder.read("samples.jsonl")[0]["completions"]
    ckpt = folder.latest_checkpoint()
    assert ckpt.name == "step-000006" and (ckpt / "model.safetensors").exists()
    assert RunFolder.load_state(ckpt)["step"] == 6


def test_resume_continues_exactly_as_an_uninterrupted_run(anchor, tmp_path):
    """Stop after 3 steps (checkpoint at 3), resume to 6: same metrics and same weights as 6 straight."""
    full = train_lm(small_cfg(anchor, tmp_path), run_dir=tmp_path / "full", progress=False)
    train_lm(small_cfg(anchor, tmp_path, steps=3), run_dir=tmp_path / "half", progress=False)
    resumed = train_lm(small_cfg(anchor, tmp_path, steps=6), resume=tmp_path / "half", progress=False)
    drop = lambda ms: [{k: v for k, v in m.items() if k != "step_seconds"} for m in ms]
    assert drop(resumed.metrics) == drop(full.metrics)
    for (n, a), (_, b) in zip(full.policy.state_dict().items(), resumed.policy.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=n)


def test_resume_after_a_crash_drops_the_lost_steps(anchor, tmp_path):
    """Metrics written after the last checkpoint are dropped and rewritten by the resumed run."""
    train_lm(small_cfg(anchor, tmp_path, steps=4), run_dir=tmp_path / "r", progress=False)   # ckpt at 3 and 4
    folder = RunFolder(tmp_path / "r")
    (folder.ckpt_root / "latest").write_text("step-000003")          # as if killed before checkpoint 4 landed
    res = train_lm(small_cfg(anchor, tmp_path, steps=5), resume=tmp_path / "r", progress=False)
    assert [m["step"] for m in res.metrics] == list(range(6))


def test_corrupted_checkpoint_is_named(anchor, tmp_path):
    train_lm(small_cfg(anchor, tmp_path, steps=3), run_dir=tmp_path / "c", progress=False)
    ckpt = RunFolder(tmp_path / "c").latest_checkpoint()
    (ckpt / "trainer_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="trainer_state.pt"):
        train_lm(small_cfg(anchor, tmp_path, steps=5), resume=tmp_path / "c", progress=False)


def test_non_finite_reward_stops_the_run_and_keeps_the_checkpoint(anchor, tmp_path, monkeypatch):
    calls = {"n": 0}
    from minigrpo.rewards.compose import RewardSet

    orig = RewardSet.score

    def flaky(self, batch):
        out = orig(self, batch)
        if batch.shape[:2] == (4, 4):             # a training step's batch (evaluation batches hold 10 prompts)
            calls["n"] += 1
            if calls["n"] == 5:
                out.r[0, 0] = float("nan")
        return out

    monkeypatch.setattr(RewardSet, "score", flaky)
    with pytest.raises(ValueError, match="non-finite"):
        train_lm(small_cfg(anchor, tmp_path), run_dir=tmp_path / "n", progress=False)
    assert RunFolder(tmp_path / "n").latest_checkpoint().name == "step-000003"


def test_lora_run_saves_the_adapter_and_resumes(anchor, tmp_path):
    pytest.importorskip("peft")
    cfg = small_cfg(anchor, tmp_path, steps=3, lora_r=2, lr=1e-2)
    res = train_lm(cfg, run_dir=tmp_path / "lora", progress=False)
    ckpt = RunFolder(res.run_dir).latest_checkpoint()
    assert (ckpt / "adapter_model.safetensors").exists()
    res2 = train_lm(small_cfg(anchor, tmp_path, steps=4, lora_r=2, lr=1e-2), resume=res.run_dir, progress=False)
    assert res2.metrics[-1]["step"] == 4


# --- the command line --------------------------------------------------------------------------------

def test_cli_train_with_flags_and_config_then_resume(anchor, tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"task_args": {"digits": 1}, "group_size": 4, "prompts_per_step": 4,
                                                 "eval_size": 10, "eval_every": 2, "save_every": 2}))
    rc = main(["train", "--config", str(tmp_path / "c.json"), "--model", anchor, "--steps", "2", "--beta", "0.05",
               "--out", str(tmp_path), "--device", "cpu", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and set(summary) >= {"anchor_accuracy", "final_accuracy", "wall_seconds"}
    cfg = json.loads(open(f"{summary['run_dir']}/config.json").read())
    assert (cfg["beta"], cfg["group_size"]) == (0.05, 4)
    rc = main(["train", "--resume", summary["run_dir"], "--steps", "3", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["steps"] == 3


@pytest.mark.parametrize("argv,match", [
    (["train", "--beta", "-1"], "beta"),
    (["train", "--model", "./no/such/model", "--steps", "1"], "does not exist"),
    (["train", "--resume", "/no/such/run"], "config.json"),
    (["train", "--task", "poetry"], "task"),
])
def test_cli_train_bad_input_exits_2_with_one_line(argv, match, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)] if "--resume" not in argv else argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_careless_teacher_forgets_carries():
    task = AdditionTask(2)
    assert task.careless_answer("47+85=") == "122" and task.solve("47+85=") == "132"
    assert task.careless_answer("12+34=") == "46"                      # no carry: the slip is harmless
    assert AdditionTask(3).careless_answer("347+85=") == "322"


def test_grpo_lifts_held_out_accuracy_above_the_shipped_anchor(tmp_path):
    """A short CPU run from the shipped tiny anchor (SFT on careless answers): held-out greedy accuracy
    rises clearly above the anchor's. 40 steps × 16 prompts × 8 completions, a few seconds."""
    from minigrpo.lm.sft import anchor_dir

    if not (anchor_dir("addition") / "config.json").exists():
        pytest.fail("the shipped anchor minigrpo/assets/anchors/addition is missing; rebuild it with "
                    "`MINIGRPO_WRITE_ASSETS=1 minigrpo sft --task addition --out minigrpo/assets/anchors/addition`")
    cfg = TrainConfig(steps=40, eval_every=40, eval_size=200, save_every=0, out=str(tmp_path), device="cpu", seed=1)
    res = train_lm(cfg, run_dir=tmp_path / "run", progress=False)
    assert res.final_accuracy > res.anchor_accuracy + 0.1, (res.anchor_accuracy, res.final_accuracy)


def test_chain_task_sft_and_grpo_run(tmp_path):
    """The multi-step task goes through the same SFT and GRPO code (a few steps of each)."""
    anchor = build_anchor(SFTConfig(task="chain", task_args={"n_ops": 2}, steps=5, shape=TinyGPT2(**SHAPE)),
                          tmp_path / "a", device="cpu", eval_size=5, progress=False)
    cfg = TrainConfig(task="chain", task_args={"n_ops": 2}, model=str(anchor), steps=2, group_size=4,
                      prompts_per_step=2, eval_size=5, out=str(tmp_path), device="cpu")
    res = train_lm(cfg, run_dir=tmp_path / "run", progress=False)
    assert res.metrics[-1]["step"] == 2 and "reward/format" in res.metrics[-1]


def test_sft_config_refuses_careless_answers_for_a_task_without_them():
    with pytest.raises(ValueError, match="careless"):
        SFTConfig(task="judge", careless=0.5)
    with pytest.raises(ValueError, match="careless"):
        SFTConfig(careless=1.5)
