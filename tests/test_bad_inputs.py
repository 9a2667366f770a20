"""Issue 17, bounded inputs and model folders: over-long lines and texts, non-UTF-8 lines, label files that
give no pair, pairs a tokenizer cannot tell apart, and a ``--model`` folder that is not a causal LM.

The command-line cases run ``python -m minigrpo.cli`` in a subprocess (as ``test_guards.py`` does) and check
exit code 2, one ``minigrpo <command>: error: …`` line naming the file or setting, and no traceback.
"""
from __future__ import annotations

import json
import shutil
import time
import tracemalloc

import pytest

from cli_subprocess import cli, error_line
from minigrpo.assets import asset_path
from minigrpo.lm.lines import MAX_LINE_BYTES, MAX_RANKING, MAX_TEXT_CHARS, jsonl_records
from minigrpo.lm.models import load_causal_lm
from minigrpo.rewards.labels import labels_to_pairs, load_labels
from minigrpo.rewards.preferences import load_preferences

RM_FOLDER = asset_path("reward_models", "addition-column-checker")
SMALL_RM = ["--steps", "2", "--batch-size", "4", "--eval-every", "1"]


def good_pairs(n: int = 30) -> list[str]:
    return [json.dumps({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)})
            for a in range(10, 10 + n) for b in (3,)]


def huge_line(mb: int = 20) -> str:
    return json.dumps({"prompt": "1+1=", "chosen": "2" * (mb << 20), "rejected": "3"})


# --- size limits ----------------------------------------------------------------------------------------

def test_a_20_mb_prefs_line_is_one_error_line_fast(tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("\n".join(good_pairs(3) + [huge_line()]) + "\n")
    t0 = time.monotonic()
    res = cli("reward-model", "--prefs", str(prefs), *SMALL_RM, "--out", str(tmp_path / "rm"))
    assert time.monotonic() - t0 < 120                  # was: over 5 minutes and 8 GB
    line = error_line(res, "reward-model")
    assert "prefs.jsonl:4" in line and "1.0 MiB" in line and "20.0 MiB" in line
    assert not (tmp_path / "rm").exists()


def test_a_20_mb_line_with_skip_bad_is_skipped_and_counted(tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("\n".join(good_pairs() + [huge_line()]) + "\n")
    res = cli("reward-model", "--prefs", str(prefs), *SMALL_RM, "--skip-bad", "--out", str(tmp_path / "rm"))
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == {"over the limit": 1} and summary["pairs"] + summary["test_pairs"] == 30


def test_reading_a_huge_line_holds_at_most_the_line_limit(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join([huge_line(8)] + good_pairs(2)) + "\n")
    tracemalloc.start()
    try:
        pairs, report = load_preferences(path, strict=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(pairs) == 2 and report.skipped == {"over the limit": 1}
    assert peak < 4 * MAX_LINE_BYTES


def test_long_texts_and_rankings_are_named_errors(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a" * (MAX_TEXT_CHARS + 1), "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": "p", "ranking": [str(i) for i in range(MAX_RANKING + 1)]}) + "\n"
                    + good_pairs(1)[0] + "\n")
    with pytest.raises(ValueError, match=r"prefs.jsonl:1: chosen is 65537 characters, over the limit of 65536"):
        load_preferences(path)
    pairs, report = load_preferences(path, strict=False)
    assert len(pairs) == 1 and report.skipped == {"over the limit": 2}
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"prompt": "p", "completion": "x" * (MAX_TEXT_CHARS + 1), "label": "good"}) + "\n")
    with pytest.raises(ValueError, match=r"labels.jsonl:1: completion is 65537 characters"):
        load_labels(labels)


def test_an_over_long_jsonl_data_line_is_refused_naming_file_and_line(tmp_path):
    from minigrpo.lm.data import PromptData

    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n" + json.dumps({"prompt": "x" * (2 << 20)}) + "\n")
    with pytest.raises(ValueError, match=r"problems.jsonl:2: the line is 2.0 MiB, over the limit of 1.0 MiB"):
        PromptData.load(str(data))


def test_line_reader_reports_bad_lines_one_by_one(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n' + b"x" * (MAX_LINE_BYTES + 5) + b"\n" + b'{"b": "\xff"}\n' + b"[1]")
    got = list(jsonl_records(path))
    assert [w for w, _ in got] == [f"{path}:1", f"{path}:3", f"{path}:4", f"{path}:5"]
    assert got[0][1] == {"a": 1} and got[3][1] == [1]
    assert "over the limit" in str(got[1][1]) and "not UTF-8" in str(got[2][1])


# --- label files ----------------------------------------------------------------------------------------

def test_a_non_utf8_label_line_is_one_bad_line_not_a_bad_file(tmp_path):
    lines = [json.dumps({"prompt": f"{a}+3=", "completion": str(a + 3 + k), "label": "bad" if k else "good"},
                        ensure_ascii=False).encode() for a in range(10, 40) for k in (0, 10)]
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b"\n".join(lines[:5] + [b'{"prompt": "1+1=", "completion": "\xe9", "label": "good"}'] + lines[5:]))
    line = error_line(cli("reward-model", "--labels", str(path), *SMALL_RM, "--out", str(tmp_path / "rm")),
                      "reward-model")
    assert "labels.jsonl:6: not UTF-8" in line
    labels, skipped = load_labels(path, strict=False)
    assert len(labels) == 60 and skipped == {"not UTF-8": 1}


@pytest.mark.parametrize("content,said", [
    ("", "labels.jsonl is empty"),
    ("".join(json.dumps({"prompt": f"{a}+1=", "completion": str(a + 1), "label": "👍"}, ensure_ascii=False) + "\n"
             for a in range(12)), "labels.jsonl: 12 labels, all 👍: no pair can be made; label some completions 👎"),
], ids=["empty", "all-good"])
def test_label_files_that_give_no_pair_say_why(tmp_path, content, said):
    path = tmp_path / "labels.jsonl"
    path.write_text(content, encoding="utf-8")
    line = error_line(cli("reward-model", "--labels", str(path), *SMALL_RM, "--out", str(tmp_path / "rm")),
                      "reward-model")
    assert said in line and "held-out" not in line


def test_label_messages_for_other_pairless_files(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "1", "label": "good"}) + "\n"
                    + json.dumps({"prompt": "b", "completion": "2", "label": "bad"}) + "\n" + "not json\n")
    with pytest.raises(ValueError, match="no prompt has both"):
        labels_to_pairs(load_labels(path, strict=False)[0])
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"every labelled line was skipped \(1 not valid JSON\)"):
        labels_to_pairs(load_labels(path, strict=False)[0])
    assert labels_to_pairs([]) == []                      # labels made in memory: no file to speak of


def test_an_empty_prefs_file_says_so(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="prefs.jsonl' is empty"):
        load_preferences(path)


# --- pairs the tokenizer cannot tell apart -----------------------------------------------------------------

def test_pairs_that_tokenize_identically_are_refused_or_skipped(tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    same = json.dumps({"prompt": "1+1=", "chosen": "✓", "rejected": "✗"}, ensure_ascii=False)
    prefs.write_text("\n".join(good_pairs() + [same]) + "\n", encoding="utf-8")
    line = error_line(cli("reward-model", "--prefs", str(prefs), *SMALL_RM, "--out", str(tmp_path / "rm")),
                      "reward-model")
    assert "prefs.jsonl:31" in line and "'✓'" in line and "'✗'" in line and "same token ids" in line
    res = cli("reward-model", "--prefs", str(prefs), *SMALL_RM, "--skip-bad", "--out", str(tmp_path / "rm"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipped 1 preference pair(s)" in res.stderr and "Traceback" not in res.stderr
    summary = json.loads(res.stdout)
    assert summary["skipped"] == {"same token ids": 1}
    assert summary["pairs"] + summary["test_pairs"] == 30              # the 31 lines less the one skipped
    assert json.loads((tmp_path / "rm" / "reward_model.json").read_text())["skipped"] == {"same token ids": 1}


def test_pairs_on_held_out_prompts_only_say_so_naming_the_file(tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": "0+4=", "chosen": c, "rejected": "5"}) + "\n" for c in "4321"))
    line = error_line(cli("reward-model", "--prefs", str(prefs), *SMALL_RM, "--out", str(tmp_path / "rm")),
                      "reward-model")
    assert "prefs.jsonl" in line and "all 4 pairs were held out" in line and "1 distinct prompt(s)" in line, line
    assert not (tmp_path / "rm").exists()


def test_reward_model_encoding_truncates_to_its_context():
    from minigrpo.rewards.reward_model import RewardModel

    rm = RewardModel.load(RM_FOLDER)
    ids, att = rm.encode(["1+1="], ["2" * 50_000])
    assert ids.shape[1] == rm.max_length and att.all()


# --- model folders ------------------------------------------------------------------------------------

def test_train_with_the_shipped_reward_model_as_model_is_refused(tmp_path):
    line = error_line(cli("train", "--model", str(RM_FOLDER), "--steps", "1", "--out", str(tmp_path / "runs")),
                      "train")
    assert "addition-column-checker" in line and "sequence-classification" in line
    assert "GPT2ForSequenceClassification" in line and "causal LM" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_model_folders_say_which_part_is_wrong(tmp_path):
    anchor = asset_path("anchors", "addition")
    folder = tmp_path / "m"
    shutil.copytree(anchor, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*m' has config.json but no weights"):
        load_causal_lm(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_causal_lm(folder)
    shutil.rmtree(folder)
    shutil.copytree(anchor, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["T5Model"], "model_type": "t5"}))
    with pytest.raises(ValueError, match="model_type='t5' has no causal-LM class"):
        load_causal_lm(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_causal_lm(folder)
