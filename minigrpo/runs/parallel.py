"""Data-parallel runs: one step's prompts shared by n processes (🤗 Accelerate), the same run as on one.

``accelerate launch --num_processes n -m minigrpo train …`` starts n copies of the run; ``train_lm``
finds them with ``Processes.from_environment()``. A step of P prompts (P divisible by n):

=======================  ==================================================================================
every process            draws the step's P rows (the same generator, so the same rows) and encodes
                         them (P, L)
process k                takes the prompts ``share(P)`` = [k·P/n, (k+1)·P/n) and runs ``core.step``
                         on them, unchanged: samples G completions each, scores them, anchor log-probs,
                         advantages, ψ, ∇θ
its random numbers       prompt p's come from (seed, step, p) (``prompt_noise``), not from a batch-wide
                         generator: a prompt gets the same completions whichever process samples it
two pieces see the batch the baseline and the aggregation W: computed on the gathered (P, …) tensors,
                         and this process's rows cut out (``WholeBatch``): they equal the 1-process
                         numbers, bit for bit
the gradient             L = Σ_{p,g,t} W·ℓ is a sum over prompts, so ∇θ L is the sum over processes
                         of each one's part: one all-reduce (sum) of the gradients
                         (``SummedGradients``), then the same clip and the same optimizer step
                         everywhere, so the weights stay equal without being sent
metrics and samples      the step's (P, G, T) tensors gathered (``gather_step``), and
                         ``Step.metrics()`` on them: the 1-process numbers (to float rounding)
files                    only the main process writes the run folder and its checkpoints
=======================  ==================================================================================

Why the normalisers must see the whole batch: DDP *averages* gradients over processes, which is
right only when each process's loss is a mean with the same weight per process. GRPO's
``seq_mean_token_mean`` divides by P·G·|o|, ``group_token_mean`` and ``constant_normaliser`` by P,
and ``token_mean`` by the batch's token count Σm — a process computing them on its P/n prompts uses
P/n for P and its own Σm, and for ``token_mean`` no rescaling can repair that (each process has
its own count). Here W is computed once on the whole batch's mask and the gradients are summed, so
the result is the 1-process gradient for every aggregation. The baseline sees the whole batch for
the same reason (``batch_mean`` averages over every prompt; the group baselines are per prompt and
come out the same either way).

One process (``Processes()``, no Accelerate): ``share`` is every prompt and every method here is
the identity, so a plain run does exactly what it did.
"""
from __future__ import annotations

import os
from dataclasses import fields, is_dataclass, replace

import torch
from torch import Tensor

from minigrpo.core.recipe import aggregation_name


class Processes:
    """The processes of a run: one (the default: nothing to share, nothing imported) or those an
    ``accelerate launch`` started (``from_environment``). ``index`` k of ``count`` n."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.index = 0 if accelerator is None else accelerator.process_index
        self.count = 1 if accelerator is None else accelerator.num_processes

    @classmethod
    def from_environment(cls, device: str = "auto") -> "Processes":
        """The processes ``accelerate launch`` (or ``torchrun``) started — it sets WORLD_SIZE — or one
        process. On CPUs (``device`` 'cpu', or no GPU) they talk through gloo."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import Accelerator

        return cls(Accelerator(cpu=device == "cpu" or not torch.cuda.is_available()))

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder."""
        return self.index == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's device: ``device`` on one process or a CPU, else the GPU Accelerate gave it."""
        if self.count == 1 or device.type == "cpu":
            return device
        return self.accelerator.device

    def share(self, P: int) -> slice:
        """This process's prompts of a step of P: [k·P/n, (k+1)·P/n)."""
        if P % self.count:
            raise ValueError(f"{P} prompts a step cannot be shared by {self.count} processes; make prompts_per_step "
                             "a multiple of the number of processes")
        n = P // self.count
        return slice(self.index * n, (self.index + 1) * n)

    def gather(self, x: Tensor) -> Tensor:
        """Every process's ``x`` (its rows of the batch) concatenated in process order: the batch's (P, …)."""
        if self.count == 1:
            return x
        flag = x.dtype == torch.bool                      # gloo gathers no bool tensors
        out = self.accelerator.gather((x.to(torch.uint8) if flag else x).contiguous())
        return out.bool() if flag else out

    def sum_(self, tensors: list[Tensor]) -> None:
        """Replace each tensor by its sum over the processes (one all-reduce of them all, flattened)."""
        if self.count == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        flat = self.accelerator.reduce(flat, reduction="sum")
        at = 0
        for t in tensors:
            t.copy_(flat[at:at + t.numel()].view_as(t))
            at += t.numel()

    def broadcast(self, obj):
        """The main process's ``obj`` (any picklable value), on every process."""
        if self.count == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj])[0]

    def wait(self) -> None:
        """Every process waits here until all have arrived (around checkpoints)."""
        if self.count > 1:
            self.accelerator.wait_for_everyone()


def refuse_unshared(cfg, count: int) -> None:
    """The settings a run on ``count`` > 1 processes cannot honour yet, refused in one line each."""
    if count == 1:
        return
    if cfg.method != "grpo":
        raise ValueError(f"--method {cfg.method} does not run on several processes yet (grpo does); run it on one")
    if cfg.prompts_per_step % count:
        raise ValueError(f"--prompts-per-step {cfg.prompts_per_step} cannot be shared by {count} processes; make it a "
                         "multiple of the number of processes")
    if cfg.minibatches != 1:
        raise ValueError(f"--minibatches {cfg.minibatches} does not run on several processes yet; use 1")


def prompt_noise(seed: int, step: int, prompts: range, G: int, T: int, device=None) -> Tensor:
    """The uniform numbers (len(prompts), G, T) that sample prompt p of step ``step``: drawn from a
    generator seeded by (seed, step, p) alone, so prompt p gets the same completions in any batch,
    on any process (``core.sampling.sample_group``'s ``noise``). Drawn on the CPU (the same numbers on
    every device) and moved."""
    u = torch.empty(len(prompts), G, T)
    gen = torch.Generator()
    for i, p in enumerate(prompts):
        gen.manual_seed(((seed * 1_000_003 + step) * 1_000_003 + p) % 2**63)
        torch.rand(G, T, generator=gen, out=u[i])
    return u.to(device)


# --- the step's pieces that read the whole batch ---------------------------------------------------

class WholeBatch:
    """A baseline or an aggregation computed on the whole batch: its input gathered from every process
    (P, …) and this process's rows of the result cut out, so a process's A and W are the 1-process
    ones. Named as the piece it wraps (``name``, ``__name__``: what ``recipe.pieces`` reads)."""

    def __init__(self, piece, processes: Processes, name: str):
        self.piece, self.processes = piece, processes
        self.name = self.__name__ = name

    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        g = self.processes.gather
        rows = self.processes.share(x.shape[0] * self.processes.count)
        args = tuple(g(a) if isinstance(a, Tensor) else a for a in args)
        kwargs = {k: g(v) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        return self.piece(g(x), *args, **kwargs)[rows]


def shared_recipe(recipe, processes: Processes):
    """``recipe`` with its baseline and aggregation computed on the whole batch (``WholeBatch``)."""
    if processes.count == 1:
        return recipe
    return replace(recipe, baseline=WholeBatch(recipe.baseline, processes, recipe.baseline.name),
                   aggregation=WholeBatch(recipe.aggregation, processes, aggregation_name(recipe.aggregation)))


class SummedGradients:
    """The policy as one process's ``core.step.learn`` sees it: the same policy, whose
    ``accumulate_grad`` then sums the trainable parameters' gradients over the processes. With the
    whole batch's W, each process's Σ ψ·∇logp is its part of the batch's gradient, and the sum is the
    whole (a parameter without a gradient counts as zero, and gets one)."""

    def __init__(self, policy, processes: Processes):
        self.policy, self.processes = policy, processes

    def accumulate_grad(self, prompts, completions, logp, psi) -> None:
        self.policy.accumulate_grad(prompts, completions, logp, psi)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.processes.sum_([p.grad for p in params])

    # everything else is the policy's own
    def log_probs(self, prompts, completions):
        return self.policy.log_probs(prompts, completions)

    def parameters(self):
        return self.policy.parameters()

    def decoder(self, prompts, G, max_new_tokens):
        return self.policy.decoder(prompts, G, max_new_tokens)

    def sampling_context(self):
        return self.policy.sampling_context()


def gather_step(step, processes: Processes):
    """The whole batch's ``core.step.Step`` from every process's own: each (P/n, …) tensor gathered into
    (P, …), the rest (recipe, β, the gradient norm, already global) as it is. Its ``metrics()`` are
    the 1-process run's."""
    if processes.count == 1:
        return step
    return _gathered(step, processes.gather, keep=("recipe", "beta", "grad_norm", "_cache"), fresh={"_cache": {}})


def _gathered(obj, gather, keep=(), fresh=None):
    """A dataclass with every tensor field (and every tensor in a dict or dataclass field) gathered."""
    def one(v):
        if isinstance(v, Tensor):
            return gather(v)
        if isinstance(v, dict):
            return {k: one(x) for k, x in v.items()}
        if is_dataclass(v) and not isinstance(v, type):
            return _gathered(v, gather)
        return v

    changes = {f.name: one(getattr(obj, f.name)) for f in fields(obj) if f.name not in keep and f.init}
    return replace(obj, **changes, **(fresh or {}))
