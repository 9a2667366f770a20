"""Preference pairs as (P, 2, T) tensors (lm/pairs.py) and logged scored completions for offline GRPO
(lm/logged.py): layouts, refusals with the pair/row named, round trips, and long texts cut before tokenizing."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

from minigrpo.core.offline import LoggedBatch
from minigrpo.lm.logged import ScoredCompletion, encode_logged, group_logged, read_logged, write_logged
from minigrpo.lm.pairs import CHOSEN, REJECTED, Pair, PairBatch, encode_pairs, pairs_from_groups
from minigrpo.lm.tokens import char_tokenizer, decode_completions, encode_prompts
from minigrpo.rewards.preferences import PreferencePair
from local_models import bpe_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["12+34=46", "the answer is 7", "chosen ✓ rejected ✗", "hello world"] * 8


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer("0123456789+= ")


@pytest.fixture(scope="module")
def bpe():
    t = bpe_tokenizer(TEXTS, vocab_size=300, kind="bytelevel")
    t.pad_token = t.eos_token                     # GPT-2's usual choice: pad = EOS
    return t


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


# --- pairs --------------------------------------------------------------------------------------------

def test_pair_layout_chosen_first_eos_padding_and_mask(tok):
    pairs = [PreferencePair("1+1=", "2", "11"), Pair("12+3=", "15", "9")]
    b = encode_pairs(tok, pairs)
    assert isinstance(b, PairBatch) and b.shape == (2, 2, 3) and b.truncated == 0
    assert (CHOSEN, REJECTED) == (0, 1)
    assert torch.equal(b.prompts, encode_prompts(tok, ["1+1=", "12+3="]))       # left-padded, as the sampler's
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert b.completions[0, CHOSEN].tolist() == ids(tok, "2") + [eos, pad]
    assert b.completions[0, REJECTED].tolist() == ids(tok, "11") + [eos]
    assert b.completions[1, CHOSEN].tolist() == ids(tok, "15") + [eos]
    assert b.completions[1, REJECTED].tolist() == ids(tok, "9") + [eos, pad]
    assert b.mask.dtype == torch.bool and b.mask.tolist() == [[[1, 1, 0], [1, 1, 1]], [[1, 1, 1], [1, 1, 0]]]
    assert b.completions.dtype == b.prompts.dtype == torch.long
    assert decode_completions(tok, b.completions, b.mask, b.prompts) == [["2", "11"], ["15", "9"]]


def test_truncation_counts_completions_whose_eos_did_not_fit(tok):
    pairs = [Pair("1=", "1", "22"), Pair("2=", "333", "4")]
    b = encode_pairs(tok, pairs, max_new_tokens=2)
    assert b.shape == (2, 2, 2)
    # "1"+EOS fits; "22" fills both slots and loses its EOS; "333" is cut to "33"
    assert b.truncated == 2
    assert b.completions[0].tolist() == [ids(tok, "1") + [tok.eos_token_id], ids(tok, "22")]
    assert b.completions[1].tolist() == [ids(tok, "33"), ids(tok, "4") + [tok.eos_token_id]]
    assert b.mask.all()
    assert encode_pairs(tok, pairs, max_new_tokens=10).shape == (2, 2, 4)   # T: the longest, not the cap


def test_a_pair_the_tokenizer_cannot_tell_apart_is_refused_naming_it(tok):
    assert ids(tok, "✓") == ids(tok, "✗") == [tok.unk_token_id]                # both unknown → <unk>
    with pytest.raises(ValueError, match=r"^pair 1: chosen='✓' and rejected='✗' are the same to the model") as e:
        encode_pairs(tok, [Pair("1=", "1", "2"), Pair("1+1=", "✓", "✗")])
    assert "\n" not in str(e.value)
    long_a, long_b = "7" * 200 + "1", "7" * 200 + "2"
    with pytest.raises(ValueError, match=r"^pair 0: chosen='7777.*… and rejected=.*max_new_tokens=5") as e:
        encode_pairs(tok, [Pair("1=", long_a, long_b)], max_new_tokens=5)
    assert len(str(e.value)) < 400                                               # the texts shortened
    encode_pairs(tok, [Pair("1=", long_a, long_b)])                              # whole, they differ


def test_pairs_that_are_not_pairs_are_refused(tok):
    with pytest.raises(ValueError, match="no pairs"):
        encode_pairs(tok, [])
    with pytest.raises(ValueError, match=r"^pair 1: rejected=3 is not allowed; chosen and rejected must be strings"):
        encode_pairs(tok, [Pair("1=", "1", "2"), Pair("1=", "1", 3)])
    with pytest.raises(ValueError, match=r"^pair 0: .* is not a pair"):
        encode_pairs(tok, [("1=", "1", "2")])
    with pytest.raises(ValueError, match="max_new_tokens=0 is not allowed"):
        encode_pairs(tok, [Pair("1=", "1", "2")], max_new_tokens=0)


def test_a_pair_over_the_context_is_refused_naming_it(tok):
    pairs = [Pair("1=", "1", "2"), Pair("12345+6=", "12351", "0")]
    assert encode_pairs(tok, pairs, context=14).shape == (2, 2, 6)
    with pytest.raises(ValueError, match=r"^pair 1: the prompt \(8 tokens\) and its longer completion \(6 tokens"
                                         r" with EOS\) make 14, over the model's context of 13 tokens"):
        encode_pairs(tok, pairs, context=13)
    with pytest.raises(ValueError, match=r"^pair 0: the prompt alone is over the model's context of 4"):
        encode_pairs(tok, [Pair("1" * 10_000_000, "1", "2")], context=4)           # and quickly: not tokenized whole
    # with max_new_tokens the completion's share is what is kept
    assert encode_pairs(tok, pairs, max_new_tokens=3, context=11).truncated == 1


def test_pairs_under_a_byte_level_bpe_decode_back(bpe):
    pairs = [Pair("12+34=", "46", "the answer is 7"), Pair("hello", " world", " ✗"), Pair("x", "✓", "✗")]
    b = encode_pairs(bpe, pairs)
    assert b.shape[:2] == (3, 2) and b.truncated == 0
    assert decode_completions(bpe, b.completions, b.mask, b.prompts) == [[p.chosen, p.rejected] for p in pairs]
    # pad == EOS here: the mask, not the ids, says where a completion ends
    assert b.mask[0, CHOSEN].sum() == len(ids(bpe, "46")) + 1


def test_a_5_mb_completion_is_cut_before_it_is_tokenized(tok, bpe):
    huge = "1234567890" * 500_000                                                # 5 MB, one "word"
    for t in (tok, bpe):
        start = time.perf_counter()
        b = encode_pairs(t, [Pair("1=", huge, "2"), Pair("2=", "3", huge + " more")], max_new_tokens=16)
        assert time.perf_counter() - start < 2.0
        assert b.shape == (2, 2, 16) and b.truncated == 2
        assert b.completions[0, CHOSEN].tolist() == ids(t, huge[:2000])[:16]       # the ids the whole text begins with
    start = time.perf_counter()
    batch = encode_logged(tok, [("1=", [ScoredCompletion("1=", huge, 1.0)])], max_new_tokens=16)
    assert time.perf_counter() - start < 2.0 and batch.shape == (1, 1, 16)


def test_pairs_from_groups_best_worst_and_all(tok):
    prompts = ["a", "b", "c", "d"]
    groups = [["1", "2", "3"], ["1", "1"], ["x", "x"], ["5", "6", "7", "6"]]
    rewards = [[0.0, 1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 1.0, 0.0, 1.0]]
    pairs, n_tied = pairs_from_groups(prompts, groups, rewards)
    # "a": best "2", the first of the lowest "1"; "b" ties; "c" differs in reward, not in text; "d": "6" over "7"
    assert pairs == [Pair("a", "2", "1"), Pair("d", "6", "7")] and n_tied == 2
    pairs, n_tied = pairs_from_groups(prompts, groups, rewards, how="all")
    assert n_tied == 2
    assert pairs == [Pair("a", "2", "1"), Pair("a", "2", "3"),
                     Pair("d", "5", "7"), Pair("d", "6", "5"), Pair("d", "6", "7")]   # "6" sampled twice: once
    assert encode_pairs(tok, pairs).shape == (5, 2, 2)                            # they encode as they are
    with pytest.raises(ValueError, match="how='top' is not allowed"):
        pairs_from_groups(prompts, groups, rewards, how="top")
    with pytest.raises(ValueError, match="prompt 1: reward nan is not a finite number"):
        pairs_from_groups(["a", "b"], [["1"], ["2"]], [[0.0], [math.nan]])
    with pytest.raises(ValueError, match="prompt 0 has 2 completions and 1 rewards"):
        pairs_from_groups(["a"], [["1", "2"]], [[0.0]])


# --- logged data ------------------------------------------------------------------------------------

def records(tok):
    def lp(text, eos=True):
        return [-0.5] * (len(ids(tok, text)) + eos)
    return [
        ScoredCompletion("1+1=", "2", 1.0, lp("2"), {"answer": "2"}),
        ScoredCompletion("2+2=", "5", 0.0, lp("5"), {"answer": "4"}),
        ScoredCompletion("1+1=", "11", 0.0, lp("11"), {"answer": "2"}),
        ScoredCompletion("1+1=", "3", -1.0, lp("3", eos=False), {"answer": "2"}),   # the sampler ran out: no EOS
    ]


def test_logged_round_trip_write_read_group_encode(tok, tmp_path):
    recs = records(tok)
    path = write_logged(tmp_path / "deep" / "er" / "logged.jsonl", recs)
    assert [p.name for p in path.parent.iterdir()] == ["logged.jsonl"]               # no temporary file left
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"prompt": "1+1=", "completion": "2", "reward": 1.0, "logp": [-0.5, -0.5], "answer": "2"}
    back = read_logged(path)
    assert back == recs and [r.row for r in back] == [0, 1, 2, 3]
    groups = group_logged(back)
    assert [(p, [r.completion for r in g]) for p, g in groups] == [("1+1=", ["2", "11", "3"]), ("2+2=", ["5"])]
    b = encode_logged(tok, groups)
    assert isinstance(b, LoggedBatch) and b.shape == (2, 3, 3)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert torch.equal(b.prompts, encode_prompts(tok, ["1+1=", "2+2="]))
    assert b.completions[0].tolist() == [ids(tok, "2") + [eos, pad], ids(tok, "11") + [eos], ids(tok, "3") + [pad, pad]]
    assert b.completions[1].tolist() == [ids(tok, "5") + [eos, pad], [eos, pad, pad], [eos, pad, pad]]
    assert b.valid.tolist() == [[True, True, True], [True, False, False]]
    assert b.mask.tolist() == [[[1, 1, 0], [1, 1, 1], [1, 0, 0]], [[1, 1, 0], [0, 0, 0], [0, 0, 0]]]
    assert b.r.tolist() == [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]
    assert torch.equal(b.logp, torch.where(b.mask, -0.5, 0.0))                    # aligned, 0 on padding
    cut = encode_logged(tok, groups, max_new_tokens=2)                             # cut, logp alike
    assert cut.shape == (2, 3, 2) and torch.equal(cut.logp, torch.where(cut.mask, -0.5, 0.0))
    assert cut.completions[0, 1].tolist() == ids(tok, "11")
    plain = [ScoredCompletion(r.prompt, r.completion, r.reward) for r in recs]
    nolp = encode_logged(tok, group_logged(read_logged(write_logged(tmp_path / "plain.jsonl", plain))))
    assert nolp.logp is None and nolp.completions[0, 2].tolist() == ids(tok, "3") + [eos, pad]


def test_logged_chat_prompts_group_by_their_messages(tmp_path):
    chat = bpe_tokenizer(TEXTS, vocab_size=300, kind="bytelevel", chat_template=True)
    chat.pad_token = chat.eos_token
    a, b = [{"role": "user", "content": "12+34="}], [{"role": "user", "content": "hello"}]
    recs = [ScoredCompletion(a, "46", 1.0), ScoredCompletion(b, " world", 0.5), ScoredCompletion(a, "47", 0.0)]
    back = read_logged(write_logged(tmp_path / "chat.jsonl", recs))
    groups = group_logged(back)
    assert [(p, len(g)) for p, g in groups] == [(a, 2), (b, 1)]
    batch = encode_logged(chat, groups)
    assert batch.shape[:2] == (2, 2) and batch.valid.tolist() == [[True, True], [True, False]]
    assert decode_completions(chat, batch.completions, batch.mask, batch.prompts)[0] == ["46", "47"]


def test_logp_of_another_length_is_refused_naming_the_prompt_row_and_lengths(tok, tmp_path):
    recs = records(tok)
    recs[2] = ScoredCompletion("1+1=", "11", 0.0, [-0.1] * 7)
    back = read_logged(write_logged(tmp_path / "bad.jsonl", recs))
    with pytest.raises(ValueError, match=r"^prompt 0 \('1\+1='\), completion 1 \(row 2\): logp has 7 entries, but "
                                         r"the completion '11' is 2 tokens \(3 with its EOS\)") as e:
        encode_logged(tok, group_logged(back))
    assert "another tokenizer" in str(e.value) and "\n" not in str(e.value)
    recs[2] = ScoredCompletion("1+1=", "1" * 50, 0.0, [-0.1] * 3)
    with pytest.raises(ValueError, match=r"completion 1: logp has 3 entries, but the completion '1111.*' is more "
                                         r"than 3 tokens"):
        encode_logged(tok, group_logged(recs))
    recs[2] = ScoredCompletion("1+1=", "11", 0.0)
    with pytest.raises(ValueError, match=r"^prompt 0 \('1\+1='\), completion 1: has no logp, but prompt 0"):
        encode_logged(tok, group_logged(recs))


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = '{"prompt": "1+1=", "completion": "2", "reward": 1}'


@pytest.mark.parametrize("bad, message", [
    ('{"prompt": "1+1=", "completion": "2", "score": 1}',
     r"row 1 \(line 2\): no 'reward' \(the row has \['completion', 'prompt', 'score'\]\)"),
    ('{"prompt": "1+1=", "completion": "2", "reward": NaN}',
     r"row 1 \(line 2\): reward=nan is not allowed; a reward is a finite"),
    ('{"prompt": "1+1=", "completion": "2", "reward": "high"}', r"row 1 \(line 2\): reward='high' is not allowed"),
    ('{"prompt": "1+1=", "completion": "2", "reward": true}', r"row 1 \(line 2\): reward=True is not allowed"),
    ('{"prompt": "1+1=", "completion": "2", "reward": null}', r"row 1 \(line 2\): reward is missing"),
    ('{"prompt": "", "completion": "2", "reward": 1}', r"row 1 \(line 2\): prompt='' is not allowed"),
    ('{"prompt": "1+1=", "completion": ["2"], "reward": 1}', r"row 1 \(line 2\): completion=\['2'\] is not allowed"),
    ('{"prompt": "1+1=", "completion": "2", "reward": 1, "logp": [-0.1, 0.2]}',
     r"row 1 \(line 2\): logp\[1\]=0.2 is not allowed; a log-prob is a finite number ≤ 0"),
    ('{"prompt": "1+1=", "completion": "2", "reward": 1, "logp": "x"}', r"row 1 \(line 2\): logp='x' is not allowed"),
    ('{"prompt": "1+1=", "completion": "2", "reward": 1, "logp": []}', r"row 1 \(line 2\): logp=\[\] is not allowed"),
    ('["1+1=", "2", 1]', r"row 1 \(line 2\): a list, not a JSON object"),
    ('{"prompt": "1+1=", ', r"row 1 \(line 2\): not valid JSON"),
])
def test_every_read_error_names_the_file_and_row(tmp_path, bad, message):
    path = write_lines(tmp_path / "logged.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(ValueError, match=rf"^logged data '{path}', {message}") as e:
        read_logged(path)
    assert "\n" not in str(e.value)


def test_read_errors_for_the_file_as_a_whole(tmp_path):
    mixed = write_lines(tmp_path / "mixed.jsonl", [GOOD[:-1] + ', "logp": [-1, 0]}', GOOD])
    with pytest.raises(ValueError, match=rf"^logged data '{mixed}', row 1 \(line 2\): has no logp, but logged data "
                                         rf"'{mixed}', row 0 \(line 1\) has one"):
        read_logged(mixed)
    for blank in (write_lines(tmp_path / "blank.jsonl", ["", "  "]), write_lines(tmp_path / "empty.csv", []),
                  write_lines(tmp_path / "header.csv", ["prompt,completion,reward", ""])):
        with pytest.raises(ValueError, match=rf"^logged data '{blank}' holds no rows"):
            read_logged(blank)
    csv = write_lines(tmp_path / "logged.csv", ["prompt,completion,score", "1+1=,2,1"])
    with pytest.raises(ValueError, match=rf"^logged data '{csv}' has no 'reward' column \(its columns: \['prompt', "
                                         r"'completion', 'score'\]\)"):
        read_logged(csv)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_logged(tmp_path / "missing.jsonl")


def test_csv_reads_through_datasets_with_logp_as_json_text(tok, tmp_path):
    csv = write_lines(tmp_path / "logged.csv", ['prompt,completion,reward,logp,answer',
                                                '1+1=,2,1.0,"[-0.5, -0.25]",2',
                                                '1+1=,11,0,"[-1, -1, -1]",2'])
    recs = read_logged(csv)
    assert recs == [ScoredCompletion("1+1=", "2", 1.0, [-0.5, -0.25], {"answer": 2}),
                    ScoredCompletion("1+1=", "11", 0.0, [-1.0, -1.0, -1.0], {"answer": 2})]
    b = encode_logged(tok, group_logged(recs))
    assert b.logp[0, 0].tolist() == [-0.5, -0.25, 0.0]
    bad = write_lines(tmp_path / "bad.csv", ["prompt,completion,reward", "1+1=,2,1", "1+1=,3,"])
    with pytest.raises(ValueError, match=rf"^logged data '{bad}', row 1: reward is missing"):
        read_logged(bad)


def test_write_refuses_what_read_would_refuse_and_leaves_no_file(tmp_path):
    path = tmp_path / "logged.jsonl"
    with pytest.raises(ValueError, match=r"record 1: reward=nan is not allowed"):
        write_logged(path, [ScoredCompletion("a", "b", 1.0), ScoredCompletion("a", "c", math.nan)])
    with pytest.raises(ValueError, match=r"record 0: columns=.* without the names"):
        write_logged(path, [ScoredCompletion("a", "b", 1.0, columns={"reward": 2})])
    with pytest.raises(ValueError, match="no records"):
        write_logged(path, [])
    assert not path.exists() and list(tmp_path.iterdir()) == []
    write_logged(path, [ScoredCompletion("a", "b", 1)])
    write_logged(path, [ScoredCompletion("a", "c", 2)])                       # replaced whole
    assert read_logged(path) == [ScoredCompletion("a", "c", 2.0)]


def test_encode_logged_refuses_groups_it_cannot_use(tok):
    with pytest.raises(ValueError, match="no groups"):
        encode_logged(tok, [])
    with pytest.raises(ValueError, match=r"group 0 is \('1=', \[\]\)"):
        encode_logged(tok, [("1=", [])])
    with pytest.raises(ValueError, match=r"^prompt 0 \(.1=.\), completion 0: the prompt \(2 tokens\) and the "
                                         r"completion \(3 tokens\) make 5, over the model's context of 4"):
        encode_logged(tok, [("1=", [ScoredCompletion("1=", "12", 1.0)])], context=4)
