"""Tiny Hugging Face models and tokenizers built locally, in the shapes users bring (no download).

* ``bpe_tokenizer(texts, kind=...)``: a BPE tokenizer trained here with the ``tokenizers`` library —
  "bytelevel" is GPT-2's arrangement (byte-level BPE, ``<|endoftext|>`` as EOS, no pad token),
  "metaspace" is SentencePiece's as Llama uses it (words start with "▁", ``<s>``/``</s>``/``<unk>``,
  no pad token); ``chat_template=True`` adds a ChatML template whose end-of-turn ``<|im_end|>`` is the
  EOS (as Qwen2-Instruct does).
* ``tiny_gpt2``, ``tiny_llama``, ``tiny_qwen2``: seeded, randomly initialised, two-layer models sized
  to the tokenizer (Llama and Qwen2 with rotary positions and grouped key/value heads).
* ``save_model``: both into one folder, what a user passes as ``--model``.
"""
from __future__ import annotations

from pathlib import Path

import torch

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def bpe_tokenizer(texts: list[str], vocab_size: int = 300, kind: str = "bytelevel", chat_template: bool = False):
    """A ``PreTrainedTokenizerFast`` with a BPE model trained on ``texts`` (kind: bytelevel | metaspace)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    chat = ["<|im_start|>", "<|im_end|>"] if chat_template else []
    if kind == "bytelevel":
        specials = {"eos_token": "<|endoftext|>"}
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif kind == "metaspace":
        specials = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        alphabet = []
    else:
        raise ValueError(f"bpe_tokenizer: kind={kind!r} is not allowed; use 'bytelevel' or 'metaspace'")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials.values()) + chat,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **specials)
    if chat_template:
        out.add_special_tokens({"additional_special_tokens": chat, "eos_token": "<|im_end|>"})
        out.chat_template = CHATML
    return out


def _ids(tokenizer) -> dict:
    return dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_gpt2(tokenizer, seed: int = 0):
    """A two-layer GPT-2 (d=32, 4 heads, 128 positions) for ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = _ids(tokenizer)
    ids["bos_token_id"] = ids["bos_token_id"] if ids["bos_token_id"] is not None else ids["eos_token_id"]
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    return _seeded(lambda: GPT2LMHeadModel(cfg), seed)


def tiny_llama(tokenizer, seed: int = 0):
    """A two-layer Llama (d=32, 4 query heads sharing 2 key/value heads, rotary, 128 positions)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, **_ids(tokenizer))
    return _seeded(lambda: LlamaForCausalLM(cfg), seed)


def tiny_qwen2(tokenizer, seed: int = 0):
    """A two-layer Qwen2 (d=32, 4 query heads sharing 2 key/value heads, rotary, q/k/v bias, 128 positions)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, **_ids(tokenizer))
    return _seeded(lambda: Qwen2ForCausalLM(cfg), seed)


def save_model(model, tokenizer, path) -> str:
    """``save_pretrained`` the model and its tokenizer into ``path``; returns the folder as a string."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
