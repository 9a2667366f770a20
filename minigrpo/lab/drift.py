"""Drift views for language models: how far, and where, the policy has moved from its anchor.

Data functions run the models and return tensors; figure functions take plain numbers and return a
``matplotlib.figure.Figure`` (no pyplot, headless-safe), so each can be tested on its own.

Data (torch): ``token_kl`` (per completion token, the k1 log-ratio of the written token or the exact
KL over the vocabulary), ``token_strip_data``, ``next_token_distributions``, ``answer_distribution``
(π(answer | prompt) over an enumerated list, renormalised, and the mass outside it), ``tv`` and ``kl``
between two such distributions, ``drift_over_checkpoints`` (a run folder's checkpoints against its anchor).
Figures: ``plot_token_strip``, ``plot_next_token``, ``plot_answer_shift``, ``plot_drift``. Widget:
``drift_slider``, a slider over a run's checkpoints redrawing the answer distribution.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from minigrpo.lab.plots import ANCHOR_COLOR, POLICY_COLOR
from minigrpo.lm.models import load_causal_lm
from minigrpo.lm.policy import AdapterOffAnchor, CausalLMPolicy, positions, prompt_mask
from minigrpo.lm.tokens import decode_rows, encode_completions, encode_prompts


def _base(policy):
    """The ``CausalLMPolicy`` behind ``policy`` (an ``AdapterOffAnchor`` is its policy, adapter off)."""
    return policy._policy[0] if isinstance(policy, AdapterOffAnchor) else policy


def _forward(policy, ids: Tensor, **inputs) -> Tensor:
    """The model's float32 logits for ``ids``, no cache; an ``AdapterOffAnchor`` runs with its adapter off."""
    base = _base(policy)
    off = base.model.disable_adapter() if base is not policy else contextlib.nullcontext()
    base.use_attention(ids.shape[1])
    with torch.no_grad(), off, base.autocast():
        return base.model(input_ids=ids, use_cache=False, **inputs).logits.float()


def _full_logp(policy, prompts: Tensor, completions: Tensor) -> Tensor:
    """log π(· | x, y_<t) over the whole vocabulary at every completion position: (P, G, T, V), float32.
    One forward pass over each row prompt + completion (left-padded prompts, as ``log_probs`` takes them)."""
    P, G, T = completions.shape
    pmask = prompt_mask(prompts, _base(policy).pad_id).repeat_interleave(G, 0)                       # (P·G, L)
    ids = torch.cat([prompts.repeat_interleave(G, 0), completions.reshape(P * G, T)], 1)    # (P·G, L+T)
    attn = torch.cat([pmask, pmask.new_ones(P * G, T)], 1)
    logits = _forward(policy, ids, attention_mask=attn.long(), position_ids=positions(attn), logits_to_keep=T + 1)
    return torch.log_softmax(logits[:, :-1], -1).reshape(P, G, T, -1)                       # column L−1+t → y_t


@torch.no_grad()
def token_kl(policy, anchor, prompts: Tensor, completions: Tensor, exact: bool = False) -> Tensor:
    """Per-token drift along completions (P, G, T) for left-padded prompts (P, L).

    ``exact=False``: k1 = log π(y_t|·) − log π_anchor(y_t|·) of the token that was written (its mean over
    samples is the KL; one value can be negative). ``exact=True``: the KL itself at each position,
    Σ_v π(v|·) (log π(v|·) − log π_anchor(v|·)) over the vocabulary — never negative, 0 only where the
    two next-token distributions agree. Positions after EOS are scored too; cut them off yourself."""
    if prompts.dim() != 2 or completions.dim() != 3 or prompts.shape[0] != completions.shape[0]:
        raise ValueError(f"token_kl: prompts {tuple(prompts.shape)} and completions {tuple(completions.shape)} "
                         "must be (P, L) and (P, G, T) with the same P")
    if not exact:
        return policy.log_probs(prompts, completions).float() - anchor.log_probs(prompts, completions).float()
    lp, la = _full_logp(policy, prompts, completions), _full_logp(anchor, prompts, completions)
    return (lp.exp() * (lp - la)).sum(-1).clamp_min(0.0)


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own (special tokens as written)."""
    return decode_rows(tokenizer, [[int(i)] for i in ids])


def token_strip_data(policy, anchor, tokenizer, prompt: str, completion: str,
                     exact: bool = True) -> tuple[list[str], list[float]]:
    """(token texts, per-token drift) of ``completion`` after ``prompt``, its EOS included (``token_kl``)."""
    prompts = encode_prompts(tokenizer, [prompt]).to(policy.device)
    ids = encode_completions(tokenizer, [[completion]]).to(policy.device)                   # (1, 1, T), EOS last
    values = token_kl(policy, anchor, prompts, ids, exact=exact)[0, 0]
    return token_texts(tokenizer, ids[0, 0].tolist()), values.tolist()


@dataclass
class NextTokens:
    """Two next-token distributions at one position: the ``top`` likeliest tokens under either model,
    then "(rest)" with all the other tokens' probability; ``kl`` = KL(π ‖ π_anchor) over the vocabulary."""
    labels: list[str]
    anchor: list[float]
    policy: list[float]
    kl: float


@torch.no_grad()
def next_token_distributions(policy, anchor, tokenizer, prompt: str, prefix: str = "", top: int = 10) -> NextTokens:
    """π(· | prompt + prefix) and π_anchor(· | prompt + prefix): ``prefix`` is the part of the completion
    already written ("" for the answer's first token)."""
    if not (isinstance(top, int) and top >= 1):
        raise ValueError(f"next_token_distributions: top={top!r} must be an integer ≥ 1")
    ids = tokenizer.encode(prompt + prefix, add_special_tokens=False)
    if not ids:
        raise ValueError("next_token_distributions: prompt + prefix encodes to no tokens")
    x = torch.tensor([ids], device=policy.device)                                          # (1, L), no padding
    lp, la = (torch.log_softmax(_forward(m, x, logits_to_keep=1)[0, -1], -1) for m in (policy, anchor))
    p, q = lp.exp(), la.exp()
    k = min(top, p.numel())
    pick = torch.maximum(p, q).topk(k).indices.sort().values
    labels = token_texts(tokenizer, pick.tolist())
    pa, pp = q[pick].tolist(), p[pick].tolist()
    if k < p.numel():
        labels, pa, pp = labels + ["(rest)"], pa + [max(0.0, 1 - sum(pa))], pp + [max(0.0, 1 - sum(pp))]
    return NextTokens(labels, pa, pp, float((p * (lp - la)).sum().clamp_min(0)))


@dataclass
class AnswerDistribution:
    """π(answer + EOS | prompt) for each answer of an enumerated list: ``logp`` as the model gives it,
    ``probs`` renormalised over the list, ``outside`` the probability of every other completion."""
    answers: list[str]
    logp: Tensor              # (A,) float64
    probs: Tensor             # (A,) float64, sums to 1
    outside: float


def addition_answers(digits: int = 2) -> list[str]:
    """Every well-formed answer of ``digits``-digit addition: "0" … str(2·(10^digits − 1))."""
    return [str(n) for n in range(2 * (10 ** digits - 1) + 1)]


@torch.no_grad()
def answer_distribution(policy, tokenizer, prompt: str, answers: Sequence[str]) -> AnswerDistribution:
    """log π(a, EOS | prompt) = the sum of the answer's token log-probs, EOS included, for each ``a``.
    The answer is encoded on its own after the prompt (exact for the character tokenizer)."""
    answers = list(answers)
    if not answers or len(set(answers)) != len(answers):
        raise ValueError(f"answer_distribution: answers must be a non-empty list without repeats (got {len(answers)}, "
                         f"{len(answers) - len(set(answers))} repeated)")
    prompts = encode_prompts(tokenizer, [prompt]).to(policy.device)
    ids = encode_completions(tokenizer, [answers]).to(policy.device)                          # (1, A, T)
    n = torch.tensor([len(tokenizer.encode(a, add_special_tokens=False)) + 1 for a in answers], device=ids.device)
    keep = torch.arange(ids.shape[-1], device=ids.device) < n[:, None]                      # (A, T) answer + EOS
    logp = (policy.log_probs(prompts, ids)[0].double() * keep).sum(-1).cpu()               # (A,)
    outside = float((1 - logp.exp().sum()).clamp_min(0))
    return AnswerDistribution(answers, logp, torch.softmax(logp, 0), outside)


def _dist(name: str, p) -> Tensor:
    t = torch.as_tensor(p, dtype=torch.float64).flatten()
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or abs(float(t.sum()) - 1) > 1e-4:
        raise ValueError(f"{name} must be a non-empty probability vector (finite, ≥ 0, summing to 1); "
                         f"got {t.numel()} values summing to {float(t.sum()) if t.numel() else 0:.6g}")
    return t


def _pair(p, q) -> tuple[Tensor, Tensor]:
    p, q = _dist("p", p), _dist("q", q)
    if p.shape != q.shape:
        raise ValueError(f"the two distributions have {p.numel()} and {q.numel()} values; they must match")
    return p, q


def tv(p, q) -> float:
    """Total variation ½ Σ |p − q|: the most probability any set of answers gained or lost (0…1)."""
    p, q = _pair(p, q)
    return 0.5 * float((p - q).abs().sum())


def kl(p, q) -> float:
    """KL(p ‖ q) = Σ p log(p / q) in nats (terms with p = 0 are 0; inf where q = 0 < p)."""
    p, q = _pair(p, q)
    on = p > 0
    return float((p[on] * (p[on].log() - q[on].log())).sum().clamp_min(0))


@dataclass
class Drift:
    """The answer distributions of a run's checkpoints: ``at[i][j]`` is checkpoint ``steps[i]`` on ``prompts[j]``,
    ``anchor[j]`` the anchor's; ``tv[i]`` and ``kl[i]`` (KL(π_step ‖ π_anchor)) are means over the prompts."""
    prompts: list[str]
    correct: list[str | None]
    anchor: list[AnswerDistribution]
    steps: list[int] = field(default_factory=list)
    at: list[list[AnswerDistribution]] = field(default_factory=list)
    tv: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)


def drift_over_checkpoints(run_dir: str | Path, prompts: Sequence[str],
                           answers: Sequence[str] | Callable[[str], Sequence[str]] | None = None,
                           every: int = 1, device: str = "cpu") -> Drift:
    """Load the run's anchor and every ``every``-th checkpoint (counted back from the last) and compute each one's
    ``answer_distribution`` on ``prompts``. ``answers``: one list for every prompt, a function of the
    prompt, or None for every well-formed answer of the run's addition task (``addition_answers``)."""
    from minigrpo.runs.config import TrainConfig
    from minigrpo.runs.folder import RunFolder
    from minigrpo.runs.lm_run import build_policy, resolve_model

    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"drift_over_checkpoints: every={every!r} must be an integer ≥ 1")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("drift_over_checkpoints: no prompts; give at least one")
    folder = RunFolder(run_dir)
    cfg = TrainConfig.from_dict(folder.read_config())
    ckpts = sorted(p for p in folder.ckpt_root.glob("step-*") if (p / "meta.json").exists())
    if not ckpts:
        raise FileNotFoundError(f"run folder {str(folder.path)!r} holds no checkpoint; train with save_every > 0 "
                                "and keep_checkpoints large enough to keep the ones to compare")
    ckpts = [c for i, c in enumerate(ckpts) if (len(ckpts) - 1 - i) % every == 0]
    if answers is None:
        if cfg.task != "addition" or cfg.data is not None:
            raise ValueError(f"drift_over_checkpoints: the answers of task {cfg.task!r} cannot be enumerated "
                             "here; pass answers (a list, or a function of the prompt)")
        answers = addition_answers(cfg.task_obj.digits)
    answers_of = answers if callable(answers) else (lambda _prompt, a=list(answers): a)
    correct = [cfg.task_obj.solve(p) if cfg.data is None else None for p in prompts]
    dev = torch.device(device)
    anchor_src = resolve_model(cfg, progress=False)
    anchor_model, tok = load_causal_lm(anchor_src, device=dev)
    anchor = CausalLMPolicy(anchor_model, tok.pad_token_id,           # as train_lm builds it: the run's precision
                            autocast_dtype=torch.bfloat16 if cfg.precision == "bf16" else None).freeze()
    measure = lambda pol: [answer_distribution(pol, tok, p, answers_of(p)) for p in prompts]
    drift = Drift(prompts, correct, measure(anchor))
    for ckpt in ckpts:
        RunFolder.verify_checkpoint(ckpt)
        policy, _ = (build_policy(anchor_src, cfg, dev, lora_from=str(ckpt)) if cfg.lora_r    # an adapter on the anchor
                     else build_policy(str(ckpt), cfg, dev))
        at = measure(policy)
        drift.steps.append(RunFolder.step_of(ckpt))
        drift.at.append(at)
        drift.tv.append(sum(tv(a.probs, b.probs) for a, b in zip(at, drift.anchor)) / len(prompts))
        drift.kl.append(sum(kl(a.probs, b.probs) for a, b in zip(at, drift.anchor)) / len(prompts))
    return drift


def _check_lengths(owner: str, **seqs) -> int:
    lengths = {name: len(s) for name, s in seqs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{owner}: lengths differ ({', '.join(f'{k}={v}' for k, v in lengths.items())}); "
                         "give one value per item")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{owner}: nothing to plot ({', '.join(lengths)} are empty)")
    return n


def _finite(owner: str, name: str, values) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{owner}: {name} must be finite numbers (got {values!r})")
    return out


def _shown(token: str) -> str:
    """A token as it is drawn: whitespace made visible."""
    return token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def plot_token_strip(tokens: Sequence[str], values: Sequence[float], title: str = "",
                     label: str = "KL(π ‖ π_anchor) at the token", per_row: int = 20) -> Figure:
    """One cell per token, coloured by its value (a colour bar below): a sequential map for values ≥ 0
    (the exact KL), a diverging one centred on 0 when some are negative (k1 log-ratios)."""
    n = _check_lengths("plot_token_strip", tokens=tokens, values=values)
    vals = _finite("plot_token_strip", "values", values)
    rows, cols = math.ceil(n / per_row), min(n, per_row)
    grid = torch.cat([torch.tensor(vals), torch.full((rows * cols - n,), float("nan"))]).reshape(rows, cols)
    lo, hi = min(vals), max(vals)
    m = max(-lo, hi, 1e-9)
    norm, cmap = (TwoSlopeNorm(0.0, -m, m), "RdBu_r") if lo < 0 else (Normalize(0.0, m), "Reds")
    fig = Figure(figsize=(max(4.0, 0.6 * cols + 0.6), 0.6 * rows + 1.5), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(grid.numpy(), cmap=cmap, norm=norm, edgecolors="white", linewidth=2)
    for i, (tok, v) in enumerate(zip(tokens, vals)):
        dark = abs(norm(v) - (0.5 if lo < 0 else 0.0)) > (0.35 if lo < 0 else 0.6)
        ax.text(i % per_row + 0.5, i // per_row + 0.5, _shown(str(tok)), ha="center", va="center",
                fontsize=10, family="monospace", color="white" if dark else "black")
    ax.set(xlim=(0, cols), ylim=(rows, 0), xticks=[], yticks=[])
    ax.set_aspect("equal")
    fig.colorbar(mesh, ax=ax, label=label, location="bottom", shrink=0.8, aspect=30)
    ax.set_title(title or f"{n} tokens, total {sum(vals):.3g}", fontsize=10)
    return fig


def _grouped_bars(ax, labels, series) -> None:
    width = 0.8 / len(series)
    for i, (name, values, color) in enumerate(series):
        x = [k + (i - (len(series) - 1) / 2) * width for k in range(len(labels))]
        ax.bar(x, values, width, label=name, color=color)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("probability")
    ax.legend(frameon=False, fontsize=9)


def plot_next_token(anchor_probs: Sequence[float], policy_probs: Sequence[float], labels: Sequence[str],
                    title: str = "next token") -> Figure:
    """The anchor's and the policy's probability of each next token, as grouped bars."""
    n = _check_lengths("plot_next_token", anchor_probs=anchor_probs, policy_probs=policy_probs, labels=labels)
    a, p = _finite("plot_next_token", "anchor_probs", anchor_probs), _finite("plot_next_token", "policy_probs",
                                                                             policy_probs)
    if any(v < 0 or v > 1 + 1e-6 for v in a + p):
        raise ValueError("plot_next_token: probabilities must lie in [0, 1]")
    fig = Figure(figsize=(max(5.0, 0.6 * n + 1.5), 3.2), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, [_shown(str(s)) for s in labels],
                  [("anchor π_anchor", a, ANCHOR_COLOR), ("policy π", p, POLICY_COLOR)])
    ax.set_title(title, fontsize=10)
    return fig


def plot_answer_shift(answers: Sequence[str], before, after, correct: str | None = None, top: int = 12,
                      title: str = "") -> Figure:
    """Two distributions over the same answers as grouped bars — the ``top`` likeliest under either, in
    the list's order, then "(others)" — with TV and KL(after ‖ before) over all answers in the title.
    The ``correct`` answer's label is marked ✓."""
    n = _check_lengths("plot_answer_shift", answers=answers, before=before, after=after)
    b, a = _dist("plot_answer_shift: before", before), _dist("plot_answer_shift: after", after)
    if not (isinstance(top, int) and top >= 1):
        raise ValueError(f"plot_answer_shift: top={top!r} must be an integer ≥ 1")
    pick = sorted(torch.maximum(a, b).topk(min(top, n)).indices.tolist())
    labels = [(str(answers[i]) or "(empty)") + (" ✓" if answers[i] == correct else "") for i in pick]
    bs, as_ = [float(b[i]) for i in pick], [float(a[i]) for i in pick]
    if len(pick) < n:
        labels, bs, as_ = labels + ["(others)"], bs + [max(0.0, 1 - sum(bs))], as_ + [max(0.0, 1 - sum(as_))]
    fig = Figure(figsize=(max(5.0, 0.55 * len(labels) + 1.5), 3.4), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, labels, [("before", bs, ANCHOR_COLOR), ("after", as_, POLICY_COLOR)])
    for tick in ax.get_xticklabels():
        if tick.get_text().endswith("✓"):
            tick.set(fontweight="bold", color="C2")
    ax.tick_params(axis="x", labelrotation=45 if len(labels) > 8 else 0)
    head = f"TV = {tv(a, b):.3f}, KL(after ‖ before) = {kl(a, b):.3f}"
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=10)
    return fig


def plot_drift(steps: Sequence[int], values: Sequence[float] | dict[str, Sequence[float]],
               ylabel: str = "drift from the anchor", title: str = "") -> Figure:
    """One line per measure over training steps: ``values`` a list, or {name: list}."""
    series = values if isinstance(values, dict) else {ylabel: values}
    if not series:
        raise ValueError("plot_drift: values={} holds no series")
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, ys) in enumerate(series.items()):
        _check_lengths("plot_drift", steps=steps, **{str(name): ys})
        ax.plot(list(steps), _finite("plot_drift", str(name), ys), "o-", ms=3, color=f"C{i}", label=str(name))
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if isinstance(values, dict):
        ax.legend(fontsize=8)
    return fig


def drift_slider(drift: Drift | str | Path, prompts: Sequence[str] | None = None, prompt: int = 0, top: int = 12,
                 **kwargs):
    """A slider over the checkpoints' steps; each move redraws ``plot_answer_shift`` of the anchor (before)
    against that checkpoint (after) on ``prompts[prompt]``. Give a ``Drift`` or a run folder (then ``prompts``,
    and ``kwargs`` for ``drift_over_checkpoints``). The box's ``update()`` redraws; ``.drift`` holds the data,
    ``.figure`` the figure shown."""
    import ipywidgets as widgets
    from IPython.display import display

    from minigrpo.lab.widgets import _png

    if not isinstance(drift, Drift):
        if not prompts:
            raise ValueError("drift_slider: given a run folder, also give the prompts to measure")
        drift = drift_over_checkpoints(drift, prompts, **kwargs)
    if not drift.steps:
        raise ValueError("drift_slider: the drift holds no checkpoint")
    if not (isinstance(prompt, int) and 0 <= prompt < len(drift.prompts)):
        raise ValueError(f"drift_slider: prompt={prompt!r} must index the {len(drift.prompts)} prompt(s)")
    slider = widgets.SelectionSlider(options=drift.steps, value=drift.steps[-1], description="step",
                                     continuous_update=False)
    out = widgets.Output()
    box = widgets.VBox([slider, out])

    def update(_change=None) -> None:
        i = drift.steps.index(slider.value)
        before, after = drift.anchor[prompt], drift.at[i][prompt]
        fig = plot_answer_shift(before.answers, before.probs, after.probs, drift.correct[prompt], top=top,
                                title=f"{drift.prompts[prompt]}  anchor (before) → step {slider.value} (after); "
                                      f"mass outside the list {before.outside:.2f} → {after.outside:.2f}")
        box.figure = fig
        with out:
            out.clear_output(wait=True)
            display(_png(fig))

    slider.observe(update, names="value")
    box.update, box.drift, box.slider = update, drift, slider
    update()
    return box
