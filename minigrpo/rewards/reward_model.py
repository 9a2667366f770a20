"""A reward model trained from preferences (Bradley–Terry), and the reward component that uses it.

The model r_φ(x, y) is a transformer with a scalar head (Hugging Face ``…ForSequenceClassification``
with one label): it reads prompt and completion and outputs one number. Trained on pairs where y_c
was preferred to y_r, it maximises the Bradley–Terry likelihood

    P(y_c ≻ y_r | x) = σ(r_φ(x, y_c) − r_φ(x, y_r)),   L(φ) = −mean log σ(r_c − r_r)

(Bradley & Terry 1952; Christiano et al. 2017; Ouyang et al. 2022, eq. 1). Only differences matter,
so after training the scores are standardised over the training completions (``offset``, ``scale``)
and a GRPO β means the same thing whatever the model's raw scale.

As in InstructGPT, the model may start from the SFT policy's weights (``from_causal_lm``): it already
reads the task. ``RewardModel.load`` reads any Hugging Face sequence-classification checkpoint folder.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from minigrpo.core.validate import SEED, check_fields, integer, number, setting
from minigrpo.rewards.preferences import PreferencePair


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """L = −mean log σ(r_c − r_r)   (N,), (N,) → scalar. ``logsigmoid`` keeps it finite for any margin."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def pair_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> float:
    """Fraction of pairs the model orders as the rater did (r_c > r_r; a tie counts as wrong)."""
    return (r_chosen > r_rejected).float().mean().item()


def _architectures(path: Path) -> list[str]:
    """The ``architectures`` a folder's config.json names ([] when it names none or does not read)."""
    try:
        archs = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (ValueError, OSError, AttributeError):
        return []
    return [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []


class RewardModel:
    """r_φ(prompt, completion): a sequence classifier with one output, its tokenizer, and the
    standardisation (r − offset)/scale applied by ``scores``."""

    def __init__(self, model, tokenizer, offset: float = 0.0, scale: float = 1.0, label: int | None = None):
        n = model.config.num_labels
        if label is None and n != 1:
            raise ValueError(f"reward model has num_labels={n}; give label=<index> to score by that label's "
                             f"log-probability, or use a model with one output")
        if label is not None and not (0 <= label < n):
            raise ValueError(f"reward model: label={label!r} is not allowed; the model has {n} labels (0…{n - 1})")
        if tokenizer.pad_token_id is None:
            raise ValueError("reward model tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token")
        model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer, self.offset, self.scale, self.label = model, tokenizer, offset, scale, label
        self.max_length = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024)

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def from_causal_lm(cls, path: str | Path, device="cpu", seed: int = 0) -> "RewardModel":
        """Start from a causal LM's weights (e.g. the SFT anchor): the backbone is loaded, the scalar
        head is new (seeded)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from minigrpo.lm.models import loading, quiet_transformers

        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"reward model base {str(path)!r} is not a save_pretrained folder (no config.json)")
        from transformers.utils import logging as hf_logging

        torch.manual_seed(seed)
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()         # the new head is "missing from the checkpoint": by design
        try:
            with quiet_transformers(), loading(path, str(path), "weights"):
                model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        finally:
            hf_logging.set_verbosity(level)
        with loading(path, str(path), "tokenizer"):
            tok = AutoTokenizer.from_pretrained(path)
        return cls(model.to(device), tok)

    @classmethod
    def load(cls, path: str | Path, device="cpu", label: int | None = None) -> "RewardModel":
        """A saved reward model, or any Hugging Face sequence-classification checkpoint folder."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from minigrpo.lm.models import loading, quiet_transformers

        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"reward model {str(path)!r} is not a save_pretrained folder (no config.json)")
        archs = _architectures(path)
        if label is None and any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            raise ValueError(f"reward model {str(path)!r} is a causal LM ({', '.join(archs)}), not a reward model (a "
                             "sequence classifier with one output, as `minigrpo reward-model` writes); give the folder "
                             "a reward-model run wrote")
        with quiet_transformers(), loading(path, str(path), "weights and tokenizer"):
            model = AutoModelForSequenceClassification.from_pretrained(path)
            tok = AutoTokenizer.from_pretrained(path)
        if label is None and model.config.num_labels != 1:
            raise ValueError(f"reward model {str(path)!r} has num_labels={model.config.num_labels}; a reward model "
                             "has one output (give label=<index> from Python to score by one label's log-probability)")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        meta = json.loads((path / "reward_model.json").read_text()) if (path / "reward_model.json").exists() else {}
        rm = cls(model.to(device).eval(), tok, meta.get("offset", 0.0), meta.get("scale", 1.0),
                 label if label is not None else meta.get("label"))
        rm.meta = meta
        return rm

    def save(self, path: str | Path, **meta) -> Path:
        """Save to the folder ``path`` (``save_pretrained`` + ``reward_model.json``), atomically: an earlier
        save there is replaced whole or kept (``lm/saving.py``). Refused (``FloatingPointError``) if a
        weight, the offset or the scale is NaN or ±inf; refused (``PermissionError``) inside the package's
        shipped assets unless ``MINIGRPO_WRITE_ASSETS=1``."""
        from minigrpo.lm.models import quiet_transformers
        from minigrpo.lm.saving import save_folder

        standardise = {"offset": torch.tensor(float(self.offset)), "scale": torch.tensor(float(self.scale))}

        def write(folder: Path) -> None:
            with quiet_transformers():
                self.model.save_pretrained(folder)
                self.tokenizer.save_pretrained(folder)
            (folder / "reward_model.json").write_text(json.dumps(
                {"offset": self.offset, "scale": self.scale, "label": self.label, **meta}, indent=2))
        return save_folder(path, write, [*self.model.state_dict().items(), *standardise.items()])

    # --- scoring ------------------------------------------------------------------------------------
    @property
    def device(self):
        return next(self.model.parameters()).device

    def encode(self, prompts: list[str], completions: list[str]) -> tuple[Tensor, Tensor]:
        """Right-padded ids and attention mask (N, L) of prompt + completion (+ EOS when it differs from
        the pad token, so the head reads a fixed end-of-text position). Tokenized with truncation up
        front (``token_rows``): a long text never yields more than the model's context of ids."""
        tok = self.tokenizer
        eos = [tok.eos_token_id] if tok.eos_token_id is not None and tok.eos_token_id != tok.pad_token_id else []
        rows = [r + eos for r in self.token_rows([p + c for p, c in zip(prompts, completions)], len(eos))]
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros(len(rows), L, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)], att[i, :len(r)] = torch.tensor(r, dtype=torch.long), 1
        return ids.to(self.device), att.to(self.device)

    def token_rows(self, texts: list[str], reserve: int = 0) -> list[list[int]]:
        """Each text's ids, cut to its last ``max_length − reserve`` tokens by the tokenizer itself
        (``truncation=True``, from the left: the completion's end is what the head reads)."""
        tok = self.tokenizer
        side = getattr(tok, "truncation_side", "right")
        tok.truncation_side = "left"
        try:
            return tok(list(texts), add_special_tokens=False, truncation=True,
                       max_length=max(self.max_length - reserve, 1))["input_ids"]
        finally:
            tok.truncation_side = side

    def raw(self, prompts: list[str], completions: list[str]) -> Tensor:
        """r_φ before standardisation (N,), with gradients."""
        ids, att = self.encode(prompts, completions)
        logits = self.model(input_ids=ids, attention_mask=att).logits.float()        # (N, labels)
        return logits[:, 0] if self.label is None else logits.log_softmax(-1)[:, self.label]

    @torch.no_grad()
    def scores(self, prompts: list[str], completions: list[str], batch_size: int = 256) -> Tensor:
        """(r_φ − offset)/scale for each (prompt, completion) (N,), on the CPU."""
        was = self.model.training
        self.model.eval()
        out = [self.raw(prompts[i:i + batch_size], completions[i:i + batch_size]).cpu()
               for i in range(0, len(prompts), batch_size)]
        self.model.train(was)
        return (torch.cat(out) - self.offset) / self.scale

    def evaluate(self, pairs: list[PreferencePair]) -> float:
        """Held-out pair accuracy."""
        rc = self.scores([p.prompt for p in pairs], [p.chosen for p in pairs])
        rr = self.scores([p.prompt for p in pairs], [p.rejected for p in pairs])
        return pair_accuracy(rc, rr)


@dataclass
class RMTrainConfig:
    """Settings of Bradley–Terry training (validated on construction)."""

    steps: int = setting(300, integer(1))        # optimizer steps
    batch_size: int = setting(64, integer(1))    # pairs per step
    lr: float = setting(1e-3, number(gt=0))      # AdamW learning rate (5% warm-up, then constant)
    seed: int = setting(0, SEED)                 # batch order
    eval_every: int = setting(50, integer(1))    # held-out pair accuracy every N steps

    def __post_init__(self):
        check_fields(self)


def distinct_pairs(rm: RewardModel, pairs: list[PreferencePair], strict: bool = True,
                   skipped: Counter | None = None) -> list[PreferencePair]:
    """The pairs whose chosen and rejected the reward model can tell apart: prompt + chosen and prompt +
    rejected must tokenize (as ``RewardModel.encode`` reads them) to different ids. A pair that does not
    — "✓" vs "✗" under a character tokenizer that knows neither, both ``<unk>`` — would be scored a tie
    forever and count as wrong. ``strict``: such a pair raises a ValueError naming where it was read
    and both texts; otherwise it is dropped and counted in ``skipped``."""
    if not pairs:
        return pairs
    chosen = rm.token_rows([p.prompt + p.chosen for p in pairs])
    rejected = rm.token_rows([p.prompt + p.rejected for p in pairs])
    kept = []
    for p, a, b in zip(pairs, chosen, rejected):
        if a != b:
            kept.append(p)
            continue
        if strict:
            clip = lambda t: repr(t) if len(repr(t)) <= 40 else repr(t)[:39] + "…"
            raise ValueError(f"{p.where or 'a preference pair'}: chosen {clip(p.chosen)} and rejected "
                             f"{clip(p.rejected)} differ, but the reward model's tokenizer maps them to the same "
                             "token ids (characters it does not know, e.g. both <unk>, or a difference past its "
                             "context), so the pair states no preference it can learn; fix or drop the pair "
                             "(--skip-bad skips such pairs)")
        if skipped is not None:
            skipped["same token ids"] += 1
    return kept


def train_reward_model(rm: RewardModel, pairs: list[PreferencePair], test_pairs: list[PreferencePair] | None = None,
                       cfg: RMTrainConfig | None = None, on_eval=None, skip_bad: bool | None = None) -> list[dict]:
    """Fit r_φ to ``pairs`` with the Bradley–Terry loss; return the history (loss, train accuracy, and
    held-out pair accuracy every ``eval_every`` steps). Sets the standardisation from the training
    completions at the end. A NaN or ±inf loss or gradient norm raises ``FloatingPointError`` (naming the
    step and ``lr``) before the optimizer touches the weights, as do scores that are not finite at the end.

    Pairs the model's tokenizer cannot tell apart are refused first (``distinct_pairs``); with
    ``skip_bad`` (default: ``cfg.skip_bad`` where the config has it, as ``RewardModelJob`` does) they are
    dropped, counted in ``rm.skipped`` and reported in one warning; ``rm.pairs_used`` is then (training
    pairs, held-out pairs) left."""
    cfg = cfg or RMTrainConfig()
    if not pairs:
        raise ValueError("train_reward_model: no preference pairs to train on (pairs=[])")
    skip_bad = bool(getattr(cfg, "skip_bad", False)) if skip_bad is None else skip_bad
    rm.skipped = Counter()
    pairs = distinct_pairs(rm, pairs, not skip_bad, rm.skipped)
    test_pairs = distinct_pairs(rm, list(test_pairs or []), not skip_bad, rm.skipped) or None
    rm.pairs_used = (len(pairs), len(test_pairs or []))          # (train, held out), after the skips
    if rm.skipped:
        warnings.warn(f"skipped {rm.skipped['same token ids']} preference pair(s) whose chosen and rejected the "
                      "reward model's tokenizer maps to the same token ids (--skip-bad)")
    if not pairs:
        raise ValueError("reward-model: every training pair's chosen and rejected tokenize to the same ids under "
                         "the reward model's tokenizer; no pair is left to train on")
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in rm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warm))
    rm.model.train()
    from minigrpo.lm.policy import disable_dropout
    from minigrpo.lm.sft import diverged

    disable_dropout(rm.model)
    history, t0 = [], time.perf_counter()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, len(pairs), (min(cfg.batch_size, len(pairs)),), generator=gen).tolist()
        batch = [pairs[i] for i in idx]
        prompts = [p.prompt for p in batch]
        r = rm.raw(prompts + prompts, [p.chosen for p in batch] + [p.rejected for p in batch])   # (2N,)
        rc, rr = r[:len(batch)], r[len(batch):]
        loss = bradley_terry_loss(rc, rr)
        if not torch.isfinite(loss):
            raise FloatingPointError(diverged("the reward model's loss", loss.item(), step, cfg.steps, cfg.lr))
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if not torch.isfinite(norm):         # clipping a NaN gradient leaves NaN: the step would write it in
            raise FloatingPointError(diverged("the gradient norm", norm.item(), step, cfg.steps, cfg.lr))
        opt.step()
        sched.step()
        rec = {"step": step, "loss": loss.item(), "train_accuracy": pair_accuracy(rc.detach(), rr.detach())}
        if test_pairs and (step % cfg.eval_every == 0 or step == cfg.steps):
            rec["test_accuracy"] = rm.evaluate(test_pairs)
            if on_eval is not None:
                on_eval(rec)
        history.append(rec)
    texts = [(p.prompt, c) for p in pairs[:2000] for c in (p.chosen, p.rejected)]
    rm.offset, rm.scale = 0.0, 1.0
    s = rm.scores([t[0] for t in texts], [t[1] for t in texts])
    rm.offset, rm.scale = s.mean().item(), max(s.std().item(), 1e-6)
    if not (math.isfinite(rm.offset) and math.isfinite(rm.scale)):    # finite loss, yet scores that overflow
        raise FloatingPointError(f"training diverged: after {cfg.steps} steps the reward model's scores are not finite "
                                 f"(mean {rm.offset}, std {rm.scale}); the learning rate lr={cfg.lr} (--lr) is the "
                                 "likely cause: lower it")
    rm.train_seconds = time.perf_counter() - t0
    return history


class RewardModelReward:
    """A ``protocols.RewardComponent``: r = the reward model's standardised score of (prompt, completion)."""

    def __init__(self, rm: RewardModel, name: str = "reward_model"):
        self.rm, self.name = rm, name

    @classmethod
    def load(cls, path: str | Path, device="cpu", **kwargs) -> "RewardModelReward":
        return cls(RewardModel.load(path, device=device), **kwargs)

    def score(self, batch) -> Tensor:
        P, G, T = batch.shape
        prompts = [batch.prompts[p] for p in range(P) for _ in range(G)]
        texts = [batch.texts[p][g] for p in range(P) for g in range(G)]
        return self.rm.scores(prompts, texts).view(P, G)                               # (P,G)
