"""A learned value function (the critic) for PPO on a Hugging Face causal LM.

===============  ==========  ==============================================================
``prompts``      (P, L)      prompt ids, left-padded with ``pad_id`` (as ``CausalLMPolicy`` takes them)
``completions``  (P, G, T)   completion ids y_1 … y_T, padded after EOS
``V``            (P, G, T)   V_φ(x, y_<t): the value of the state before token t, float32
===============  ==========  ==============================================================

The critic estimates the return still to come from the state (x, y_<t):

    V_φ(x, y_<t) ≈ E[ Σ_{s ≥ t} r_s | x, y_<t ]

PPO (Ziegler et al. 2019; Ouyang et al. 2022) uses it as the per-token baseline of GAE
(``minigrpo.core.critic``: ``gae`` and ``Critic``, which calls ``value_net(prompts, completions)``).
V[p, g, t] is a linear head on the trunk's last hidden state at the column that predicts y_t, i.e.
column L − 1 + t of the row prompt + completion (t = 0 … T−1 counts from 0: y_t sits at column L + t),
run with the same attention mask and position ids as ``CausalLMPolicy``, so left padding changes nothing.

Why a separate critic (a copy of the anchor's transformer trunk plus a scalar head) rather than a
value head on the policy's own trunk:

* the policy's gradient stays exactly the policy-gradient loss: no value-loss coefficient mixes a
  regression gradient into the policy's weights, so the policy update is the one the rest of the
  toolkit describes;
* it works unchanged with LoRA policies (the critic trains all of its own weights, the policy
  only its adapter);
* InstructGPT also used a separate value model (Ouyang et al. 2022, appendix C.3).

The price: a second trunk in memory (plus its optimizer state) and one more forward/backward per
minibatch. The head starts at zero (weight and bias), so V = 0 everywhere at the start: the first
advantages are the plain returns, and no random head injects noise into them.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from minigrpo.lm.policy import disable_dropout, fuse_activations, is_peft_model, positions, prompt_mask

WEIGHTS = "value_model.safetensors"      # trunk.* and head.* in one file; the trunk's config.json beside it


class ValueModel(nn.Module):
    """V_φ(x, y_<t) for every completion token: ``trunk`` (a transformer without its LM head, e.g.
    ``GPT2Model``, ``LlamaModel``) and ``head`` = Linear(hidden_size, 1), zero at init.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward under autocast, as the policy does;
    V comes back in float32 either way. Dropout in the trunk is set to 0 (V must be a function of φ
    alone: the old values of PPO's clipped value loss are recomputed from the same weights), and
GPT-2's GELU is fused as in the policy (``fuse_activations``: the same function, one kernel)."""

    def __init__(self, trunk: nn.Module, hidden_size: int, pad_id: int, *,
                 autocast_dtype: torch.dtype | None = None):
        super().__init__()
        if pad_id is None:
            raise ValueError("ValueModel: pad_id=None; give the tokenizer's pad id (the one that left-pads prompts)")
        self.trunk = trunk
        self.pad_id = int(pad_id)
        self.autocast_dtype = autocast_dtype
        self.attention_for = None      # length → attention implementation (the policy's rule), or None: as loaded
        device = next(trunk.parameters()).device
        self.head = nn.Linear(hidden_size, 1, device=device)                               # float32
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        disable_dropout(trunk)
        fuse_activations(trunk)

    @classmethod
    def from_causal_lm(cls, model: nn.Module, pad_id: int, *,
                       autocast_dtype: torch.dtype | None = None) -> "ValueModel":
        """A critic whose trunk is a trainable deep copy of ``model.base_model`` (GPT-2: ``.transformer``;
        Llama/Qwen2: ``.model``); ``model`` itself is left untouched. A peft (LoRA) model is merged
        first, on a copy (``merge_and_unload``): the critic starts from the function the model computes
        now, which for a fresh adapter (B = 0) is the base model. That copy holds the whole model for a
        moment, LM head included."""
        if is_peft_model(model):
            model = copy.deepcopy(model).merge_and_unload()
            trunk = model.base_model
        else:
            trunk = copy.deepcopy(model.base_model)
        trunk.requires_grad_(True)
        return cls(trunk, model.config.hidden_size, pad_id, autocast_dtype=autocast_dtype)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def use_attention(self, length: int) -> None:
        """Switch the trunk to ``attention_for(length)`` when a rule is set (a run sets the policy's own,
        ``CausalLMPolicy.attention_for``): the critic then computes with the attention the policy
        uses, whatever implementation the trunk was copied with — so a resumed run's critic computes
        what an uninterrupted one's does, to the bit."""
        want = None if self.attention_for is None else self.attention_for(length)
        config = getattr(self.trunk, "config", None)
        if want is not None and config is not None and want != config._attn_implementation:
            self.trunk.set_attn_implementation(want)

    def forward(self, prompts: Tensor, completions: Tensor) -> Tensor:
        """V (P, G, T) float32 with a graph: V[p, g, t] read at the column that predicts y_t. One forward
        over each of the P·G rows prompt + completion (as ``CausalLMPolicy.full_log_probs``)."""
        P, G, T = completions.shape
        L = prompts.shape[1]
        pmask = repeat(prompt_mask(prompts, self.pad_id), "P L -> (P G) L", G=G)          # (P·G, L)
        y = rearrange(completions, "P G T -> (P G) T")                                    # (P·G, T)
        ids = torch.cat([repeat(prompts, "P L -> (P G) L", G=G), y], 1)                   # (P·G, L+T)
        attn = torch.cat([pmask, pmask.new_ones(P * G, T)], 1)                           # (P·G, L+T)
        self.use_attention(L + T)
        with self.autocast():
            out = self.trunk(input_ids=ids, attention_mask=attn.long(), position_ids=positions(attn),
                             use_cache=False)
            h = out.last_hidden_state[:, L - 1:L + T - 1]             # (P·G, T, d): column L−1+t predicts y_t
            v = self.head(h.to(self.head.weight.dtype))[..., 0]                          # (P·G, T)
        return rearrange(v.float(), "(P G) T -> P G T", P=P)

    # --- checkpoints ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``folder``/config.json (the trunk's) and ``folder``/value_model.safetensors (trunk and head,
        ``safetensors.torch.save_model``, with pad_id and the trunk's dtype as metadata). Atomic: written
        into ``folder.tmp-XXXX``, then renamed; an existing ``folder`` is replaced. Returns the folder."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
        try:
            self.trunk.config.save_pretrained(tmp)
            dtype = str(next(self.trunk.parameters()).dtype).removeprefix("torch.")
            save_model(self, str(tmp / WEIGHTS), metadata={"pad_id": str(self.pad_id), "trunk_dtype": dtype})
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path, like: "ValueModel | None" = None, *,
             autocast_dtype: torch.dtype | None = None) -> "ValueModel":
        """The critic saved in ``folder``. With ``like``: its weights are overwritten in place and ``like`` is
        returned (an optimizer built on its parameters stays valid: resume). Without: the trunk is built
        from the saved config.json (``AutoModel.from_config``, so a registered transformers architecture),
        on the CPU."""
        from safetensors import safe_open
        from safetensors.torch import load_model

        folder = Path(folder)
        weights, config = folder / WEIGHTS, folder / "config.json"
        if not (weights.is_file() and config.is_file()):
            raise FileNotFoundError(f"ValueModel.load: {str(folder)!r} holds no saved critic (it needs config.json "
                                    f"and {WEIGHTS}, written by ValueModel.save)")
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata()
        pad_id = int(meta["pad_id"])
        if like is None:
            from transformers import AutoConfig, AutoModel

            trunk = AutoModel.from_config(AutoConfig.from_pretrained(folder), dtype=getattr(torch, meta["trunk_dtype"]))
            like = cls(trunk, trunk.config.hidden_size, pad_id, autocast_dtype=autocast_dtype)
        elif like.pad_id != pad_id:
            raise ValueError(f"ValueModel.load: {str(folder)!r} was saved with pad_id={pad_id}, the critic to load "
                             f"into has pad_id={like.pad_id}")
        load_model(like, str(weights), device=str(like.device))
        return like
