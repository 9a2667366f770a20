"""Models: build a tiny GPT-2 locally, or load any causal-LM checkpoint by path or hub id.

Everything goes through Hugging Face ``transformers``, so a tiny model trained here and saved with
``save_pretrained`` loads exactly like ``gpt2`` does for a user who has the hub.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → the first of cuda, mps, cpu that is present; otherwise the named device."""
    if name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ValueError(f"device={name!r} is not a torch device; use auto, cpu, cuda, cuda:0, mps, …")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but torch sees no CUDA GPU here; use device=auto or cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class TinyGPT2:
    """Shape of a from-scratch GPT-2 small enough to train on a laptop CPU in minutes."""

    n_layer: int = 2           # transformer blocks
    n_embd: int = 96           # width of the residual stream (a multiple of n_head)
    n_head: int = 4            # attention heads
    n_positions: int = 48      # context length in tokens: the longest prompt + completion it can hold

    def config(self, tokenizer):
        from transformers import GPT2Config

        return GPT2Config(vocab_size=len(tokenizer), n_positions=self.n_positions, n_embd=self.n_embd,
                          n_layer=self.n_layer, n_head=self.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)


def build_tiny_gpt2(tokenizer, shape: TinyGPT2 = TinyGPT2(), seed: int = 0):
    """A randomly initialised ``GPT2LMHeadModel`` for ``tokenizer``'s vocabulary (seeded, reproducible)."""
    from transformers import GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(shape.config(tokenizer))


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' own progress bars (loading/saving shards) while inside; restore after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def looks_like_path(name: str, file_suffixes=()) -> bool:
    """Whether a name that does not exist was meant as a local path rather than a hub id. A hub id is
    ``name`` or ``owner/name`` and may hold dots (``Qwen/Qwen2.5-0.5B``); a path starts with ``.``, ``/``
    or ``~``, has a backslash or two slashes, ends in one of ``file_suffixes``, or is a bare name with a
    suffix (``model.bin``)."""
    suffix = Path(name).suffix.lower()
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or suffix in file_suffixes
            or ("/" not in name and suffix != ""))


def load_causal_lm(name_or_path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local folder written by ``save_pretrained`` (or a training run's folder:
    its newest checkpoint) or a hub id (``gpt2``).

    Any causal-LM architecture (GPT-2, Llama, Qwen2, …) with its own tokenizer. A tokenizer without a
    pad token gets its EOS as pad (GPT-2's usual arrangement), and so do the model's config and
    generation config when they name no pad; a tokenizer without an EOS is refused (see
    ``tokens.check_tokenizer``). Padding is on the left.
    """
    from transformers import AutoModelForCausalLM

    from minigrpo.lm.tokens import check_tokenizer

    name = str(name_or_path)
    path = newest_checkpoint(Path(name).expanduser())
    if not path.exists() and looks_like_path(name):
        raise FileNotFoundError(f"model checkpoint path {name!r} does not exist; give a folder written by "
                                "save_pretrained (e.g. assets/anchors/addition) or a hub id such as gpt2")
    if path.exists():
        check_causal_lm_folder(path, name)
        check_tokenizer_files(path, name)
    src = str(path) if path.exists() else name
    try:
        with quiet_transformers(), loading(path, name, "tokenizer"):
            tokenizer = load_tokenizer(src)
        with quiet_transformers(), loading(path, name, "weights"):
            model = AutoModelForCausalLM.from_pretrained(src, **({"dtype": dtype} if dtype else {}))
    except OSError as e:                       # a hub id (a local folder's failures are ValueErrors: ``loading``)
        raise OSError(f"could not load model {name!r}: no local folder by that name, and the Hugging Face hub "
                      f"did not provide it ({str(e).splitlines()[0]}). Pass a local save_pretrained folder") from e
    if path.exists():
        check_vocabulary(tokenizer, model, name)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    check_tokenizer(tokenizer)
    tokenizer.padding_side = "left"
    for config in (model.config, model.generation_config):   # in transformers 5 not every config declares a pad
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")
NOT_CAUSAL = {"ForSequenceClassification": "a sequence-classification model",
              "ForTokenClassification": "a token-classification model",
              "ForQuestionAnswering": "a question-answering model",
              "ForMaskedLM": "a masked LM",
              "ForMultipleChoice": "a multiple-choice model",
              "ForConditionalGeneration": "an encoder-decoder or multimodal model",
              "ForSeq2SeqLM": "a sequence-to-sequence model",
              "ForImageClassification": "an image-classification model",
              "ForAudioClassification": "an audio-classification model"}


def check_causal_lm_folder(path: Path, name: str | None = None) -> None:
    """Refuse, in one line naming the folder and the part that is wrong, a local ``--model`` that is
    not a causal LM's ``save_pretrained`` folder: not a folder, no config.json, a config.json that is
    not a JSON object, no weights file (``*.safetensors``/``*.bin``), or an architecture that does not
    generate text — ``architectures`` naming a ``…ForSequenceClassification`` (the shipped reward
    models) or another head, or a model type transformers' ``AutoModelForCausalLM`` has no class for.
    Read from config.json alone, before any weight is loaded."""
    import json

    name = name or str(path)
    if not path.is_dir():
        raise NotADirectoryError(f"--model {name!r} is a file, not a model folder; give a folder written by "
                                 "save_pretrained (config.json + weights)")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"model folder {name!r} has no config.json; it is not a save_pretrained folder "
                                "(give a folder with config.json and weights, e.g. a minigrpo sft anchor)")
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"model folder {name!r}: config.json is not valid JSON ({e}); re-save the model with "
                         "save_pretrained") from None
    if not isinstance(meta, dict):
        raise ValueError(f"model folder {name!r}: config.json holds a {type(meta).__name__}, not a JSON object")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_FILES):
        raise FileNotFoundError(f"model folder {name!r} has config.json but no weights (no *.safetensors or *.bin "
                                "file); copy the weights in, or re-save the model with save_pretrained")
    archs = meta.get("architectures") or []
    archs = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    causal = any(arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel") for arch in archs)
    for arch in archs if not causal else ():
        for suffix, what in NOT_CAUSAL.items():
            if arch.endswith(suffix):
                raise ValueError(f"model folder {name!r} is {what} ({arch}), not a causal LM; --model wants a causal "
                                 "LM (architectures …ForCausalLM/…LMHeadModel) such as a minigrpo sft anchor "
                                 "(minigrpo sft) or a hub model like gpt2")
    model_type = meta.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"model folder {name!r}: config.json names no model_type; it is not a transformers "
                         "model config (re-save the model with save_pretrained)")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    auto_map = meta.get("auto_map")
    if isinstance(auto_map, dict) and "AutoModelForCausalLM" in auto_map:       # the model's own code says
        return
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"model folder {name!r}: model_type={model_type!r} has no causal-LM class in transformers "
                         f"(architectures {archs or 'not given'}); --model wants a causal LM such as a minigrpo sft "
                         "anchor or gpt2")


def check_tokenizer_files(path: Path, name: str) -> None:
    """Refuse a model folder with no tokenizer file, naming it and the files looked for."""
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"model folder {name!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                                "save the tokenizer beside the model: tokenizer.save_pretrained(folder)")


@contextlib.contextmanager
def loading(path: Path, name: str, part: str):
    """Turn a local folder's failure to load ``part`` (a damaged safetensors header, a pickle that is not a
    checkpoint, a tokenizer.json that is not JSON, transformers' refusal of a config) into one ValueError
    naming the folder, the part and the files it holds. Errors loading a hub id pass through."""
    try:
        yield
    except Exception as e:
        if not path.exists():
            raise
        files = ", ".join(sorted(p.name for p in path.iterdir() if p.is_file())) or "none"
        raise ValueError(f"model folder {name!r}: its {part} did not load ({type(e).__name__}: "
                         f"{(str(e).strip().splitlines() or [''])[0][:200]}); the files may be damaged or incomplete "
                         f"(it holds: {files}); re-save the model with save_pretrained") from None


def check_vocabulary(tokenizer, model, name: str) -> None:
    """Refuse a tokenizer whose ids the model's embedding does not have (a tokenizer.json saved without its
    tokenizer_config.json can add special tokens past the vocabulary): one line naming the folder."""
    embedding = model.get_input_embeddings()
    rows = getattr(embedding, "num_embeddings", None)
    ids = [i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) if i is not None]
    top = max([len(tokenizer) - 1, *ids])
    if rows is not None and top >= rows:
        raise ValueError(f"model folder {name!r}: its tokenizer gives token ids up to {top}, but the model's embedding "
                         f"has {rows} rows; the tokenizer files do not belong to these weights (is "
                         "tokenizer_config.json missing?); re-save both with save_pretrained")


def newest_checkpoint(path: Path) -> Path:
    """A training run's folder (or its ``checkpoints/latest`` pointer) → the checkpoint folder ``latest``
    names, so ``--model runs/train-…`` starts from where that run ended; any other path as it is."""
    pointer = path / "checkpoints" / "latest" if path.is_dir() else path
    if pointer.name == "latest" and pointer.is_file():
        return pointer.parent / pointer.read_text().strip()
    return path


def load_tokenizer(src: str):
    """The tokenizer of a folder or hub id. A folder whose ``tokenizer_config.json`` names the generic
    class (``TokenizersBackend``/``PreTrainedTokenizerFast``) loads its ``tokenizer.json`` as written:
    ``AutoTokenizer`` in transformers 5 would otherwise, for some model types (qwen2, phi3, …), swap
    in that architecture's own tokenizer class, which rebuilds the pre-tokenizer and special tokens
    and so encodes a custom tokenizer's text differently from how it was saved."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(src)
    if (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file():
        declared = json.loads((folder / "tokenizer_config.json").read_text()).get("tokenizer_class")
        if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(src)
    return AutoTokenizer.from_pretrained(src)


def add_lora(model, r: int = 8, alpha: int | None = None, target_modules=None):
    """Wrap ``model`` with a peft LoRA adapter of rank r: only the adapter trains, and the anchor is
    the same model with the adapter switched off (``CausalLMPolicy.anchor``)."""
    if not (isinstance(r, int) and r >= 1):
        raise ValueError(f"lora rank r={r!r} must be an integer ≥ 1")
    from peft import LoraConfig, get_peft_model

    if target_modules is None and getattr(model.config, "model_type", None) == "gpt2":
        target_modules = ["c_attn", "c_proj", "c_fc"]
    cfg = LoraConfig(r=r, lora_alpha=alpha or 2 * r, target_modules=target_modules, lora_dropout=0.0,
                     task_type="CAUSAL_LM", fan_in_fan_out=getattr(model.config, "model_type", None) == "gpt2")
    return get_peft_model(model, cfg)
