"""A Hugging Face causal LM as a GRPO policy, in the same P × G × T layout as the bandit.

``CausalLMPolicy`` is a ``core.protocols.Policy``, written for a transformer:

* ``decoder(prompts, G, T)``: a ``KVCacheDecoder`` that runs the prompt once, copies its key/value
  cache G times into a cache preallocated for L + T positions and then feeds one token per step —
  ``sampling.sample_group`` drives it, the same loop that samples a bandit arm;
* ``log_probs(prompts, completions)``: log π(y_t | x, y_<t) for every completion token, (P, G, T),
  with the prompt run once per prompt here too (with a graph when gradients are on);
* ``accumulate_grad``: autograd, ``logp.backward(ψ)`` (``core.loss.AutogradGradient``).

Why a step is fast, and what each choice saved when profiled, is in docs/performance.md: besides
the two above, a fused GELU (``fuse_activations``), plain attention on a CPU for short sequences
(``CausalLMPolicy.attention_for``), one autocast region per rollout (``sampling_context``) and a
bf16 anchor whose matmul weights are stored in bf16 (``store_matmul_weights_in``).

Prompts are a left-padded id tensor (P, L): padding sits before the text so that every prompt ends
at the same column and the first sampled token of every row is at column L. Which columns are
real is read off the ids — a column is real from the first non-pad id on — so no separate mask
travels with the prompts. ``tokens.left_pad`` turns a right-padded batch into this form.

Memory: only the logits that are needed are computed (``logits_to_keep``), and full-vocabulary
logits are reduced to one log-prob per token at once (``token_logp``), never kept in float32.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from minigrpo.core.loss import AutogradGradient
from minigrpo.lm.decoding import KVCacheDecoder

SHORT_CONTEXT = 512      # "auto" attention on a CPU: plain attention up to this many positions


def token_logp(logits: Tensor, y: Tensor) -> Tensor:
    """log softmax(logits)_y = logits_y − logsumexp(logits), without materialising the log-softmax.

    logits (…, V) in any dtype, y (…) long → (…) float32. The logsumexp runs in float32 for accuracy
    under bf16; its float32 copy of the logits is a temporary, freed when this returns.
    """
    picked = logits.gather(-1, y[..., None])[..., 0].float()
    return picked - torch.logsumexp(logits.float(), dim=-1)


def prompt_mask(prompts: Tensor, pad_id: int) -> Tensor:
    """True on real prompt tokens of a left-padded batch (P, L): every column from the first non-pad
    id on (so a pad id inside or at the end of the text, e.g. GPT-2's EOS-as-pad, still counts)."""
    return (prompts != pad_id).cumsum(-1) > 0


def positions(mask: Tensor) -> Tensor:
    """Position ids that skip left padding: 0 at the first real token (pads get 0 too, unused)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0. RL needs log π to be a function of θ alone: the
    log-probs of sampling, of the gradient pass and of the anchor must agree (TRL does the same)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def fuse_activations(model: nn.Module) -> int:
    """Swap transformers' ``NewGELUActivation`` and ``FastGELUActivation`` (GPT-2's "gelu_new", written
    as about seven element-wise tensor ops) for ``GELUTanh``: the same function,
    gelu(x) = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), computed by one fused kernel
    (``F.gelu(approximate="tanh")``), equal to rounding. Each unfused op reads and writes the whole
    (tokens × 4d) activation, so on a CPU this alone was ~20 % of a tiny model's GRPO step. The config
    is untouched: a saved model is the same model. Returns how many modules were swapped."""
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(parent, name, GELUTanh())
                swapped += 1
    return swapped


def store_matmul_weights_in(model: nn.Module, dtype: torch.dtype | None) -> int:
    """For a frozen model run under autocast to ``dtype``: keep the weights of its matrix products
    (``nn.Linear`` and transformers' ``Conv1D``) in ``dtype`` once and for all. Autocast rounds them to
    ``dtype`` at every forward anyway, so the results are the same, bit for bit; what goes is the
    per-forward cast and half their memory. A weight shared with another module (GPT-2's output
    layer is its token embedding) stays as it is. Returns how many tensors were converted."""
    if dtype is None:
        return 0
    from transformers.pytorch_utils import Conv1D

    matmul, other = {}, set()
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if isinstance(m, (nn.Linear, Conv1D)):
                matmul[id(p)] = p
            else:
                other.add(id(p))
    converted = 0
    for key, p in matmul.items():
        if key not in other and p.is_floating_point() and p.dtype != dtype and not p.requires_grad:
            p.data = p.data.to(dtype)
            converted += 1
    return converted


def context_length(model) -> int | None:
    cfg = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        n = getattr(cfg, name, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def is_peft_model(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def cache_name(model) -> str:
    """What this transformers calls the key/value cache argument: ``cache`` (≥ 5.x), else ``past_key_values``."""
    import inspect

    base = model.get_base_model() if is_peft_model(model) else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class CausalLMPolicy(AutogradGradient, nn.Module):
    """π_θ(y | x) given by a Hugging Face ``AutoModelForCausalLM`` (GPT-2 family and alike).

    ==========================  =================================================================
    ``model``                   the causal LM (optionally a peft LoRA model)
    ``pad_id``                  the id that left-pads prompts and fills completions after EOS
    ``autocast_dtype``          e.g. ``torch.bfloat16`` to run forwards under autocast; None: as is
    ``gradient_checkpointing``  recompute activations in the backward pass to save memory
    ``attention``               "auto": on a CPU, plain ("eager") attention for sequences of at
                                most ``SHORT_CONTEXT`` tokens, else the model's own (see
                                ``attention_for``); or "eager", "sdpa", …, or "model" (never switch)
    ==========================  =================================================================
    """

    def __init__(self, model: nn.Module, pad_id: int, *, autocast_dtype: torch.dtype | None = None,
                 gradient_checkpointing: bool = False, attention: str = "auto"):
        super().__init__()
        if pad_id is None:
            raise ValueError("CausalLMPolicy: pad_id=None; the tokenizer needs a pad token (for GPT-2 "
                             "set tokenizer.pad_token = tokenizer.eos_token)")
        if not (isinstance(attention, str) and attention):
            raise ValueError(f"CausalLMPolicy: attention={attention!r} is not allowed; use 'auto', 'model', or an "
                             "attention implementation of transformers such as 'eager' or 'sdpa'")
        self.model = model
        self.pad_id = int(pad_id)
        self.autocast_dtype = autocast_dtype
        self.gradient_checkpointing = gradient_checkpointing
        self.attention = attention
        self.model_attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
        self.cache_name = cache_name(model)
        disable_dropout(model)
        fuse_activations(model)
        if gradient_checkpointing:
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):       # transformers ≥ 5 name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            model.train()    # HF applies checkpointing in train mode only; dropout is off, so this is safe
        else:
            model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def attention_for(self, length: int) -> str | None:
        """The attention implementation for a forward over ``length`` positions (None: leave it).

        "auto" picks plain attention (two matmuls and a softmax, transformers' "eager") on a CPU when
        length ≤ ``SHORT_CONTEXT``: there torch's fused CPU kernel (``scaled_dot_product_attention``)
        measured 1.3–8× slower on GPT-2 shapes, worst in bf16 decoding (2.8 ms against 0.34 ms a
        call at 64 rows × 12 heads × 38 keys; ``bench/attention_cpu.py``). Plain attention keeps a
        (rows × heads × length²) score tensor, so long sequences, and GPUs, keep the fused kernel."""
        if self.attention == "model" or self.model_attention is None:
            return None
        if self.attention != "auto":
            return self.attention
        return "eager" if self.device.type == "cpu" and length <= SHORT_CONTEXT else self.model_attention

    def use_attention(self, length: int) -> None:
        """Switch the model to ``attention_for(length)`` if it is not already (a cheap config change)."""
        want = self.attention_for(length)
        config = self.model.config
        if want is not None and want != config._attn_implementation:
            self.model.set_attn_implementation(want)

    @contextlib.contextmanager
    def sampling_context(self):
        """Held open by ``sample_group`` around its whole token loop. Under bf16 it is one autocast
        region: autocast keeps the bf16 copies it makes of trainable weights until the outermost
        region exits, so a rollout casts the weights once, not once per token (for GPT-2 size on a
        CPU, ~40 ms × T). The model also decodes in eval mode (``decoding_mode``)."""
        with self.decoding_mode(), self.autocast():
            yield

    @contextlib.contextmanager
    def decoding_mode(self):
        """Eval mode while decoding with the cache: with gradient checkpointing the model is kept in
        train mode (transformers checkpoints only there) and transformers then turns the cache off.
        Dropout is 0 throughout, so the mode changes nothing else."""
        if not self.model.training:
            yield
            return
        self.model.eval()
        try:
            yield
        finally:
            self.model.train()

    def check_length(self, L: int, T: int) -> None:
        n = context_length(self.model)
        if n is not None and L + T > n:
            raise ValueError(f"prompt of {L} tokens + max_new_tokens={T} = {L + T} exceeds the model's context "
                             f"of {n} tokens; shorten the prompts or lower max_new_tokens")

    # --- sampling -----------------------------------------------------------------------------------
    def decoder(self, prompts: Tensor, G: int, max_new_tokens: int) -> "KVCacheDecoder":
        self.check_length(prompts.shape[1], max_new_tokens)
        self.use_attention(prompts.shape[1] + max_new_tokens)
        return KVCacheDecoder(self, prompts, G, max_new_tokens)

    # --- scoring ------------------------------------------------------------------------------------
    def log_probs(self, prompts: Tensor, completions: Tensor) -> Tensor:
        """log π(y_t | x, y_<t) for each completion token, (P, G, T), with a graph when gradients are on.
        Padding after EOS is scored too (it is masked downstream); causal attention keeps it from
        touching any real token.

        The prompt runs once per prompt, not once per completion (``shared_prompt_log_probs``); with
        gradient checkpointing, where transformers turns the cache off, every row runs whole
        (``full_log_probs``). The two agree to rounding (tests/test_lm.py)."""
        P, G, T = completions.shape
        self.check_length(prompts.shape[1], T)
        if self.gradient_checkpointing and self.model.training:
            return self.full_log_probs(prompts, completions)
        return self.shared_prompt_log_probs(prompts, completions)

    def full_log_probs(self, prompts: Tensor, completions: Tensor) -> Tensor:
        """``log_probs`` from one forward pass over each of the P·G rows prompt + completion."""
        P, G, T = completions.shape
        self.use_attention(prompts.shape[1] + T)
        pmask = repeat(prompt_mask(prompts, self.pad_id), "P L -> (P G) L", G=G)          # (P·G, L)
        y = rearrange(completions, "P G T -> (P G) T")                                    # (P·G, T)
        ids = torch.cat([repeat(prompts, "P L -> (P G) L", G=G), y], 1)                   # (P·G, L+T)
        attn = torch.cat([pmask, pmask.new_ones(P * G, T)], 1)                           # (P·G, L+T)
        with self.autocast():
            out = self.model(input_ids=ids, attention_mask=attn.long(), position_ids=positions(attn),
                             use_cache=False, logits_to_keep=T + 1)
        logits = out.logits[:, :-1]                             # (P·G, T, V): column L−1+t predicts y_t
        return rearrange(token_logp(logits, y), "(P G) T -> P G T", P=P)

    def prompt_pass(self, prompts: Tensor, G: int, n_new: int):
        """The prompt batch (P, L), once: (model output with its key/value cache and last-position
        logits, attention mask (P·G, L + n_new) of the G-fold rows with n_new completion columns,
        position of each row's first completion token (P·G, 1)). Sampling and the shared-prompt
        scoring pass both start here; call it inside ``autocast``."""
        pmask = prompt_mask(prompts, self.pad_id)                                         # (P, L)
        out = self.model(input_ids=prompts, attention_mask=pmask.long(), position_ids=positions(pmask),
                         use_cache=True, logits_to_keep=1)
        pm = repeat(pmask, "P L -> (P G) L", G=G)                                         # (P·G, L)
        attn = torch.cat([pm, pm.new_ones(pm.shape[0], n_new)], 1).long()                 # (P·G, L+n_new)
        return out, attn, pm.long().sum(-1, keepdim=True)

    def shared_prompt_log_probs(self, prompts: Tensor, completions: Tensor) -> Tensor:
        """``log_probs`` with the prompt computed once per prompt, as in sampling: the prompt (P, L) runs
        with its key/value cache, which is repeated G times (a differentiable copy, so gradients from
        every completion flow back into the one prompt pass) and the completions' first T − 1 tokens
        (P·G, T−1) run on top of it. The prompt's last position predicts y_1; completion position t
        predicts y_{t+1}. The G-fold prompt work saved is L/(L+T) of a full pass."""
        P, G, T = completions.shape
        self.use_attention(prompts.shape[1] + T)
        y = rearrange(completions, "P G T -> (P G) T")                                    # (P·G, T)
        with self.autocast():
            out, attn, start = self.prompt_pass(prompts, G, T - 1)                        # attn (P·G, L+T−1)
            first = repeat(out.logits[:, -1:], "P 1 V -> (P G) 1 V", G=G)                 # (P·G, 1, V) → y_1
            if T == 1:
                logits = first
            else:
                cache = out[self.cache_name]
                cache.batch_repeat_interleave(G)                                          # (P·G) rows
                pos = start + torch.arange(T - 1, device=start.device)                    # (P·G, T−1)
                rest = self.model(input_ids=y[:, :-1], attention_mask=attn,
                                  position_ids=pos, use_cache=True, **{self.cache_name: cache})
                logits = torch.cat([first, rest.logits], 1)                               # (P·G, T, V)
        return rearrange(token_logp(logits, y), "(P G) T -> P G T", P=P)

    # --- the anchor ---------------------------------------------------------------------------------
    def anchor(self) -> nn.Module:
        """π_anchor = this policy as it is now, frozen. With a LoRA (peft) model the anchor is the same
        weights with the adapter switched off — no second copy of the model in memory."""
        if is_peft_model(self.model):
            return AdapterOffAnchor(self)
        return copy.deepcopy(self).freeze()

    def freeze(self) -> "CausalLMPolicy":
        """Make this policy an anchor, in place: no gradients, eval mode, no checkpointing (there is no
        backward through it), and in bf16 its matmul weights stored in bf16 once
        (``store_matmul_weights_in``: bit-identical, no per-forward cast). Returns self."""
        self.requires_grad_(False)
        self.model.eval()
        store_matmul_weights_in(self.model, self.autocast_dtype)
        if self.gradient_checkpointing:
            disable = getattr(self.model, "activation_checkpointing_disable", None) or \
                self.model.gradient_checkpointing_disable
            disable()
            self.gradient_checkpointing = False
        return self


class AdapterOffAnchor(nn.Module):
    """The anchor of a LoRA policy: the policy's own forward with the peft adapter disabled, i.e. the
    base model it started from. Holds no weights of its own."""

    def __init__(self, policy: CausalLMPolicy):
        super().__init__()
        self._policy = [policy]          # a list, so the policy's parameters are not registered twice

    @property
    def device(self) -> torch.device:
        return self._policy[0].device

    @torch.no_grad()
    def log_probs(self, prompts: Tensor, completions: Tensor) -> Tensor:
        policy = self._policy[0]
        with policy.model.disable_adapter():
            return policy.log_probs(prompts, completions)

    def decoder(self, prompts: Tensor, G: int, max_new_tokens: int):
        return _AdapterOffDecoder(self._policy[0], prompts, G, max_new_tokens)

    def sampling_context(self):      # nothing held open: each decoder step switches the adapter off itself
        return contextlib.nullcontext()


class _AdapterOffDecoder:
    def __init__(self, policy, prompts, G, T):
        self.policy = policy
        with policy.model.disable_adapter():
            self.inner = policy.decoder(prompts, G, T)

    def step(self, y):
        with self.policy.model.disable_adapter():
            return self.inner.step(y)
