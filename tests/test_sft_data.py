"""`minigrpo sft --data`: supervised fine-tuning on your own prompt → completion rows into a GRPO anchor.

The references: the base model's held-out loss, measured here with the same function before SFT
(the loss must fall from it); chance level for held-out exact match; the saved folder loaded back and
scored again (it must score what ``sft.json`` says); and, for the built-in tasks, the loss trajectory
that ``sft`` gave before the data path was written (recorded then, hard-coded below).
"""
import json
import math
import random
from pathlib import Path

import pytest

from local_models import bpe_tokenizer, save_model, tiny_gpt2, tiny_qwen2
from minigrpo.cli import main
from minigrpo.lm.models import TinyGPT2, build_tiny_gpt2, load_causal_lm
from minigrpo.lm.policy import CausalLMPolicy
from minigrpo.lm.evaluate import exact_match
from minigrpo.lm.sft import SFTConfig, build_anchor, held_out_loss, sft
from minigrpo.lm.sft_data import TINY_CHAT_TEMPLATE, SFTData, completion_text
from minigrpo.lm.tasks import make_task
from minigrpo.lm.tokens import char_tokenizer

LETTERS = "abcdefgh"                     # 3-letter words: 8³ = 512 of them, so chance exact match is 1/512
SMALL = ["--shape.n-layer", "1", "--shape.n-embd", "32", "--shape.n-head", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def words(n: int = 200, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return ["".join(r.choice(LETTERS) for _ in range(3)) for _ in range(n)]


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def reversal(tmp_path, name="reverse.jsonl") -> str:
    """200 rows: "abc>" → "cba"."""
    return write_jsonl(tmp_path / name, [{"prompt": f"{w}>", "completion": w[::-1]} for w in words()])


def run_sft(argv, capsys) -> dict:
    assert main(["sft", *argv, "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((Path(printed["out"]) / "sft.json").read_text())
    assert {k: saved[k] for k in ("test_accuracy", "test_loss", "final_loss")} == \
        {k: printed[k] for k in ("test_accuracy", "test_loss", "final_loss")}
    return saved


def base_held_out_loss(folder: str, data: str) -> float:
    """The held-out SFT loss of the model in ``folder`` before any training, on the rows SFT holds out."""
    model, tok = load_causal_lm(folder)
    sft_data = SFTData(data)
    pairs = sft_data.pairs(tok, None)
    return held_out_loss(CausalLMPolicy(model, tok.pad_token_id), tok, [pairs[r.index] for r in sft_data.test.rows])


# --- (a) a fresh tiny GPT-2 on your data ------------------------------------------------------------------

def test_tiny_model_learns_the_data_and_its_folder_loads_back_scoring_the_same(tmp_path, capsys):
    data, out = reversal(tmp_path), tmp_path / "anchor"
    saved = run_sft(["--model", "tiny", "--data", data, "--out", str(out), "--steps", "100", "--batch-size", "32",
                     *SMALL], capsys)
    vocab = len(set("".join(words())) | {">"}) + 3                 # the characters, <pad>, <eos>, <unk>
    assert saved["first_loss"] > 0.8 * math.log(vocab) and saved["final_loss"] < 0.25 * saved["first_loss"]
    assert saved["test_loss"] < 0.25 * saved["first_loss"]
    assert saved["test_rows"] >= 10 and saved["test_accuracy"] >= 0.3 > 1 / 512        # far above chance
    # the context leaves GRPO room: prompt (4) + 2 × completion (3) + EOS = 11, never below the shape's own 48
    assert saved["model_shape"]["n_positions"] == 48
    assert saved["command"].startswith(f"minigrpo sft --model tiny --data {data} ")

    model, tok = load_causal_lm(out)                               # what `minigrpo train --model <out>` does
    sft_data = SFTData(data)
    pairs = sft_data.pairs(tok, model.config.n_positions)
    test = [pairs[r.index] for r in sft_data.test.rows]
    policy = CausalLMPolicy(model, tok.pad_token_id)
    assert exact_match(policy, tok, test, 4) == saved["test_accuracy"]
    assert held_out_loss(policy, tok, test) == pytest.approx(saved["test_loss"], rel=1e-5)


def test_without_out_the_anchor_goes_to_a_run_folder_named_after_the_data(tmp_path, monkeypatch, capsys):
    data = reversal(tmp_path, "my words.jsonl")
    monkeypatch.chdir(tmp_path)
    saved = run_sft(["--data", data, "--steps", "2", "--batch-size", "4", "--test-fraction", "0", *SMALL], capsys)
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("sft-my words-") and (run / "config.json").exists()
    assert saved["test_accuracy"] is None and saved["test_loss"] is None and saved["train_rows"] == 200
    assert "--data '" in saved["command"]                           # a path with a space, quoted


def test_a_character_the_task_alphabet_lacks_and_blank_lines_are_tokens(tmp_path):
    """The tiny tokenizer covers every character of every row, held-out rows included, newlines too."""
    rows = [{"prompt": f"{w}\n\n>", "completion": f"{w[::-1]}é"} for w in words(40)]
    data = SFTData(write_jsonl(tmp_path / "d.jsonl", rows))
    from minigrpo.lm.sft_data import tiny_tokenizer

    tok = tiny_tokenizer(data)
    for i, p in data.pairs(tok, None).items():
        ids = tok.encode(p.prompt + p.answer, add_special_tokens=False)
        assert tok.unk_token_id not in ids and tok.decode(ids) == p.prompt + p.answer


def test_the_tiny_context_fits_the_longest_prompt_and_twice_the_longest_completion(tmp_path):
    """Prompt 30 characters, completion 20: 30 + 2·20 + 1 = 71, rounded up to 72. Over 600 distinct
    characters are a token each (plus <pad>, <eos>, <unk>), without complaint."""
    many = "".join(chr(0x4E00 + i) for i in range(600))
    rows = [{"prompt": "p" * 30, "completion": "c" * 20}]
    rows += [{"prompt": many[i:i + 10], "completion": many[i + 10:i + 20]} for i in range(0, 600, 20)]
    data = SFTData(write_jsonl(tmp_path / "d.jsonl", rows), test_fraction=0.0)
    from minigrpo.lm.sft_data import tiny_shape, tiny_tokenizer

    tok = tiny_tokenizer(data)
    assert len(tok) == 600 + 2 + 3                                 # the CJK characters, "p", "c" and the specials
    assert tiny_shape(TinyGPT2(), data, tok).n_positions == 72
    assert tiny_shape(TinyGPT2(n_positions=96), data, tok).n_positions == 96


# --- (b) a GPT-2 with a BPE tokenizer, from a save_pretrained folder ----------------------------------------

def test_a_saved_gpt2_with_a_bpe_tokenizer_is_fine_tuned_and_its_held_out_loss_falls(tmp_path, capsys):
    rows = [{"prompt": f"reverse {w}:", "completion": " " + " ".join(w[::-1])} for w in words()]
    data = write_jsonl(tmp_path / "bpe.jsonl", rows)
    tok = bpe_tokenizer([r["prompt"] + r["completion"] for r in rows], vocab_size=300, kind="bytelevel")
    base = save_model(tiny_gpt2(tok, seed=0), tok, tmp_path / "base")
    before = base_held_out_loss(base, data)
    saved = run_sft(["--model", base, "--lr", "3e-3", "--data", data, "--out", str(tmp_path / "anchor"), "--steps", "40",
                     "--batch-size", "16", "--lr", "3e-3"], capsys)
    assert saved["test_loss"] < 0.6 * before and saved["final_loss"] < 0.6 * saved["first_loss"]
    assert "model_shape" not in saved and saved["command"].startswith(f"minigrpo sft --model {base} --data ")
    model, tok2 = load_causal_lm(tmp_path / "anchor")
    assert model.config.model_type == "gpt2" and tok2.encode(rows[0]["prompt"]) == tok.encode(rows[0]["prompt"])


# --- (c) chat messages ---------------------------------------------------------------------------------------

def chat_rows() -> list[dict]:
    return [{"prompt": [{"role": "system", "content": "reverse the word"}, {"role": "user", "content": w}],
             "completion": [{"role": "assistant", "content": w[::-1]}]} for w in words()]


def test_chat_prompts_go_through_the_chat_template_and_the_target_ends_with_its_eos(tmp_path, capsys):
    rows = chat_rows()
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    tok = bpe_tokenizer(["reverse the word system user assistant"] + words(), vocab_size=300, chat_template=True)
    base = save_model(tiny_qwen2(tok, seed=0), tok, tmp_path / "base")
    pairs = SFTData(data).pairs(tok, None)
    assert pairs[0].prompt == tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
    assert pairs[0].prompt.endswith("<|im_start|>assistant\n") and pairs[0].answer == words()[0][::-1]
    before = base_held_out_loss(base, data)
    saved = run_sft(["--model", base, "--lr", "3e-3", "--data", data, "--out", str(tmp_path / "anchor"), "--steps", "80",
                     "--batch-size", "16"], capsys)
    assert saved["test_loss"] < 0.6 * before
    _, tok2 = load_causal_lm(tmp_path / "anchor")
    assert tok2.chat_template == tok.chat_template and tok2.eos_token == "<|im_end|>"


def test_a_tiny_model_on_chat_data_gets_a_chat_template_of_its_own(tmp_path, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows())
    saved = run_sft(["--data", data, "--out", str(tmp_path / "anchor"), "--steps", "60", "--batch-size", "16",
                     *SMALL], capsys)
    assert saved["final_loss"] < 0.6 * saved["first_loss"]
    _, tok = load_causal_lm(tmp_path / "anchor")
    assert tok.chat_template == TINY_CHAT_TEMPLATE
    text = tok.apply_chat_template(chat_rows()[0]["prompt"], add_generation_prompt=True, tokenize=False)
    assert text == f"system: reverse the word\nuser: {words()[0]}\nassistant: "
    assert tok.unk_token_id not in tok.encode(text, add_special_tokens=False)


def test_completion_text():
    assert completion_text("cba") == "cba" and completion_text(42) == "42"
    assert completion_text([{"role": "assistant", "content": "c"}, {"role": "assistant", "content": "ba"}]) == "cba"
    for bad in ([{"role": "user", "content": "x"}], 1.5, {"text": "x"}, True):
        with pytest.raises(ValueError, match="is not allowed"):
            completion_text(bad)


# --- (d) bad input: one line, exit 2, before any training and before any folder ---------------------------

def errors(tmp_path):
    ok = reversal(tmp_path)
    answer_col = write_jsonl(tmp_path / "answers.jsonl", [{"prompt": f"{w}>", "answer": w[::-1]} for w in words(20)])
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"prompt": f"{w}>", "completion": "" if i == 5 else w}
                                                   for i, w in enumerate(words(20))])
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": f"{w}>" * (100 if i == 7 else 1), "completion": w}
                                                 for i, w in enumerate(words(20))])
    tok = bpe_tokenizer(words(), vocab_size=300)
    base = save_model(tiny_gpt2(tok), tok, tmp_path / "base")              # 128 positions
    return [
        (["--data", answer_col], ["no 'completion' column", "'prompt', 'answer'", "--completion-column"]),
        (["--data", empty], ["row 5", "empty"]),
        (["--data", long, "--model", base], ["row 7", "context of 128"]),
        (["--data", ok, "--careless", "0.5"], ["careless=0.5", "built-in tasks only"]),
        (["--data", ok, "--task", "chain"], ["task='chain'", "without data only"]),
        (["--data", ok, "--digits", "2"], ["task_args={'digits': 2}", "without data only"]),
        (["--data", ok, "--model", str(tmp_path / "no-such-model")], ["no-such-model", "does not exist"]),
        (["--data", ok, "--model", base, "--shape.n-layer", "1"], ["shape=", "fresh tiny model"]),
        (["--data", str(tmp_path / "missing.jsonl")], ["missing.jsonl", "does not exist"]),
        (["--data", ok, "--test-fraction", "1"], ["test_fraction=1.0"]),
    ]


def test_bad_input_is_one_line_on_stderr_exit_2_and_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = errors(tmp_path)
    capsys.readouterr()
    for argv, needles in cases:
        out = tmp_path / "anchor"
        assert main(["sft", *argv, "--steps", "1", "--device", "cpu", "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("minigrpo sft: error: ") and "\n" not in err, err
        for needle in needles:
            assert needle in err, (argv, err)
        assert not out.exists(), argv
        assert main(["sft", *argv, "--steps", "1", "--device", "cpu"]) == 2
        capsys.readouterr()
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), argv


def test_the_completion_column_can_be_named(tmp_path, capsys):
    data = tmp_path / "answers.csv"
    data.write_text("prompt,answer\n" + "".join(f"{w}>,{w[::-1]}\n" for w in words(30)))
    saved = run_sft(["--data", str(data), "--completion-column", "answer", "--out", str(tmp_path / "a"), "--steps", "2",
                     "--batch-size", "4", *SMALL], capsys)
    assert saved["config"]["completion_column"] == "answer" and "--completion-column answer" in saved["command"]


# --- (e) the built-in tasks are untouched ---------------------------------------------------------------------

# Recorded with `sft` as it was before the data path existed (addition, 1 digit, 12 steps of 8, seed 0).
ADDITION_LOSSES = [2.7903332710266113, 2.5066733360290527, 2.346475601196289, 2.2797253131866455,
                   2.232807159423828, 2.2747581005096436, 2.121425151824951, 2.191232681274414, 2.214536190032959,
                   2.0864171981811523, 2.054210901260376, 2.110229969024658]
CHAIN_FINAL_LOSS = 2.558359146118164        # chain, 8 steps of 8, careless 0.5, n_positions 24


def test_the_built_in_task_path_gives_the_loss_trajectory_it_gave_before(tmp_path):
    shape = TinyGPT2(n_layer=1, n_embd=32, n_head=2, n_positions=16)
    cfg = SFTConfig(task="addition", task_args={"digits": 1}, steps=12, batch_size=8, shape=shape)
    task = make_task("addition", digits=1)
    tok = char_tokenizer(task.alphabet)
    losses = sft(CausalLMPolicy(build_tiny_gpt2(tok, shape, seed=0), tok.pad_token_id), tok, task, cfg)
    assert losses == pytest.approx(ADDITION_LOSSES, rel=1e-5)
    out = build_anchor(cfg, tmp_path / "addition", device="cpu", eval_size=20, progress=False)
    saved = json.loads((out / "sft.json").read_text())
    assert saved["final_loss"] == pytest.approx(ADDITION_LOSSES[-1], rel=1e-5) and saved["config"]["careless"] == 0.6
    assert saved["command"] == ("minigrpo sft --task addition --task-args digits=1 --steps 12 --batch-size 8 "
                                "--lr 0.003 --careless 0.6 --seed 0 --shape.n-layer 1 --shape.n-embd 32 "
                                f"--shape.n-head 2 --shape.n-positions 16 --out {out}")
    chain = SFTConfig(task="chain", steps=8, batch_size=8, careless=0.5,
                      shape=TinyGPT2(n_layer=1, n_embd=32, n_head=2, n_positions=24))
    out = build_anchor(chain, tmp_path / "chain", device="cpu", eval_size=20, progress=False)
    assert json.loads((out / "sft.json").read_text())["final_loss"] == pytest.approx(CHAIN_FINAL_LOSS, rel=1e-5)


def test_the_learning_rate_defaults_to_the_kind_of_model():
    """A fresh tiny model learns at 3e-3; a pretrained one would be wrecked by that, and gets 5e-5."""
    assert SFTConfig().lr == 3e-3 and SFTConfig(model="gpt2").lr == 5e-5 and SFTConfig(model="gpt2", lr=1e-4).lr == 1e-4
