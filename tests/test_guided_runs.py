"""Guided rewards inside real GRPO runs: reward hacking measured, stepwise vs outcome, composite logging."""
import pytest

from minigrpo.runs.experiments import PROXY_DIR, reward_hacking, stepwise_vs_outcome, steps_to_target
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.lm_run import train_lm


pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def test_hacking_proxy_rises_and_truth_falls_at_small_beta_but_not_at_large(tmp_path):
    res = reward_hacking({"small": {"beta": 0.01}, "large": {"beta": 1.0}}, steps=60, out=tmp_path)
    small, large = res["small"], res["large"]
    # small β: the policy learns what the lazy raters liked, and forgets to carry
    assert small["proxy"][1] > small["proxy"][0] + 0.1, small["proxy"]
    assert small["true"][1] < small["true"][0] - 0.2, small["true"]
    assert small["kl"] > 1.0
    # large β: held near the anchor, the proxy barely moves and the true reward holds
    assert large["proxy"][1] < large["proxy"][0] + 0.05, large["proxy"]
    assert large["true"][1] > large["true"][0] - 0.1, large["true"]
    assert large["kl"] < 0.2
    rec = small["records"][-1]
    assert {"reward/proxy", "reward/correct", "kl", "reward"} <= set(rec)


def test_the_shipped_proxy_records_how_it_was_made_and_how_often_it_agrees_with_the_truth():
    import json

    meta = json.loads((PROXY_DIR / "reward_model.json").read_text())
    assert meta["rater"] == "column_checker" and "build_proxy_reward_model" in meta["command"]
    assert meta["rater_agrees_with_truth"]["broad"] > 0.8 > meta["rater_agrees_with_truth"]["anchor_samples"]


def test_stepwise_and_outcome_runs_record_accuracy_curves_and_steps_to_target(tmp_path):
    res = stepwise_vs_outcome(steps=4, target=0.5, seeds=(0,), eval_every=2, eval_size=40, prompts_per_step=4,
                              group_size=4, out=tmp_path)
    for label in ("outcome", "stepwise"):
        run = res["runs"][label][0]
        assert [s for s, _ in run["curve"]] == [0, 2, 4]
        assert run["steps_to_target"] == steps_to_target([{"step": s, "test_accuracy": a} for s, a in run["curve"]], 0.5)
    stepwise_metrics = (tmp_path).glob("train-chain-*/metrics.jsonl")
    assert any('"reward/steps"' in p.read_text() for p in stepwise_metrics)


def test_a_composite_reward_logs_every_component_in_the_run(tmp_path):
    cfg = TrainConfig(task="addition", steps=2, prompts_per_step=4, group_size=4, eval_every=100, eval_size=10,
                      save_every=0, out=str(tmp_path), reward_combine="normalised", forbidden=["666"],
                      reward_weights={"correct": 1.0, "format": 0.2, "length": 0.5, "safety": 1.0})
    res = train_lm(cfg, progress=False)
    step = [r for r in res.metrics if "reward" in r][-1]
    assert {"reward/correct", "reward/format", "reward/length", "reward/safety"} <= set(step)


def test_a_plain_function_trains_through_train_lm(tmp_path):
    seen = []

    def likes_sevens(prompt, completion):
        seen.append((prompt, completion))
        return completion.count("7") if completion else None

    cfg = TrainConfig(task="addition", steps=2, prompts_per_step=4, group_size=4, eval_every=100, eval_size=10,
                      eval_samples=0, save_every=0, out=str(tmp_path))
    res = train_lm(cfg, rewards={"sevens": likes_sevens}, progress=False)
    assert len(seen) == 2 * 4 * 4 + 2 * 10        # 2 steps of P × G, and greedy answers to 10 held-out prompts twice
    assert "reward/sevens" in res.metrics[-1]


def test_reward_model_from_the_config_is_a_component(tmp_path):
    cfg = TrainConfig(task="addition", steps=1, prompts_per_step=2, group_size=2, eval_every=100, eval_size=10,
                      save_every=0, out=str(tmp_path), reward_model=str(PROXY_DIR),
                      reward_weights={"reward_model": 1.0})
    res = train_lm(cfg, progress=False)
    assert {"reward/reward_model", "reward/correct"} <= set(res.metrics[-1])
    with pytest.raises(ValueError, match="reward_model"):
        TrainConfig(reward_weights={"reward_model": 1.0})
    with pytest.raises(ValueError, match="forbidden"):
        TrainConfig(reward_weights={"safety": 1.0})
    with pytest.raises(ValueError, match="reward_combine"):
        TrainConfig(reward_combine="max")
    with pytest.raises(ValueError, match="'steps' needs a multi-step task"):
        TrainConfig(reward_weights={"steps": 1.0})


def test_cli_trains_a_reward_model_from_labels_and_uses_it(tmp_path, capsys):
    import json

    from minigrpo.cli import main

    lines = []
    for a in range(10, 40):
        for b in (3, 7):
            prompt = f"{a}+{b}="
            lines += [json.dumps({"prompt": prompt, "completion": str(a + b), "label": "good"}),
                      json.dumps({"prompt": prompt, "completion": str(a + b + 10), "label": "bad"})]
    lines.append('{"prompt": "1+1=", "label": "good"}')                 # no completion: counted, skipped
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["reward-model", "--labels", str(tmp_path / "labels.jsonl"), "--steps", "5",
                 "--out", str(tmp_path / "rm")]) == 2                    # strict by default: the bad line stops it
    assert "labels.jsonl:121" in capsys.readouterr().err
    assert main(["reward-model", "--labels", str(tmp_path / "labels.jsonl"), "--steps", "5", "--skip-bad",
                 "--out", str(tmp_path / "rm")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pairs"] + summary["test_pairs"] == 60 and sum(summary["skipped"].values()) == 1
    assert main(["train", "--steps", "1", "--prompts", "2", "--group-size", "2", "--eval-size", "10", "--json",
                 "--out", str(tmp_path / "runs"), "--reward", "correct=1,reward_model=0.5",
                 "--reward-model", str(tmp_path / "rm")]) == 0
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]
    cfg = json.loads((__import__("pathlib").Path(run) / "config.json").read_text())
    assert cfg["reward_weights"] == {"correct": 1.0, "reward_model": 0.5}
    assert main(["train", "--reward", "style=1", "--steps", "1"]) == 2
    assert "style" in capsys.readouterr().err
