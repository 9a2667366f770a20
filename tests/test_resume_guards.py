"""A resume continues a run as it was (issue 17, cases 6 and 7): a config.json edited after the run started, a
truncated one, ``--steps`` not above the steps done, and rewards given in code that are missing or different on
resume are each refused with one line that says what differs, and nothing is appended to the run folder.

The command-line cases run ``python -m minigrpo.cli`` in a subprocess on the shipped tiny addition anchor (a
few steps) and check the exit code, the one error line and that no traceback was printed.
"""
import json
import shutil
from pathlib import Path

import pytest

from cli_subprocess import cli, error_line
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.folder import RunFolder
from minigrpo.runs.lm_run import train_lm
from minigrpo.runs.lm_setup import code_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(steps=2, group_size=4, prompts_per_step=2, eval_every=1000, eval_size=4, eval_samples=0,
             save_every=1, device="cpu", seed=3, lr=1e-3)
FLAGS = ["--task", "addition", "--steps", "2", "--group-size", "4", "--prompts", "2", "--eval-every", "1000",
         "--eval-size", "4", "--eval-samples", "0", "--save-every", "1", "--device", "cpu", "--seed", "3",
         "--lr", "1e-3", "--json"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A 2-step run made by the command line (checkpoints at steps 1 and 2)."""
    out = tmp_path_factory.mktemp("cli-run")
    res = cli("train", *FLAGS, "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return Path(json.loads(res.stdout)["run_dir"])


@pytest.fixture()
def run(cli_run, tmp_path) -> Path:
    """A copy of the command-line run, for one test to edit."""
    copy = tmp_path / "run"
    shutil.copytree(cli_run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def test_the_checkpoint_records_the_settings_it_was_trained_with(run):
    meta = json.loads((RunFolder(run).latest_checkpoint() / "meta.json").read_text())
    assert meta["config"] == json.loads((run / "config.json").read_text())
    assert len(meta["config_sha256"]) == 64


def test_an_edited_config_is_refused_naming_each_field(run):
    f = run / "config.json"
    cfg = json.loads(f.read_text())
    f.write_text(json.dumps({**cfg, "lr": 0.01, "beta": 0.1, "group_size": 2}, indent=2))
    metrics = (run / "metrics.jsonl").read_bytes()
    line = error_line(cli("train", "--resume", str(run), "--steps", "3", "--json"))
    assert "was edited after the run started" in line
    assert "lr 0.001 -> 0.01" in line and "beta 0.02 -> 0.1" in line and "group_size 4 -> 2" in line
    assert " steps " not in line.split("started:")[1].split(";")[0] + " "       # raising steps is allowed
    assert (run / "metrics.jsonl").read_bytes() == metrics


def test_raising_steps_continues_the_run_and_config_json_says_so(run):
    res = cli("train", "--resume", str(run), "--steps", "3", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["steps"] == 3
    assert json.loads((run / "config.json").read_text())["steps"] == 3
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


@pytest.mark.parametrize("steps", [1])
def test_steps_not_above_the_steps_done_is_one_line(run, steps):
    metrics = (run / "metrics.jsonl").read_bytes()
    line = error_line(cli("train", "--resume", str(run), "--steps", str(steps), "--json"))
    assert f"steps={steps}" in line and "not above the 2 steps" in line and "cannot undo steps" in line
    assert (run / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.parametrize("damage,what", [
    (lambda text: text[: len(text) // 2], "could not be read as JSON"),
    (lambda text: "[1, 2]", "not a mapping"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "steps"}), "incomplete"),
    (lambda text: json.dumps({**json.loads(text), "lr": "fast"}), "lr"),
])
def test_a_damaged_config_json_is_one_line_naming_the_file(run, damage, what):
    f = run / "config.json"
    f.write_text(damage(f.read_text()))
    line = error_line(cli("train", "--resume", str(run), "--steps", "3", "--json"))
    assert str(f) in line and what in line


# --- rewards given in code -------------------------------------------------------------------------

def api_cfg(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**SMALL, "out": str(tmp_path), **kw})


@pytest.fixture()
def lambda_run(tmp_path) -> Path:
    """A run trained through the API on a reward written as a lambda (no import path)."""
    train_lm(api_cfg(tmp_path), run_dir=tmp_path / "lam", progress=False,
             rewards={"short": lambda prompt, completion: -len(completion) / 10})
    return tmp_path / "lam"


def test_rewards_json_records_import_paths_and_fingerprints(lambda_run):
    (rec,) = json.loads((lambda_run / "rewards.json").read_text()).values()
    assert rec["from"] == "code" and rec["import_path"] is None and len(rec["fingerprint"]) == 16


def test_cli_resume_of_a_run_with_a_lambda_reward_is_refused_naming_it(lambda_run):
    metrics = (lambda_run / "metrics.jsonl").read_bytes()
    line = error_line(cli("train", "--resume", str(lambda_run), "--steps", "3", "--json"))
    assert "rewards given in code (short)" in line and "rewards=" in line and "no import path" in line
    assert (lambda_run / "metrics.jsonl").read_bytes() == metrics


def test_api_resume_with_another_function_is_refused_and_the_same_one_resumes(lambda_run, tmp_path):
    more = api_cfg(tmp_path, steps=3)
    with pytest.raises(ValueError, match="short code .* differs .*fingerprint"):
        train_lm(more, resume=lambda_run, progress=False, rewards={"short": lambda prompt, completion: 1.0})
    with pytest.raises(ValueError, match="short weight 1 -> 2"):
        train_lm(more, resume=lambda_run, progress=False,
                 rewards={"short": (lambda prompt, completion: -len(completion) / 10, 2.0)})
    res = train_lm(more, resume=lambda_run, progress=False,
                   rewards={"short": lambda prompt, completion: -len(completion) / 10})
    assert res.metrics[-1]["step"] == 3


SHORT = "def short(prompt, completion):\n    return -len(completion) / {scale}\n"


def test_cli_resume_of_an_api_run_loads_its_functions_again_and_refuses_an_edited_one(tmp_path):
    from minigrpo.rewards.functions import load_function

    code = tmp_path / "my_rewards.py"
    code.write_text(SHORT.format(scale=10))
    run = tmp_path / "api"
    train_lm(api_cfg(tmp_path), run_dir=run, progress=False,
             rewards={"brevity": (load_function(f"{code}:short"), 0.5)})
    (rec,) = json.loads((run / "rewards.json").read_text()).values()
    assert rec["import_path"] == f"{code}:short" and rec["weight"] == 0.5

    code.write_text(SHORT.format(scale=20))
    metrics = (run / "metrics.jsonl").read_bytes()
    line = error_line(cli("train", "--resume", str(run), "--steps", "3", "--json"))
    assert "brevity code" in line and "differs from the" in line and "fingerprint" in line, line
    assert (run / "metrics.jsonl").read_bytes() == metrics

    code.write_text(SHORT.format(scale=10))
    res = cli("train", "--resume", str(run), "--steps", "3", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()][-1] == 3

    code.unlink()
    line = error_line(cli("train", "--resume", str(run), "--steps", "4", "--json"))
    assert "reward 'brevity'" in line and "no longer loads" in line and "my_rewards.py" in line, line


def test_a_damaged_rewards_json_is_one_line_naming_it(run):
    (run / "rewards.json").write_text('{"correct": ')
    line = error_line(cli("train", "--resume", str(run), "--steps", "3", "--json"))
    assert "rewards.json" in line and "does not read as JSON" in line


def test_a_changed_captured_value_changes_the_fingerprint():
    def make(scale):
        return lambda prompt, completion: scale * len(completion)
    assert code_fingerprint(make(1.0)) == code_fingerprint(make(1.0))
    assert code_fingerprint(make(1.0)) != code_fingerprint(make(2.0))
