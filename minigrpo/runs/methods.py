"""How each method takes one step of a language-model run; ``lm_run.train_lm`` keeps the loop.

===============  ==============================================================  ========================
method           one step                                                        data
===============  ==============================================================  ========================
``grpo``         sample G completions per prompt, score, ``core.step.grpo_step``  prompts (task or data)
                 (on a multi-step task its KL per step is measured, and with
                 ``step_kl_beta`` > 0 penalised: ``core.step_kl.StepKL``)
``ppo``          the same step with the recipe's critic bound to a value model   prompts
                 (``lm.critic.ValueModel``): GAE, minibatch epochs, value loss
``offline_grpo`` ``core.offline.offline_step`` on logged groups (plus fresh      scored completions:
                 online groups with ``online_prompts``: ``hybrid_step``)          ``offline_data``, or
                                                                                  sampled once from the anchor
``dpo``/``ipo``  ``core.preference.preference_step`` on pairs                    ``prefs``/``labels``, or
                                                                                  anchor samples paired by
                                                                                  the reward (best vs worst)
===============  ==============================================================  ========================

Data built from the anchor costs ``offline_prompts × group_size`` reward calls, all before the first
step; an online method spends ``prompts_per_step × group_size`` a step. Which rows a step reads is a
function of the seed and the step alone, so a resumed run reads what an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from minigrpo.core.critic import GAE, Critic
from minigrpo.core.offline import LoggedBatch, hybrid_step, offline_step
from minigrpo.core.preference import DPO, IPO, preference_step
from minigrpo.core.recipe import replace
from minigrpo.core.step import collect, grpo_step
from minigrpo.core.step_kl import StepKL
from minigrpo.lm.data import prompt_text
from minigrpo.lm.tokens import decode_completions, encode_prompts, step_ids
from minigrpo.runs.config import TrainConfig
from minigrpo.runs.parallel import Processes, SummedGradients, gather_step, prompt_noise, shared_recipe


@dataclass
class RunParts:
    """What every method's step reads: the run's objects, built once by ``train_lm``."""

    cfg: TrainConfig
    policy: object
    anchor: object
    tokenizer: object
    reward: object          # a compose.RewardSet (``bind(rows, source)`` per batch)
    source: object          # a lm.sources.PromptSource
    optimizer: object
    recipe: object
    T: int                  # max new tokens
    device: torch.device
    data_gen: torch.Generator
    sample_gen: torch.Generator
    processes: Processes = Processes()     # one, or those of a data-parallel run (runs/parallel.py)
    pairs: list | None = None               # dpo/ipo: the pairs of prefs/labels, read before the model (read_pairs)

    def sampling(self) -> dict:
        c, tok = self.cfg, self.tokenizer
        return dict(max_new_tokens=self.T, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                    temperature=c.temperature, top_k=c.top_k, top_p=c.top_p)

    def encode(self, rows) -> Tensor:
        return encode_prompts(self.tokenizer, [prompt_text(self.tokenizer, r.prompt) for r in rows]).to(self.device)


@dataclass
class StepOut:
    """One step's metrics, and for sampling methods the step itself (for samples.jsonl)."""

    record: dict
    step: object = None
    prompts: Tensor | None = None
    rows: list | None = None


def pick_rows(t: int, n: int, total: int, seed: int) -> Tensor:
    """The ``n`` rows of step ``t`` (1, 2, …) from ``total``: shuffled epochs, each order fixed by the seed
    and the epoch alone (so a resumed run reads the same rows)."""
    first = (t - 1) * n
    out = []
    while len(out) < n:
        epoch, at = divmod(first + len(out), total)
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.extend(order[at:at + n - len(out)].tolist())
    return torch.tensor(out)


# --- grpo and ppo: online ---------------------------------------------------------------------------

class OnlineSteps:
    """GRPO or PPO: each step samples ``group_size`` completions for ``prompts_per_step`` prompts. Prompt p
    of step t is sampled with random numbers drawn from (seed, t, p) (``parallel.prompt_noise``); on
    several processes each samples and learns from its share of the prompts, and the step returned
    is the whole batch's (``runs/parallel.py``)."""

    data_files: dict = {}        # name → writer(path): data built from the anchor, saved in the run folder

    def __init__(self, parts: RunParts):
        self.parts, self.critic = parts, None
        self.step_kl = None
        if parts.cfg.has_steps:      # the chain task: its steps cut as the step reward cuts them (checks.step_checks)
            tok = parts.tokenizer
            self.step_kl = StepKL(parts.cfg.step_kl_beta, lambda y, mask: step_ids(tok, y, mask, ","))
        if isinstance(parts.recipe.baseline, GAE):                         # ppo: bind the critic
            from minigrpo.lm.critic import ValueModel

            c = parts.cfg
            base = getattr(parts.anchor, "model", None) or parts.policy.model
            value = ValueModel.from_causal_lm(base, parts.tokenizer.pad_token_id,
                                              autocast_dtype=parts.policy.autocast_dtype).to(parts.device)
            value.attention_for = parts.policy.attention_for       # the policy's attention, per length
            self.critic = Critic(value, GAE(c.gae_gamma, c.gae_lambda), lr=c.critic_lr, value_clip=c.value_clip)
            parts.recipe = replace(parts.recipe, baseline=self.critic)
        many = parts.processes.count > 1          # the policy and recipe as this process's share of a step sees them
        self.learner = SummedGradients(parts.policy, parts.processes) if many else parts.policy
        self.recipe = shared_recipe(parts.recipe, parts.processes)

    def __call__(self, t: int, beta) -> StepOut:
        p, c = self.parts, self.parts.cfg
        rows = p.source.train_rows(t, c.prompts_per_step, p.data_gen)       # the same P rows on every process
        prompts = p.encode(rows)                                                           # (P, L)
        mine = p.processes.share(len(rows))                                 # this process's prompts
        noise = prompt_noise(c.seed, t, range(len(rows))[mine], c.group_size, p.T, p.device)   # (P/n, G, T)
        step = grpo_step(self.learner, p.anchor, prompts[mine], p.reward.bind(rows[mine], p.source.name),
                         self.recipe, beta, p.optimizer, c.group_size, generator=p.sample_gen, updates=c.updates,
                         minibatches=c.minibatches, max_grad_norm=c.max_grad_norm, step_kl=self.step_kl,
                         noise=noise, **p.sampling())
        step = gather_step(step, p.processes)                               # the whole batch's (P, G, T)
        extra = {} if self.critic is None else {"value_loss": self.critic.last_loss}
        return StepOut({**step.metrics(), **extra}, step, prompts, rows)

    def state(self) -> dict:
        if self.critic is None:
            return {}
        return {"critic": self.critic.value_net.state_dict(), "critic_optimizer": self.critic.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        if self.critic is not None:
            self.critic.value_net.load_state_dict(state["critic"])
            self.critic.optimizer.load_state_dict(state["critic_optimizer"])


# --- data built from the anchor ---------------------------------------------------------------------

def sample_from_anchor(parts: RunParts) -> tuple[LoggedBatch, list, list[list[str]]]:
    """``offline_prompts`` training prompts, ``group_size`` anchor samples each, scored once by the
    run's reward: the logged set of offline GRPO (with the sampler's per-token log-probs) and the
    material of DPO's pairs. Returns (logged batch, rows, completion texts [P][G])."""
    c, tok = parts.cfg, parts.tokenizer
    gen = torch.Generator(device=parts.device).manual_seed(c.seed + 3)
    rows_gen = torch.Generator().manual_seed(c.seed + 4)
    batches, all_rows, texts = [], [], []
    for i in range(0, c.offline_prompts, c.prompts_per_step):
        rows = parts.source.train_rows(i // c.prompts_per_step + 1, min(c.prompts_per_step, c.offline_prompts - i),
                                       rows_gen)
        prompts = parts.encode(rows)
        with torch.no_grad():
            rollout, scored = collect(parts.anchor, prompts, parts.reward.bind(rows, parts.source.name), c.group_size,
                                      generator=gen, **parts.sampling())
        valid = torch.ones_like(scored.r, dtype=torch.bool) if scored.valid is None else scored.valid
        batches.append(LoggedBatch(prompts, rollout.completions, rollout.mask, scored.r, valid, rollout.logp))
        all_rows += rows
        texts += decode_completions(tok, rollout.completions, rollout.mask, prompts=prompts)
    from minigrpo.core.offline import concat

    bank = batches[0]
    for b in batches[1:]:
        bank = concat(bank, b, tok.pad_token_id)
    return bank, all_rows, texts


def write_samples(path: Path, rows, texts, bank: LoggedBatch) -> None:
    """The sampled data as the JSONL ``offline_data`` reads (lm/logged.py): one row per completion."""
    from minigrpo.lm.logged import ScoredCompletion, write_logged

    records = []
    for p, row in enumerate(rows):
        for g, text in enumerate(texts[p]):
            if bool(bank.valid[p, g]):
                m = bank.mask[p, g]
                records.append(ScoredCompletion(row.prompt, text, float(bank.r[p, g]), bank.logp[p, g][m].tolist(),
                                                dict(row.columns)))
    write_logged(path, records)


# --- offline grpo -----------------------------------------------------------------------------------

class OfflineSteps:
    """Offline GRPO on a logged bank (and, with ``online_prompts``, fresh online groups beside it)."""

    data_files: dict = {}        # name → writer(path): data built from the anchor, saved in the run folder

    def __init__(self, parts: RunParts, bank: LoggedBatch):
        self.parts, self.bank = parts, bank

    def __call__(self, t: int, beta) -> StepOut:
        p, c = self.parts, self.parts.cfg
        idx = pick_rows(t, c.prompts_per_step, len(self.bank.r), c.seed)
        batch = self.bank.rows(idx.to(self.bank.r.device))
        kw = dict(updates=c.updates, minibatches=c.minibatches, max_grad_norm=c.max_grad_norm)
        if c.online_prompts:
            rows = p.source.train_rows(t, c.online_prompts, p.data_gen)
            step = hybrid_step(p.policy, p.anchor, p.encode(rows), p.reward.bind(rows, p.source.name), batch, p.recipe,
                               beta, p.optimizer, c.group_size, generator=p.sample_gen, learn_kwargs=kw,
                               **p.sampling())
        else:
            step = offline_step(p.policy, p.anchor, batch, p.recipe, beta, p.optimizer, generator=p.sample_gen, **kw)
        return StepOut(step.metrics(), step, None, None)

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


# --- dpo and ipo ------------------------------------------------------------------------------------

class PairSteps:
    """DPO (β = ``beta``) or IPO (τ = ``beta``) on a bank of pairs, ``prompts_per_step`` pairs a step."""

    data_files: dict = {}        # name → writer(path): data built from the anchor, saved in the run folder

    def __init__(self, parts: RunParts, pairs):
        self.parts, self.pairs = parts, pairs                 # a lm.pairs.PairBatch on the device
        self.loss_kind = DPO if parts.cfg.method == "dpo" else IPO

    def __call__(self, t: int, beta) -> StepOut:
        p, c = self.parts, self.parts.cfg
        idx = pick_rows(t, c.prompts_per_step, len(self.pairs.prompts), c.seed).to(p.device)
        prompts, y, mask = self.pairs.prompts[idx], self.pairs.completions[idx], self.pairs.mask[idx]
        with torch.no_grad():
            logp_anchor = p.anchor.log_probs(prompts, y)                                   # (P,2,T)
        step = preference_step(p.policy, logp_anchor, prompts, y, mask, self.loss_kind(float(beta)), p.optimizer,
                               max_grad_norm=c.max_grad_norm)
        return StepOut(step.metrics())

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def read_pairs(cfg: TrainConfig) -> list:
    """The pairs of ``prefs`` or ``labels`` (rewards/preferences.py, rewards/labels.py)."""
    from minigrpo.rewards.labels import labels_to_pairs, load_labels
    from minigrpo.rewards.preferences import load_preferences

    if cfg.prefs:
        pairs, _ = load_preferences(cfg.prefs)
        return pairs
    labels, _ = load_labels(cfg.labels)
    pairs = labels_to_pairs(labels)
    if not pairs:
        raise ValueError(f"labels {cfg.labels!r} give no pair (no prompt has both a good and a bad completion)")
    return pairs


def make_steps(parts: RunParts) -> OnlineSteps | OfflineSteps | PairSteps:
    """The step of ``parts.cfg.method``, with its data read or built — before the run folder exists, so
    a missing file or data that gives no pair fails first. Data sampled from the anchor is also kept
    as ``data_files`` {name: writer(path)}, which the run writes into its folder (``logged.jsonl`` or
    ``pairs.jsonl``, for a learner to read and reuse). A resumed run samples it again (the same seed
    gives the same data on a CPU) rather than re-reading its text, which a BPE tokenizer may split
    differently from the sampler."""
    from minigrpo.lm.policy import context_length

    c, tok = parts.cfg, parts.tokenizer
    context = context_length(parts.policy.model)
    if c.method in ("grpo", "ppo"):
        return OnlineSteps(parts)
    if c.method == "offline_grpo":
        if c.offline_data:
            from minigrpo.lm.logged import encode_logged, group_logged, read_logged

            bank = encode_logged(tok, group_logged(read_logged(c.offline_data)), parts.T, context)
            bank = LoggedBatch(*(x if x is None else x.to(parts.device) for x in (
                bank.prompts, bank.completions, bank.mask, bank.r, bank.valid, bank.logp)))
        else:
            bank, rows, texts = sample_from_anchor(parts)
            step = OfflineSteps(parts, bank)
            step.data_files = {"logged.jsonl": lambda path: write_samples(path, rows, texts, bank)}
            return step
        return OfflineSteps(parts, bank)
    from minigrpo.lm.pairs import encode_pairs, pairs_from_groups

    files = {}
    if c.prefs or c.labels:
        pairs = parts.pairs if parts.pairs is not None else read_pairs(c)
    else:
        bank, rows, texts = sample_from_anchor(parts)
        judged = bank.valid.tolist()            # a completion the reward could not judge is in no pair
        pairs, tied = pairs_from_groups([r.prompt for r in rows],
                                        [[x for x, ok in zip(ts, v) if ok] for ts, v in zip(texts, judged)],
                                        [[x for x, ok in zip(rs, v) if ok] for rs, v in zip(bank.r.tolist(), judged)])
        if not pairs:
            raise ValueError(f"method {c.method}: every one of the {len(rows)} prompts' {c.group_size} anchor samples "
                             "got the same reward (or the same text), so no preference pair could be built; raise "
                             "group_size or offline_prompts, or give prefs")
        from minigrpo.rewards.preferences import PreferencePair, save_preferences

        files["pairs.jsonl"] = lambda path: save_preferences(
            [PreferencePair(p.prompt, p.chosen, p.rejected) for p in pairs], path)
    batch = encode_pairs(tok, pairs, parts.T, context)
    from minigrpo.lm.pairs import PairBatch

    step = PairSteps(parts, PairBatch(batch.prompts.to(parts.device), batch.completions.to(parts.device),
                                      batch.mask.to(parts.device), batch.truncated))
    step.data_files = files
    return step
