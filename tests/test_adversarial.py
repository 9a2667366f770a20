"""Issue 17's adversarial suite: one table of bad inputs, grouped by class, each refused the same way.

Every case ends in exactly one stderr line, ``minigrpo <command>: error: …``, that names the file or the setting
(and the bad value where there is one), with exit code 2 and no traceback, before any work is done (a case fails
the moment a command reaches its work: train's method data and steps, an SFT or reward-model step, the bandit, the
benchmark) and with no file created, changed or deleted, in the case's folder or in the package's shipped assets.
The classes:

* flags: a bad value, an unknown choice or flag, a flag missing its value, an empty path, settings that conflict
  (--resume with other settings, two reward-model sources), sizes far past any real run (a typo's extra zeros):
  the flag or setting and the value;
* config files: ``train --config`` that does not parse (YAML or JSON syntax, a refused tag, bytes that are not
  UTF-8, an unknown suffix), is not a mapping, or holds an unknown or mistyped setting: the file (with line and
  column where the parser gives them) or the setting;
* data files: ``train``/``sft --data`` missing, empty, not JSON, of a type not read, without the prompt or
  completion column: the file (and the line, row or column);
* preference and label files: ``reward-model`` or ``train --method dpo`` with ``--prefs``/``--labels`` missing,
  empty, malformed, incomplete, mistyped or giving no pair: the file and line;
* model folders: ``--model``, ``--base`` or ``--reward-model`` that is not a loadable model of the right kind:
  the folder;
* output folders: ``--out`` under a file, a file, a folder of other files, inside the shipped assets: --out and
  the path;
* run folders: ``train --resume`` of a folder that is not a run that can be resumed: the folder or its file;
* devices: ``--device`` this torch cannot use here: --device and the name;
* reward functions: ``--reward-fn`` that does not load, is not a function, has a bad weight or an unreadable
  signature, asks for a column the data lacks, or fails on the anchor's evaluation: the function and its file.

A case marked xfail (strict) is a bad input that is not handled so yet; its reason says how it ends today.
``test_every_case_in_process`` runs each case through ``main``; ``test_one_case_per_class_as_a_subprocess`` runs
the first case of each class as ``python -m minigrpo.cli``, to see stderr whole. ``python tests/test_adversarial.py``
prints the number of cases per class.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from cli_subprocess import cli, error_line
from minigrpo.assets import asset_path
from minigrpo.cli import main
from minigrpo.runs.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = asset_path("anchors", "addition")
RM = asset_path("reward_models", "addition-column-checker")
PLACES = {"{anchor}": str(ANCHOR), "{rm}": str(RM), "{assets}": str(asset_path()),
          "{examples}": str(ROOT / "examples" / "word_problems")}


@dataclass(frozen=True)
class Case:
    klass: str
    id: str
    argv: list                       # may hold {tmp}, {anchor}, {rm}, {assets}, {examples}
    needles: list                    # every one must be in the error line (placeholders filled the same way)
    files: dict = field(default_factory=dict)    # relative path -> bytes or str, written before the run
    leaves: tuple = ()               # paths the refusal leaves by design: a run folder's lock record (runs/lock.py)
    xfail: str | None = None         # not handled yet: how it ends today


def pair(**record) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


ANCHOR_CONFIG = (ANCHOR / "config.json").read_text()
ANCHOR_WEIGHTS = (ANCHOR / "model.safetensors").read_bytes()
ANCHOR_TOKENIZER = (ANCHOR / "tokenizer.json").read_text()
TOKENIZER = {"m/tokenizer.json": ANCHOR_TOKENIZER,
             "m/tokenizer_config.json": (ANCHOR / "tokenizer_config.json").read_text()}
RUN_CONFIG = TrainConfig(device="cpu", steps=4).to_dict()
RUN_JSON = json.dumps(RUN_CONFIG)
PROBLEMS = "".join(pair(prompt=f"{a}+{b}=", answer=str(a + b)) for a in range(10, 50, 7) for b in range(3, 9))
GOOD_FN = "def f(prompt, completion):\n    return 1.0\n"


def unusable_devices() -> list[str]:
    out = ["meta", "gpu", f"cuda:{max(torch.cuda.device_count(), 7)}"]
    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        out.append("xpu")
    return out


FLAGS, CONFIG, DATA, PREFS = "flags", "config files", "data files", "preference and label files"
MODELS, OUT, RUNS, DEVICES, REWARDS = "model folders", "output folders", "run folders", "devices", "reward functions"

CASES = [
    Case(FLAGS, "train-steps-0", ["train", "--steps", "0"], ["steps=0"]),
    Case(FLAGS, "train-steps-negative", ["train", "--steps", "-3"], ["steps=-3"]),
    Case(FLAGS, "train-lr-0", ["train", "--lr", "0"], ["lr=0.0"]),
    Case(FLAGS, "train-lr-nan", ["train", "--lr", "nan"], ["lr=nan"]),
    Case(FLAGS, "train-lr-text", ["train", "--lr", "abc"], ["--lr", "'abc'"]),
    Case(FLAGS, "train-group-size-1-group-baseline", ["train", "--group-size", "1", "--baseline", "group_mean"],
         ["group_size=1", "group_mean"]),
    Case(FLAGS, "train-method-unknown", ["train", "--method", "sgd"], ["method='sgd'"]),
    Case(FLAGS, "train-precision-unknown", ["train", "--precision", "fp8"], ["precision='fp8'"]),
    Case(FLAGS, "train-task-args-unknown", ["train", "--task-args", "colour=red"], ["task_args", "colour"]),
    Case(FLAGS, "train-reward-unknown", ["train", "--reward", "bogus=1"], ["reward_weights", "bogus"]),
    Case(FLAGS, "train-unknown-flag", ["train", "--frobnicate", "3"], ["--frobnicate"]),
    Case(FLAGS, "train-flag-without-value", ["train", "--steps"], ["--steps"]),
    Case(FLAGS, "train-resume-with-settings", ["train", "--resume", "r", "--lr", "0.1"], ["--lr", "--resume"]),
    Case(FLAGS, "train-resume-with-config-and-digits",
         ["train", "--resume", "r", "--config", "c.yaml", "--digits", "2"], ["--config", "--digits", "--resume"]),
    Case(FLAGS, "train-prefs-and-labels", ["train", "--method", "dpo", "--prefs", "p.jsonl", "--labels", "l.jsonl"],
         ["labels='l.jsonl'", "prefs"]),
    Case(FLAGS, "sft-width-not-a-multiple-of-heads", ["sft", "--shape.n-embd", "10"], ["shape.n_embd=10", "n_head"]),
    Case(FLAGS, "reward-model-two-sources", ["reward-model", "--synthetic", "closeness", "--prefs", "p.jsonl"],
         ["prefs", "synthetic"]),
    Case(FLAGS, "reward-model-no-source", ["reward-model"], ["prefs", "labels", "synthetic", "none"]),
    Case(FLAGS, "bandit-arms-and-means-disagree", ["bandit", "--arms", "3", "--means", "0.1,0.2"],
         ["--arms=3", "--means"]),
    Case(FLAGS, "bandit-means-text", ["bandit", "--means", "0.1,abc"], ["--means", "0.1,abc"]),
    Case(FLAGS, "demo-unknown-flag", ["demo", "--nope"], ["--nope"]),

    Case(CONFIG, "yaml-syntax", ["train", "--config", "c.yaml"], ["'c.yaml'", "line 3"],
         {"c.yaml": "lr: 1e-4\nsteps: [1\n"}),
    Case(CONFIG, "yaml-python-tag", ["train", "--config", "c.yaml"], ["'c.yaml'", "line 1", "python/object"],
         {"c.yaml": "steps: !!python/object/apply:os.system ['echo hi']\n"}),
    Case(CONFIG, "yaml-not-utf8", ["train", "--config", "c.yaml"], ["'c.yaml'", "not UTF-8", "line 2"],
         {"c.yaml": b'steps: 3\ntask: "\xff\xfe"\n'}),
    Case(CONFIG, "json-truncated", ["train", "--config", "c.json"], ["'c.json'", "truncated"],
         {"c.json": '{"steps": 3, "lr": 0.1'}),
    Case(CONFIG, "suffix-toml", ["train", "--config", "c.toml"], ["'c.toml'", "'.toml'"], {"c.toml": "steps = 3\n"}),
    Case(CONFIG, "unknown-setting", ["train", "--config", "c.yaml"], ["'c.yaml'", "learning_rate"],
         {"c.yaml": "learning_rate: 1e-4\n"}),
    Case(CONFIG, "steps-text", ["train", "--config", "c.yaml"], ["'c.yaml'", "steps='many'"],
         {"c.yaml": "steps: many\n"}),
    Case(CONFIG, "reward-weights-a-number", ["train", "--config", "c.yaml"], ["reward_weights=3"],
         {"c.yaml": "reward_weights: 3\n"}),
    Case(CONFIG, "a-folder", ["train", "--config", "d.yaml"], ["'d.yaml'", "not a file"], {"d.yaml/x": ""}),
    Case(CONFIG, "missing", ["train", "--config", "none.yaml"], ["'none.yaml'", "does not exist"]),
    Case(CONFIG, "task-args-a-list", ["train", "--config", "c.yaml"], ["'c.yaml'", "task_args"],
         {"c.yaml": "task_args: [1]\n"}),
    Case(CONFIG, "reward-fns-a-list", ["train", "--config", "c.yaml"], ["'c.yaml'", "reward_fns"],
         {"c.yaml": "reward_fns: [3]\n"}),
    Case(CONFIG, "empty-path", ["train", "--config", ""], ["--config", "''"]),

    Case(DATA, "train-missing", ["train", "--data", "none.jsonl", "--model", "{anchor}"],
         ["'none.jsonl'", "does not exist"]),
    Case(DATA, "train-empty", ["train", "--data", "d.jsonl", "--model", "{anchor}"], ["'d.jsonl'", "empty"],
         {"d.jsonl": ""}),
    Case(DATA, "train-line-not-json", ["train", "--data", "d.jsonl", "--model", "{anchor}"], ["'d.jsonl'", "line 2"],
         {"d.jsonl": pair(prompt="1+1=", answer="2") + "not json\n"}),
    Case(DATA, "train-no-prompt-column", ["train", "--data", "d.jsonl", "--model", "{anchor}"],
         ["'d.jsonl'", "'prompt'", "question"], {"d.jsonl": pair(question="1+1=", answer="2")}),
    Case(DATA, "train-prompt-column-missing", ["train", "--data", "d.jsonl", "--model", "{anchor}", "--prompt-column",
                                               "q"], ["'d.jsonl'", "'q'", "--prompt-column"], {"d.jsonl": PROBLEMS}),
    Case(DATA, "train-prompt-not-text", ["train", "--data", "d.jsonl", "--model", "{anchor}"],
         ["'d.jsonl'", "row 0", "prompt=3"], {"d.jsonl": pair(prompt=3, answer="2")}),
    Case(DATA, "train-suffix-txt", ["train", "--data", "d.txt", "--model", "{anchor}"], ["'d.txt'", "'.txt'"],
         {"d.txt": PROBLEMS}),
    Case(DATA, "train-not-parquet", ["train", "--data", "d.parquet", "--model", "{anchor}"], ["'d.parquet'"],
         {"d.parquet": "not parquet"}),
    Case(DATA, "train-folder-not-a-dataset", ["train", "--data", "dd", "--model", "{anchor}"],
         ["'dd'", "save_to_disk"], {"dd/x.txt": "hi"}),
    Case(DATA, "train-with-the-tiny-model", ["train", "--data", "d.jsonl"], ["model='tiny'", "data"],
         {"d.jsonl": PROBLEMS}),
    Case(DATA, "train-not-utf8", ["train", "--data", "d.jsonl", "--model", "{anchor}"], ["'d.jsonl'", "UTF-8"],
         {"d.jsonl": b'{"prompt": "1+1=\xff", "answer": "2"}\n'}),
    Case(DATA, "sft-missing", ["sft", "--data", "none.jsonl"], ["'none.jsonl'", "does not exist"]),
    Case(DATA, "sft-no-completion-column", ["sft", "--data", "{examples}/train.jsonl", "--completion-column",
                                            "solution"], ["train.jsonl'", "'solution'", "--completion-column"]),
    Case(DATA, "sft-not-utf8", ["sft", "--data", "d.jsonl"], ["'d.jsonl'", "UTF-8"],
         {"d.jsonl": b'{"prompt": "1+1=\xff", "completion": "2"}\n'}),

    Case(PREFS, "prefs-missing", ["reward-model", "--prefs", "none.jsonl"], ["'none.jsonl'", "does not exist"]),
    Case(PREFS, "prefs-empty", ["reward-model", "--prefs", "p.jsonl"], ["'p.jsonl'", "empty"], {"p.jsonl": ""}),
    Case(PREFS, "prefs-line-not-json", ["reward-model", "--prefs", "p.jsonl"], ["p.jsonl:2", "not valid JSON"],
         {"p.jsonl": pair(prompt="a", chosen="1", rejected="2") + "not json\n"}),
    Case(PREFS, "prefs-missing-key", ["reward-model", "--prefs", "p.jsonl"], ["p.jsonl:1", "rejected"],
         {"p.jsonl": pair(prompt="a", chosen="1")}),
    Case(PREFS, "prefs-chosen-is-rejected", ["reward-model", "--prefs", "p.jsonl"], ["p.jsonl:1", "identical"],
         {"p.jsonl": pair(prompt="a", chosen="1", rejected="1")}),
    Case(PREFS, "prefs-ranking-too-long", ["reward-model", "--prefs", "p.jsonl"], ["p.jsonl:1", "101"],
         {"p.jsonl": pair(prompt="a", ranking=[str(i) for i in range(101)])}),
    Case(PREFS, "prefs-chosen-not-text", ["reward-model", "--prefs", "p.jsonl"], ["p.jsonl:1", "'chosen'"],
         {"p.jsonl": pair(prompt="a", chosen=1, rejected="2")}),
    Case(PREFS, "prefs-a-folder", ["reward-model", "--prefs", "pp"], ["'pp'", "folder"], {"pp/x": ""}),
    Case(PREFS, "labels-missing", ["reward-model", "--labels", "none.jsonl"], ["'none.jsonl'", "does not exist"]),
    Case(PREFS, "labels-unknown-label", ["reward-model", "--labels", "l.jsonl"], ["l.jsonl:1", "label='meh'"],
         {"l.jsonl": pair(prompt="a", completion="1", label="meh")}),
    Case(PREFS, "labels-steps-not-numbers", ["reward-model", "--labels", "l.jsonl"], ["l.jsonl:1", "steps="],
         {"l.jsonl": pair(prompt="a", completion="1", steps=[1, "x"])}),
    Case(PREFS, "labels-no-pair", ["reward-model", "--labels", "l.jsonl"], ["l.jsonl", "no prompt has both"],
         {"l.jsonl": pair(prompt="a", completion="1", label="good") + pair(prompt="b", completion="2", label="bad")}),
    Case(PREFS, "dpo-prefs-missing", ["train", "--method", "dpo", "--prefs", "none.jsonl"],
         ["prefs='none.jsonl'", "does not exist"]),
    Case(PREFS, "dpo-prefs-chosen-is-rejected", ["train", "--method", "dpo", "--prefs", "p.jsonl"],
         ["p.jsonl:1", "identical"], {"p.jsonl": pair(prompt="a", chosen="1", rejected="1")}),

    Case(MODELS, "empty-folder", ["train", "--model", "m"], ["'m'", "config.json"], {"m/.keep": ""}),
    Case(MODELS, "config-but-no-weights", ["train", "--model", "m"], ["'m'", "no weights"],
         {"m/config.json": ANCHOR_CONFIG}),
    Case(MODELS, "config-not-json", ["train", "--model", "m"], ["'m'", "config.json", "not valid JSON"],
         {"m/config.json": "{not json", "m/model.safetensors": "x"}),
    Case(MODELS, "config-without-model-type", ["train", "--model", "m"], ["'m'", "model_type"],
         {"m/config.json": '{"architectures": ["Foo"]}', "m/model.safetensors": "x"}),
    Case(MODELS, "the-shipped-reward-model", ["train", "--model", "{rm}"], ["{rm}", "sequence-classification"]),
    Case(MODELS, "a-file", ["train", "--model", "m.bin"], ["'m.bin'", "is a file"], {"m.bin": "x"}),
    Case(MODELS, "missing", ["train", "--model", "./nothing"], ["'./nothing'", "does not exist"]),
    Case(MODELS, "sft-the-shipped-reward-model", ["sft", "--model", "{rm}", "--data", "d.jsonl"],
         ["{rm}", "causal LM"], {"d.jsonl": pair(prompt="a", completion="b")}),
    Case(MODELS, "reward-model-base-empty-folder", ["reward-model", "--synthetic", "closeness", "--base", "m"],
         ["'m'", "config.json"], {"m/.keep": ""}),
    Case(MODELS, "reward-model-folder-empty", ["train", "--reward", "reward_model=1", "--reward-model", "m"],
         ["'m'", "config.json"], {"m/.keep": ""}),
    Case(MODELS, "weights-not-safetensors", ["train", "--model", "m"], ["'m'", "model.safetensors"],
         {"m/config.json": ANCHOR_CONFIG, "m/model.safetensors": "garbage", **TOKENIZER}),
    Case(MODELS, "reward-model-base-weights-not-safetensors", ["reward-model", "--synthetic", "closeness", "--base",
                                                               "m"], ["'m'", "model.safetensors"],
         {"m/config.json": ANCHOR_CONFIG, "m/model.safetensors": "garbage", **TOKENIZER}),
    Case(MODELS, "weights-bin-not-a-checkpoint", ["train", "--model", "m"], ["'m'", "pytorch_model.bin"],
         {"m/config.json": ANCHOR_CONFIG, "m/pytorch_model.bin": "garbage", **TOKENIZER}),
    Case(MODELS, "model-type-not-a-causal-lm", ["train", "--model", "m"], ["'m'", "t5"],
         {"m/config.json": ANCHOR_CONFIG.replace('"gpt2"', '"t5"'), "m/model.safetensors": ANCHOR_WEIGHTS, **TOKENIZER}),
    Case(MODELS, "no-tokenizer", ["train", "--model", "m"], ["'m'", "tokenizer"],
         {"m/config.json": ANCHOR_CONFIG, "m/model.safetensors": ANCHOR_WEIGHTS}),
    Case(MODELS, "tokenizer-json-not-json", ["train", "--model", "m"], ["'m'", "tokenizer.json"],
         {"m/config.json": ANCHOR_CONFIG, "m/model.safetensors": ANCHOR_WEIGHTS, "m/tokenizer.json": "{bad"}),
    Case(MODELS, "tokenizer-json-without-its-config", ["train", "--model", "m"], ["'m'", "tokenizer"],
         {"m/config.json": ANCHOR_CONFIG, "m/model.safetensors": ANCHOR_WEIGHTS, "m/tokenizer.json": ANCHOR_TOKENIZER}),
    Case(MODELS, "causal-lm-as-reward-model", ["train", "--reward", "reward_model=1", "--reward-model", "{anchor}"],
         ["{anchor}", "is a causal LM"]),

    Case(OUT, "sft-under-a-file", ["sft", "--out", "notes.txt/anchor"], ["--out", "'notes.txt/anchor'", "is a file"],
         {"notes.txt": "a file"}),
    Case(OUT, "sft-a-file", ["sft", "--out", "notes.txt"], ["--out", "'notes.txt'", "not a folder"],
         {"notes.txt": "a file"}),
    Case(OUT, "sft-a-folder-of-other-files", ["sft", "--out", "mine"], ["--out", "'mine'", "other files"],
         {"mine/thesis.tex": "keep me"}),
    Case(OUT, "sft-the-shipped-anchor", ["sft", "--out", "{anchor}"], ["--out", "'{anchor}'", "shipped assets"]),
    Case(OUT, "sft-a-new-folder-in-the-assets", ["sft", "--out", "{assets}/anchors/new"],
         ["--out", "anchors/new'", "shipped assets"]),
    Case(OUT, "sft-runs-is-a-file", ["sft"], ["'runs'"], {"runs": "a file"}),
    Case(OUT, "reward-model-under-a-file", ["reward-model", "--synthetic", "closeness", "--out", "{tmp}/notes.txt/rm"],
         ["--out", "'{tmp}/notes.txt/rm'", "is a file"], {"notes.txt": "a file"}),
    Case(OUT, "reward-model-a-folder-of-other-files", ["reward-model", "--synthetic", "closeness", "--out", "mine"],
         ["--out", "'mine'", "other files"], {"mine/thesis.tex": "keep me"}),
    Case(OUT, "reward-model-the-shipped-reward-model", ["reward-model", "--synthetic", "closeness", "--out", "{rm}"],
         ["--out", "'{rm}'", "shipped assets"]),
    Case(OUT, "reward-model-runs-is-a-file", ["reward-model", "--synthetic", "closeness"], ["'runs'", "not a folder"],
         {"runs": "a file"}),
    Case(OUT, "train-a-file", ["train", "--out", "notes.txt"], ["--out", "'notes.txt'"], {"notes.txt": "a file"}),
    Case(OUT, "train-under-a-file", ["train", "--out", "notes.txt/runs"], ["--out", "'notes.txt/runs'"],
         {"notes.txt": "a file"}),
    Case(OUT, "train-inside-the-shipped-assets", ["train", "--out", "{anchor}"], ["--out", "shipped assets"]),
    Case(OUT, "sft-empty-path", ["sft", "--out", ""], ["--out", "''"]),

    Case(RUNS, "missing", ["train", "--resume", "nothing"], ["'nothing'", "config.json"]),
    Case(RUNS, "no-config-json", ["train", "--resume", "r"], ["'r'", "no config.json"], {"r/metrics.jsonl": ""}),
    Case(RUNS, "config-json-truncated", ["train", "--resume", "r"], ["'r/config.json'", "JSON"],
         {"r/config.json": RUN_JSON[: len(RUN_JSON) // 2]}),
    Case(RUNS, "config-json-unknown-field", ["train", "--resume", "r"], ["'r/config.json'", "learning_rate"],
         {"r/config.json": json.dumps({**RUN_CONFIG, "learning_rate": 1})}),
    Case(RUNS, "config-json-without-steps", ["train", "--resume", "r"], ["'r/config.json'", "'steps'"],
         {"r/config.json": json.dumps({k: v for k, v in RUN_CONFIG.items() if k != "steps"})}),
    Case(RUNS, "no-checkpoint", ["train", "--resume", "r"], ["'r'", "no checkpoint"], {"r/config.json": RUN_JSON},
         leaves=("r/.lock",)),
    Case(RUNS, "latest-names-a-missing-checkpoint", ["train", "--resume", "r"], ["'r/checkpoints/step-000002'"],
         {"r/config.json": RUN_JSON, "r/checkpoints/latest": "step-000002"}, leaves=("r/.lock",)),
    Case(RUNS, "rewards-json-not-json", ["train", "--resume", "r"], ["'r/rewards.json'"],
         {"r/config.json": RUN_JSON, "r/rewards.json": "{bad"}),
    Case(RUNS, "steps-not-above-the-steps-done", ["train", "--resume", "r", "--steps", "0"], ["steps=0", "'r'"],
         {"r/config.json": RUN_JSON}),
    Case(RUNS, "empty-path", ["train", "--resume", ""], ["--resume", "''"]),

    *(Case(DEVICES, f"train-{d}", ["train", "--device", d], [f"--device {d}"]) for d in unusable_devices()),
    Case(DEVICES, "sft-meta", ["sft", "--device", "meta"], ["--device meta"]),
    Case(DEVICES, "sft-gpu", ["sft", "--device", "gpu"], ["--device gpu"]),
    Case(DEVICES, "bench-meta", ["bench", "--device", "meta"], ["--device meta"]),

    Case(REWARDS, "missing-file", ["train", "--reward-fn", "none.py:f"], ["'none.py'", "does not exist"]),
    Case(REWARDS, "syntax-error", ["train", "--reward-fn", "r.py:f"], ["'r.py'", "SyntaxError"],
         {"r.py": "def f(prompt, completion:\n    return 1\n"}),
    Case(REWARDS, "missing-name", ["train", "--reward-fn", "r.py:g"], ["'r.py:g'", "'g'"], {"r.py": GOOD_FN}),
    Case(REWARDS, "not-callable", ["train", "--reward-fn", "r.py:f"], ["'r.py:f'", "int"], {"r.py": "f = 3\n"}),
    Case(REWARDS, "weight-text", ["train", "--reward-fn", "r.py:f=abc"], ["--reward-fn", "r.py:f=abc"],
         {"r.py": GOOD_FN}),
    Case(REWARDS, "weight-nan", ["train", "--reward-fn", "r.py:f=nan"], ["reward_fns", "'r.py:f'", "nan"],
         {"r.py": GOOD_FN}),
    Case(REWARDS, "no-function-name", ["train", "--reward-fn", "r.py"], ["'r.py'", "FILE.py:NAME"], {"r.py": GOOD_FN}),
    Case(REWARDS, "import-fails", ["train", "--reward-fn", "r.py:f"], ["'r.py'", "boom at import"],
         {"r.py": "raise RuntimeError('boom at import')\n"}),
    Case(REWARDS, "module-missing", ["train", "--reward-fn", "no_such_pkg_xyz.mod:f"],
         ["'no_such_pkg_xyz.mod:f'", "no_such_pkg_xyz"]),
    Case(REWARDS, "signature-unreadable", ["train", "--reward-fn", "r.py:f"], ["reward function 'f'", "signature"],
         {"r.py": "import operator\nf = operator.itemgetter(1)\n"}),
    Case(REWARDS, "no-parameters", ["train", "--reward-fn", "r.py:f"], ["reward function 'f'", "name its parameters"],
         {"r.py": "def f():\n    return 1.0\n"}),
    Case(REWARDS, "column-the-task-lacks", ["train", "--reward-fn", "r.py:f"],
         ["reward function 'f'", "'difficulty'", "task 'addition'"],
         {"r.py": "def f(prompt, completion, difficulty):\n    return 1.0\n"}),
    Case(REWARDS, "column-the-data-lacks", ["train", "--reward-fn", "r.py:f", "--data", "d.jsonl", "--model",
                                            "{anchor}"], ["reward function 'f'", "'difficulty'", "'d.jsonl'"],
         {"r.py": "def f(prompts, completions, difficulty, **kw):\n    return [1.0] * len(completions)\n",
          "d.jsonl": PROBLEMS}),
    Case(REWARDS, "returns-text", ["train", "--reward-fn", "r.py:f"], ["reward function 'f'", "returned 'x'"],
         {"r.py": "def f(prompt, completion):\n    return 'x'\n"}),
    Case(REWARDS, "exits-at-import", ["train", "--reward-fn", "r.py:f"], ["'r.py'", "SystemExit: 3"],
         {"r.py": "import sys\nsys.exit(3)\n"}),
    Case(REWARDS, "returns-a-number-as-text", ["train", "--reward-fn", "r.py:f"],
         ["reward function 'f'", "returned '1.0' (str)"], {"r.py": "def f(prompt, completion):\n    return '1.0'\n"}),
    Case(REWARDS, "batched-returns-text", ["train", "--reward-fn", "r.py:f"], ["reward function 'f'", "'1.0'"],
         {"r.py": "def f(prompts, completions, **kw):\n    return ['1.0'] * len(completions)\n"}),

    Case(CONFIG, "yaml-key-twice", ["train", "--config", "c.yaml"],
         ["'c.yaml'", "'steps' is given twice", "lines 1 and 3"], {"c.yaml": "steps: 3\nlr: 1e-3\nsteps: 4\n"}),
    Case(CONFIG, "json-key-twice", ["train", "--config", "c.json"], ["'c.json'", "'steps' is given twice"],
         {"c.json": '{"steps": 3, "steps": 4}'}),
    Case(FLAGS, "train-prompts-a-typo", ["train", "--prompts", "100000000"], ["prompts_per_step=100000000"]),
    Case(FLAGS, "train-completions-a-step", ["train", "--prompts", "1000", "--group-size", "100"],
         ["group_size=100", "65,536 completions a step"]),
    Case(FLAGS, "bandit-arms-a-typo", ["bandit", "--arms", "100000000"], ["--arms=100000000", "65,536 arms"]),
    Case(FLAGS, "bandit-steps-a-typo", ["bandit", "--steps", "100000000000"], ["steps=100000000000"]),
    Case(FLAGS, "bandit-records-too-many", ["bandit", "--steps", "10000000", "--arms", "1000"],
         ["record_every=1", "raise record_every"]),
    Case(CONFIG, "group-size-one", ["train", "--config", "c.yaml"], ["'c.yaml'", "group_size=1"],
         {"c.yaml": "group_size: 1\n"}),
    Case(OUT, "sft-runs-a-file", ["sft", "--task", "addition"], ["--out 'runs'", "is a file"], {"runs": "x"}),
    Case(OUT, "demo-runs-a-file", ["demo", "--small"], ["--out 'runs'", "is a file"], {"runs": "x"}),
    Case(OUT, "demo-inside-the-shipped-assets", ["demo", "--small", "--out", "{assets}"], ["--out", "{assets}",
                                                                                          "shipped assets"]),
    Case(PREFS, "prefs-ranking-and-pair", ["reward-model", "--prefs", "p.jsonl"], ["p.jsonl:1", "both 'ranking'"],
         {"p.jsonl": pair(prompt="a", chosen="1", rejected="2", ranking=["1", "2"])}),
    Case(MODELS, "reward-model-weights-damaged", ["train", "--reward", "reward_model=1", "--reward-model", "m"],
         ["'m'", "weights and tokenizer did not load"],
         {"m/config.json": (RM / "config.json").read_text(), "m/model.safetensors": "garbage",
          **{f"m/{f.name}": f.read_text() for f in RM.glob("tokenizer*")}}),
]

CLASSES = [FLAGS, CONFIG, DATA, PREFS, MODELS, OUT, RUNS, DEVICES, REWARDS]


def fill(text: str, tmp: Path) -> str:
    for place, value in {"{tmp}": str(tmp), **PLACES}.items():
        text = text.replace(place, value)
    return text


def prepare(case: Case, tmp: Path) -> list[str]:
    """Write the case's files into ``tmp``; its argv, placeholders filled."""
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return [fill(a, tmp) for a in case.argv]


def snapshot(root: Path) -> dict:
    """Every path under ``root`` (Python's own __pycache__ aside): a file's sha256, or "folder"."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


def check_line(line: str, case: Case, tmp: Path) -> None:
    missing = [n for n in (fill(n, tmp) for n in case.needles) if n not in line]
    assert not missing, f"{missing} not in: {line}"


def check_unchanged(case: Case, tmp: Path, before: dict) -> None:
    after = {k: v for k, v in snapshot(tmp).items() if k not in case.leaves}
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"


@pytest.fixture(scope="module")
def shipped():
    return snapshot(asset_path())


def no_work(monkeypatch):
    """Fail the test the moment any command starts its work: a training step, the bandit, the benchmark.
    The modules that import one of these by name are imported first, so that none keeps the patched one."""
    import minigrpo.demo  # noqa: F401
    import minigrpo.lab.widgets  # noqa: F401

    def started(*args, **kwargs):
        raise AssertionError("the command started its work instead of refusing the input")

    for target in ("minigrpo.runs.methods.make_steps", "minigrpo.lm.sft.sft_steps",
                   "minigrpo.rewards.reward_model.train_reward_model", "minigrpo.bandit.runner.run_bandit",
                   "minigrpo.runs.speed.compare", "minigrpo.demo.run_demo"):
        monkeypatch.setattr(target, started)


def params(cases):
    return [pytest.param(c, id=f"{c.klass.replace(' ', '-')}:{c.id}",
                         marks=pytest.mark.xfail(strict=True, reason=c.xfail) if c.xfail else ()) for c in cases]


@pytest.mark.parametrize("case", params(CASES))
def test_every_case_in_process(case, tmp_path, monkeypatch, capsys, shipped):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINIGRPO_WRITE_ASSETS", raising=False)
    no_work(monkeypatch)
    argv = prepare(case, tmp_path)
    before = snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [l for l in err.replace("\r", "\n").splitlines() if l.startswith("minigrpo ")]
    assert len(lines) == 1 and lines[0].startswith(f"minigrpo {argv[0]}: error: "), err[-3000:]
    check_line(lines[0], case, tmp_path)
    check_unchanged(case, tmp_path, before)
    assert snapshot(asset_path()) == shipped, "the package's shipped assets changed"


FIRST_OF_EACH = [next(c for c in CASES if c.klass == k and not c.xfail) for k in CLASSES]


@pytest.mark.parametrize("case", params(FIRST_OF_EACH))
def test_one_case_per_class_as_a_subprocess(case, tmp_path, shipped):
    argv = prepare(case, tmp_path)
    before = snapshot(tmp_path)
    res = cli(*argv, cwd=tmp_path)
    check_line(error_line(res, argv[0]), case, tmp_path)
    assert res.stdout == ""
    check_unchanged(case, tmp_path, before)
    assert snapshot(asset_path()) == shipped, "the package's shipped assets changed"


def test_the_table_covers_every_class():
    counts = Counter(c.klass for c in CASES)
    assert set(counts) == set(CLASSES) and min(counts.values()) >= 3, counts
    ids = [(c.klass, c.id) for c in CASES]
    assert len(ids) == len(set(ids))
    assert all(c.needles and c.argv[0] in ("train", "sft", "reward-model", "bandit", "demo", "bench") for c in CASES)


if __name__ == "__main__":
    counts = Counter(c.klass for c in CASES)
    xfails = Counter(c.klass for c in CASES if c.xfail)
    for k in CLASSES:
        print(f"{k:<28}{counts[k]:>4}   ({xfails[k]} xfail)")
    print(f"{'total':<28}{len(CASES):>4}   ({sum(xfails.values())} xfail)")
