"""Tokens: a character-level tokenizer built locally, and text ↔ id batches in the P × G × T layout.

``char_tokenizer`` builds a Hugging Face ``PreTrainedTokenizerFast`` (from the ``tokenizers``
library) whose tokens are single characters, plus ``<pad>`` (id 0) and ``<eos>`` (id 1). It saves
with ``save_pretrained`` and loads with ``AutoTokenizer.from_pretrained`` like any tokenizer, so
the tiny model and GPT-2 go through the same code.
"""
from __future__ import annotations

import torch
from torch import Tensor

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def char_tokenizer(alphabet: str, vocab_size: int | None = None):
    """A tokenizer with one token per character of ``alphabet`` (ids 3…), <pad>=0, <eos>=1, <unk>=2.

    ``vocab_size`` pads the vocabulary with unused tokens ``<x0>``, ``<x1>``, … up to that size, so a
    model built for it has a real model's embedding and output layer (50257 for GPT-2) while prompts
    stay character-level (the benchmark uses this). Text never encodes to them; they decode as written.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from minigrpo.core.validate import is_int

    chars = sorted(set(alphabet))
    if not chars:
        raise ValueError("char_tokenizer: alphabet='' is empty; give the characters the task uses")
    vocab = {PAD: 0, EOS: 1, UNK: 2} | {c: i + 3 for i, c in enumerate(chars)}
    if vocab_size is not None:
        if not (is_int(vocab_size) and vocab_size >= len(vocab)):
            raise ValueError(f"char_tokenizer: vocab_size={vocab_size!r} must be an integer ≥ {len(vocab)} (the "
                             "alphabet's characters plus <pad>, <eos>, <unk>), or None")
        vocab |= {f"<x{i}>": i for i in range(len(vocab), vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # every character a token, newlines too (Oniguruma's (?m): "." matches a newline)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()                                                # join without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   padding_side="left", clean_up_tokenization_spaces=False)


def check_tokenizer(tokenizer) -> None:
    """GRPO needs an EOS (to end completions) and a pad id (to fill the P × G × T grid)."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token (eos_token_id=None); completions "
                         "could never end. Set tokenizer.eos_token, e.g. tokenizer.add_special_tokens"
                         "({'eos_token': '<eos>'}) and resize the model's embeddings")
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token (pad_token_id=None); set one, e.g. "
                         "tokenizer.pad_token = tokenizer.eos_token (the usual choice for GPT-2)")


def encode_prompts(tokenizer, texts: list[str]) -> Tensor:
    """Prompt texts → left-padded ids (P, L). No special tokens are added."""
    check_tokenizer(tokenizer)
    if len(texts) == 0:
        raise ValueError("encode_prompts: no prompts (texts=[]); give at least one prompt")
    rows = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if any(len(r) == 0 for r in rows):
        i = next(i for i, r in enumerate(rows) if len(r) == 0)
        raise ValueError(f"encode_prompts: prompt {i} ({texts[i]!r}) encodes to no tokens; prompts must be non-empty")
    L = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return torch.tensor([[pad] * (L - len(r)) + r for r in rows], dtype=torch.long)


def encode_completions(tokenizer, groups: list[list[str]], T: int | None = None) -> Tensor:
    """Completion texts [P][G] → ids (P, G, T), each ended by EOS and padded after it — the layout the
    sampler returns, for scoring hand-written completions. T defaults to the longest; longer ones are cut."""
    check_tokenizer(tokenizer)
    if not groups or not groups[0] or any(len(g) != len(groups[0]) for g in groups):
        raise ValueError("encode_completions: give P groups of the same size G ≥ 1 (a list of lists of texts)")
    rows = [[tokenizer.encode(c, add_special_tokens=False) + [tokenizer.eos_token_id] for c in g] for g in groups]
    T = T or max(len(r) for g in rows for r in g)
    ids = torch.full((len(rows), len(rows[0]), T), tokenizer.pad_token_id, dtype=torch.long)   # (P, G, T)
    for p, g in enumerate(rows):
        for j, r in enumerate(g):
            ids[p, j, :min(len(r), T)] = torch.tensor(r[:T], dtype=torch.long)
    return ids


def left_pad(ids: Tensor, attention_mask: Tensor, pad_id: int) -> Tensor:
    """A right-padded (or arbitrarily padded) batch (P, L) with its attention mask → left-padded ids (P, L):
    each row's real tokens moved to the end, in order."""
    P, L = ids.shape
    keep = attention_mask.bool()
    order = torch.sort(keep.long(), dim=1, stable=True).indices        # pads first, then tokens in order
    out = ids.gather(1, order)
    return out.masked_fill(~keep.gather(1, order), pad_id)


def decode_completions(tokenizer, completions: Tensor, mask: Tensor, prompts: Tensor | None = None) -> list[list[str]]:
    """Completion ids (P, G, T) → texts [P][G], without the EOS and the padding.

    With ``prompts`` (P, L), left-padded: each text is exactly what the model wrote after its prompt,
    decode(prompt + completion) with the decoded prompt cut off its front. Decoding a completion
    alone can differ, by the tokenizer's own rules: SentencePiece-style decoders drop the "▁" space
    of the first token, so a completion " 42" would read "42". Where the decoded prompt is not a
    prefix of the decoded whole (a prompt cut inside a UTF-8 character, whose last bytes only make a
    character together with the completion's first), the completion is decoded alone. Without
    ``prompts``, every completion is decoded alone. No ``clean_up_tokenization_spaces`` either way.
    """
    P, G, T = completions.shape
    keep = mask & (completions != tokenizer.eos_token_id)
    ids = [[t for t, k in zip(row, ks) if k]
           for row, ks in zip(completions.reshape(P * G, T).tolist(), keep.reshape(P * G, T).tolist())]  # P·G rows
    if prompts is None:
        texts = decode_rows(tokenizer, ids)
    else:
        heads = real_prompt_ids(tokenizer, prompts)                                       # P rows
        head_texts = [h for h in decode_rows(tokenizer, heads) for _ in range(G)]         # P·G, prompt-major
        whole = decode_rows(tokenizer, [heads[i // G] + row for i, row in enumerate(ids)])  # P·G rows
        texts = [w[len(h):] if w.startswith(h) else None for w, h in zip(whole, head_texts)]
        redo = [i for i, t in enumerate(texts) if t is None]        # the decoded prompt is not a prefix
        for i, text in zip(redo, decode_rows(tokenizer, [ids[i] for i in redo])):
            texts[i] = text
    return [texts[p * G:(p + 1) * G] for p in range(P)]


def decode_rows(tokenizer, rows: list[list[int]]) -> list[str]:
    """Rows of ids → texts by the tokenizer's own decoder: special tokens kept as text, no clean-up of
    spaces. A Rust-backed tokenizer decodes each row straight in ``tokenizers``: the same call its
    ``decode`` makes, without transformers' check of every id in Python first (for 128 rows of 90 ids,
    3 ms against 7 ms on a CPU). Row by row, not ``decode_batch``: no thread pool for the same time."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tokenizer, PreTrainedTokenizerFast):
        backend = tokenizer.backend_tokenizer
        return [backend.decode(row, skip_special_tokens=False) for row in rows]
    return tokenizer.batch_decode(rows, clean_up_tokenization_spaces=False)


def real_prompt_ids(tokenizer, prompts: Tensor) -> list[list[int]]:
    """Left-padded prompt ids (P, L) → each prompt's ids without the left padding."""
    from minigrpo.lm.policy import prompt_mask

    mask = prompt_mask(prompts, tokenizer.pad_token_id).tolist()
    return [[t for t, m in zip(row, ms) if m] for row, ms in zip(prompts.tolist(), mask)]


def decode_prompts(tokenizer, prompts: Tensor) -> list[str]:
    """Left-padded prompt ids (P, L) → texts (``decode_prompts(…)[p] + decode_completions(…, prompts)[p][g]``
    is the decoded whole row)."""
    return decode_rows(tokenizer, real_prompt_ids(tokenizer, prompts))


def step_ids(tokenizer, completions: Tensor, mask: Tensor, separators: str = ",") -> Tensor:
    """The reasoning step of each completion token, (P, G, T) long; −1 off the mask (padding).

    The same cut as the step reward's (``rewards.compose.Completions.steps``, which ``checks.step_checks``
    uses with ``separators=","`` on the chain task): a step ends at the token that holds its separator,
    the last one at the EOS. So token t is in step s = the number of separators in the tokens before it,
    and ``"12,9,17⏎"`` → ``[0, 0, 0, 1, 1, 2, 2, 2]``. A token holding several separators (a BPE merge)
    closes several steps at once; the steps it skips have no token."""
    P, G, T = completions.shape
    eos = tokenizer.eos_token_id
    ids = completions.unique().tolist()
    count = {i: 0 if i == eos else sum(tokenizer.decode([i]).count(c) for c in separators) for i in ids}
    table = torch.zeros(max(ids) + 1, dtype=torch.long)
    table[torch.tensor(list(count))] = torch.tensor(list(count.values()), dtype=torch.long)
    seps = table[completions.cpu()].to(completions.device) * mask                # (P, G, T) separators per token
    before = seps.cumsum(-1) - seps                                              # exclusive: separators before t
    return torch.where(mask.bool(), before, -1)
