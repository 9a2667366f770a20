"""Speed: time one fixed GRPO workload through minigrpo (``minigrpo bench``), each run in its own process.

Peers (TRL's GRPOTrainer) live outside the package, in ``bench/``: a peer is a worker script that
reads the same workload from stdin (``worker_main``), and ``compare`` alternates it with minigrpo.

The workload (the same for every implementation)
-------------------------------------------------
* a GPT-2 built locally and randomly initialised (seeded): ``tiny`` (4 layers, width 128) or
  ``gpt2`` (12 layers, width 768, 12 heads), over a character-level tokenizer (``vocab`` pads it
  to a real vocabulary such as GPT-2's 50257);
* P addition prompts × G completions × T new tokens per step, every completion forced to full
  length (no EOS), so each implementation does the same arithmetic;
* DeepSeekMath GRPO: group mean/std advantages, k3 KL to the anchor in the loss with β > 0 (so the
  anchor forward runs), PPO clip 0.2, one gradient step per batch, AdamW with a constant learning
  rate and gradient clipping at 1;
* activations kept for the backward in both (``gradient_checkpointing=False``; TRL's own default
  recomputes them, trading time for memory: ``gradient_checkpointing=True`` sets it in both).

Each run is a fresh process (``run_isolated``), so its peak resident memory is its own; runs of
the two implementations alternate (A B B A …) so a drift in the machine's speed hits both alike.
The figure per implementation is the median seconds per step over the measured steps of all its
runs, after ``warmup`` steps per run.

Model FLOPs (``model_flops``): with N = 12·n_layer·d² + V·d (the weights used in matrix products,
the tied output layer included) and P·G·(L+T) tokens, a step is 2N·tokens to sample, 2N·tokens for
the anchor and 6N·tokens for the policy's forward and backward: 10·N·tokens. Attention scores and
element-wise work are not counted (about 1 % here). The effective rate (FLOPs ÷ s/step) is compared
with the machine's matrix-multiply rate measured in the same run (``matmul_rate``), and so is that of
minigrpo's scoring passes alone (``train_pass_fraction``: 8·N·tokens ÷ a step's time less sampling).
Results name the bf16 units found (``bf16_units``); bf16 where it would be emulated is refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from minigrpo.core.validate import FLAG, Rule, check_fields, integer, is_int, number, one_of, optional, setting
from minigrpo.lm.precision import bf16_support, require_bf16

SIZES = {"tiny": {"n_layer": 4, "n_embd": 128, "n_head": 4},
         "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12}}
PRECISIONS = ("fp32", "bf16")
MINIGRPO_WORKER = ("-m", "minigrpo.runs.speed")   # python argv of minigrpo's worker process
DIGITS = 2                       # addition prompts "ab+cd=": 6 characters


def _is_device_name(v) -> bool:
    return isinstance(v, str) and v != ""


@dataclass
class BenchConfig:
    """One benchmark workload and how to measure it (validated on construction)."""

    size: str = setting("tiny", one_of(SIZES))            # tiny (4 layers, width 128) or gpt2 (12 layers, width 768)
    prompts: int = setting(8, integer(1))                  # P prompts per step
    group_size: int = setting(8, integer(2))               # G completions per prompt (the group mean/std baseline needs 2)
    new_tokens: int = setting(32, integer(1))              # T tokens per completion, all generated (no early EOS)
    precision: str = setting("fp32", one_of(PRECISIONS))   # fp32, or bf16 (autocast for both implementations)
    steps: int = setting(5, integer(1))                    # measured steps per run
    warmup: int = setting(2, integer(0))                   # unmeasured steps at the start of each run
    rounds: int = setting(2, integer(1))                   # runs per implementation, alternating
    beta: float = setting(0.04, number(gt=0))              # KL coefficient (> 0: the anchor is in use)
    lr: float = setting(1e-5, number(gt=0))                # AdamW learning rate, constant
    # None: the character tokenizer's own 15 tokens; else padded to this size (50257: GPT-2's)
    vocab: int | None = setting(None, optional(Rule(lambda v: is_int(v) and 15 <= v <= 1_000_000,
                                                    "must be an integer from 15 to 1,000,000")))
    threads: int | None = setting(None, optional(integer(1)))   # torch threads in every run; None: torch's default
    # the torch device every run uses: cpu, cuda, cuda:1, …
    device: str = setting("cpu", Rule(_is_device_name, "must be a torch device name such as 'cpu' or 'cuda'"))
    gradient_checkpointing: bool = setting(False, FLAG)    # recompute activations in the backward (TRL's default is on)
    seed: int = setting(0, integer(0))                     # seeds the model's weights, the prompts and sampling

    def __post_init__(self):
        check_fields(self)

    def shape(self) -> dict:
        return dict(SIZES[self.size])


@dataclass
class Workload:
    """What one run trains on: a model folder, the prompts of every step, and how completions end."""

    model_dir: str
    prompts: list            # prompt texts, P per step, for warmup + steps steps
    answers: list            # their answers (the exact-answer reward)
    full_length: bool = True     # True: no EOS, every completion has T tokens
    extra: dict = field(default_factory=dict)


# --- the model and the prompts ----------------------------------------------------------------------------
def build_model(cfg: BenchConfig, out_dir: str | Path) -> Path:
    """Build the workload's tokenizer and seeded random GPT-2, ``save_pretrained`` into ``out_dir``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from minigrpo.lm.models import quiet_transformers
    from minigrpo.lm.tasks import AdditionTask
    from minigrpo.lm.tokens import char_tokenizer

    tok = char_tokenizer(AdditionTask.alphabet, vocab_size=cfg.vocab)
    n_positions = max(1024, AdditionTask(DIGITS).max_prompt_len + cfg.new_tokens)
    config = GPT2Config(vocab_size=len(tok), n_positions=n_positions, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **cfg.shape())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = GPT2LMHeadModel(config)
    out = Path(out_dir)
    with quiet_transformers():
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return out


def workload(cfg: BenchConfig, model_dir: str | Path, n_steps: int | None = None, full_length: bool = True,
             equal_length: bool = False) -> Workload:
    """The prompts of ``n_steps`` steps (default warmup + steps): addition problems drawn with ``cfg.seed``.
    ``equal_length``: only prompts of the longest form ("ab+cd="), so no batch holds left padding."""
    from minigrpo.lm.tasks import AdditionTask

    task = AdditionTask(DIGITS)
    n = cfg.prompts * (n_steps or cfg.warmup + cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    if not equal_length:
        problems = task.sample(n, "train", gen)
    else:
        problems = []
        while len(problems) < n:
            problems += [p for p in task.sample(n, "train", gen) if len(p.prompt) == task.max_prompt_len]
        problems = problems[:n]
    return Workload(str(model_dir), [p.prompt for p in problems], [p.answer for p in problems], full_length)


def matmul_params(n_layer: int, n_embd: int, vocab: int) -> int:
    """N = 12·n_layer·d² + V·d: the weights a token meets in matrix products (attention 4d², MLP 8d²
    per layer, and the tied output layer); biases, layer norms and embedding lookups are left out."""
    return 12 * n_layer * n_embd ** 2 + vocab * n_embd


def model_flops(n_layer: int, n_embd: int, vocab: int, P: int, G: int, L: int, T: int) -> float:
    """FLOPs of one GRPO step, 10·N·tokens with tokens = P·G·(L+T): 2N per token to sample (a forward
    with a KV cache), 2N for the anchor's forward, 6N for the policy's forward and backward."""
    return 10.0 * matmul_params(n_layer, n_embd, vocab) * P * G * (L + T)


def matmul_rate(precision: str = "fp32", n: int = 2048, repeats: int = 7, device: str = "cpu") -> float:
    """The machine's matrix-multiply rate in GFLOP/s: median of ``repeats`` n×n·n×n products (2n³ FLOPs)
    in the given precision, with the current torch thread setting."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 1024)


def peak_device_mib(device: str) -> float | None:
    on_gpu = device.startswith("cuda") and torch.cuda.is_available()
    return torch.cuda.max_memory_allocated() / 2 ** 20 if on_gpu else None


# --- minigrpo's run ---------------------------------------------------------------------------------------
def run_minigrpo(cfg: BenchConfig, work: Workload) -> dict:
    """Train ``warmup + steps`` GRPO steps with minigrpo's own loop pieces (those ``train_lm`` uses) and
    time each step: prompts → ids, ``grpo_step`` (sample, reward, anchor, advantages, update) and the
    step's metrics. The recipe is ``deepseek_grpo`` (group mean/std, k3 in the loss, clip 0.2)."""
    from minigrpo.rewards.checks import task_reward
    from minigrpo.lm.policy import CausalLMPolicy
    from minigrpo.lm.models import load_causal_lm
    from minigrpo.core.optimizer import adamw
    from minigrpo.core.recipe import deepseek_grpo
    from minigrpo.lm.tasks import AdditionTask
    from minigrpo.lm.tokens import encode_prompts
    from minigrpo.core.step import grpo_step

    dev = torch.device(cfg.device)
    model, tok = load_causal_lm(work.model_dir, device=dev)
    autocast = torch.bfloat16 if cfg.precision == "bf16" else None
    policy = CausalLMPolicy(model, tok.pad_token_id, autocast_dtype=autocast,
                            gradient_checkpointing=cfg.gradient_checkpointing)
    anchor = policy.anchor()
    recipe = deepseek_grpo()
    reward = task_reward(AdditionTask(DIGITS), tok, {"correct": 1.0})
    optimizer = adamw(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    eos = None if work.full_length else tok.eos_token_id
    P = cfg.prompts
    n_steps = len(work.prompts) // P
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times, rewards, lengths, sampling = [], [], [], []
    policy.sampling_context = _timed(policy.sampling_context, sync, sampling)   # sampling's share of a step
    for t in range(n_steps):
        sync()
        t0 = time.perf_counter()
        prompts = encode_prompts(tok, work.prompts[t * P:(t + 1) * P]).to(dev)               # (P, L)
        step = grpo_step(policy, anchor, prompts, reward, recipe, cfg.beta, optimizer, cfg.group_size,
                         generator=gen, max_grad_norm=1.0, max_new_tokens=cfg.new_tokens, eos_id=eos,
                         pad_id=tok.pad_token_id)
        m = step.metrics()
        sync()
        times.append(time.perf_counter() - t0)
        rewards.append(m["reward"])
        lengths.append(m["completion_length"])
    return {"step_seconds": times, "rewards": rewards, "completion_lengths": lengths,
            "prompt_tokens": int(prompts.shape[1]), "sample_seconds": sampling}


def _timed(context, sync, seconds: list):
    """``context`` (open around a rollout's token loop) that also appends the seconds it was open."""
    @contextlib.contextmanager
    def timed():
        sync()
        t0 = time.perf_counter()
        with context():
            yield
        sync()
        seconds.append(time.perf_counter() - t0)
    return timed


# --- one run in its own process ------------------------------------------------------------------------------
def run_in_process(run, cfg: BenchConfig, work: Workload) -> dict:
    """Run ``run(cfg, work)`` here (the worker side of ``run_isolated``) and add this process's figures."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = run(cfg, work)
    out.update(threads=torch.get_num_threads(), peak_rss_mib=peak_rss_mib(), peak_device_mib=peak_device_mib(cfg.device))
    return out


def run_isolated(name: str, worker: tuple, cfg: BenchConfig, work: Workload, timeout: float | None = None) -> dict:
    """Run one implementation in a fresh Python process (``python *worker``, e.g. ``MINIGRPO_WORKER``)
    that reads the workload as JSON on stdin and prints its result as one JSON line."""
    payload = json.dumps({"config": asdict(cfg), "workload": asdict(work)})
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if cfg.threads is not None:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    proc = subprocess.run([sys.executable, *worker], input=payload, capture_output=True, text=True, env=env,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the {name} benchmark run failed (exit code {proc.returncode}):\n{tail}")
    return {**json.loads(lines[-1]), "impl": name}


def worker_main(run) -> int:
    """The body of a worker process: the workload from stdin, ``run(cfg, work)``, one JSON line out."""
    req = json.loads(sys.stdin.read())
    out = run_in_process(run, BenchConfig(**req["config"]), Workload(**req["workload"]))
    print(json.dumps(out), flush=True)
    return 0


# --- the comparison ---------------------------------------------------------------------------------------
def summarise(runs: list[dict], cfg: BenchConfig, flops: float) -> dict:
    """Median s/step over the measured steps of all runs, tokens/s, peak memory (the worst run)."""
    measured = [s for r in runs for s in r["step_seconds"][cfg.warmup:]]
    s = statistics.median(measured)
    out = {"s_per_step": s, "tokens_per_s": cfg.prompts * cfg.group_size * cfg.new_tokens / s,
           "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
           "effective_gflops": flops / s / 1e9, "steps_measured": len(measured),
           "s_per_step_runs": [statistics.median(r["step_seconds"][cfg.warmup:]) for r in runs],
           "threads": runs[0]["threads"]}
    if all(r.get("sample_seconds") for r in runs):     # minigrpo's: each step's time less its sampling
        out["pass_s_per_step"] = statistics.median(
            s - x for r in runs for s, x in zip(r["step_seconds"][cfg.warmup:], r["sample_seconds"][cfg.warmup:]))
    dev = [r["peak_device_mib"] for r in runs if r.get("peak_device_mib") is not None]
    if dev:
        out["peak_device_mib"] = max(dev)
    return out


def compare(cfg: BenchConfig, peers: dict[str, tuple] | None = None, progress=None) -> dict:
    """Build the workload, measure the matmul rate, run minigrpo (and each peer: name → worker argv)
    ``cfg.rounds`` times each, alternating, and summarise. ``progress(msg)`` hears what is running.
    With one peer the result also holds ``speedup`` (peer s/step ÷ ours), ``time_ratio`` and ``memory_ratio``."""
    say = progress or (lambda msg: None)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but torch sees no CUDA GPU here; use device='cpu'")
    bf16_units = require_bf16(cfg.device) if cfg.precision == "bf16" else bf16_support(cfg.device).why
    workers = {"minigrpo": MINIGRPO_WORKER, **(peers or {})}
    impls = list(workers)
    with tempfile.TemporaryDirectory(prefix="minigrpo-bench-") as tmp:
        say(f"building the {cfg.size} model")
        model_dir = build_model(cfg, tmp)
        work = workload(cfg, model_dir)
        from transformers import AutoConfig

        mc = AutoConfig.from_pretrained(model_dir)
        runs = {i: [] for i in impls}
        for r in range(cfg.rounds):
            for impl in (impls if r % 2 == 0 else impls[::-1]):
                say(f"round {r + 1}/{cfg.rounds}: {impl}")
                runs[impl].append(run_isolated(impl, workers[impl], cfg, work))
    threads = cfg.threads or torch.get_num_threads()
    with _threads(threads):
        rate = matmul_rate(cfg.precision, device=cfg.device)
    L = runs["minigrpo"][0]["prompt_tokens"]
    flops = model_flops(mc.n_layer, mc.n_embd, mc.vocab_size, cfg.prompts, cfg.group_size, L, cfg.new_tokens)
    peer = impls[1] if len(impls) == 2 else None
    result = {"config": asdict(cfg), "device": device_name(cfg.device), "torch": torch.__version__,
              "model_params": _param_count(mc), "prompt_tokens": L, "gflop_per_step": flops / 1e9,
              "matmul_gflops": rate, "bf16_units": bf16_units, "peer": peer}
    for impl in impls:
        fig = summarise(runs[impl], cfg, flops)
        fig["matmul_fraction"] = fig["effective_gflops"] / rate
        if "pass_s_per_step" in fig:     # anchor forward + policy forward and backward: 8 of the 10·N·tokens
            fig["train_pass_fraction"] = 0.8 * flops / fig["pass_s_per_step"] / 1e9 / rate
        if impl == "minigrpo":
            result.update(fig)
        else:
            result[impl] = fig
    if peer:
        theirs = result[peer]
        result["speedup"] = theirs["s_per_step"] / result["s_per_step"]
        result["time_ratio"] = result["s_per_step"] / theirs["s_per_step"]
        result["memory_ratio"] = result["peak_rss_mib"] / theirs["peak_rss_mib"]
    return result


def _param_count(mc) -> int:
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        return sum(p.numel() for p in GPT2LMHeadModel(mc).parameters())


@contextlib.contextmanager
def _threads(n):
    was = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(was)


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def table(results: list[dict]) -> str:
    """A markdown table of ``compare`` results: one row per implementation per workload."""
    head = ("| size | precision | P×G×T | impl | s/step | tokens/s | peak RSS MiB | GFLOP/s (% of matmul) "
            "| TRL ÷ minigrpo (time) |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in results:
        c = r["config"]
        shape = f"{c['prompts']}×{c['group_size']}×{c['new_tokens']}" + (f", V {c['vocab']}" if c.get("vocab") else "")
        shape += ", checkpointing" if c.get("gradient_checkpointing") else ""
        for impl, fig in [("minigrpo", r)] + ([(r["peer"], r[r["peer"]])] if r.get("peer") else []):
            ratio = f"{r['speedup']:.2f}×" if impl == "minigrpo" and r.get("peer") else ""
            rows.append(f"| {c['size']} | {c['precision']} | {shape} | {impl} | {fig['s_per_step']:.3f} | "
                        f"{fig['tokens_per_s']:.0f} | {fig['peak_rss_mib']:.0f} | {fig['effective_gflops']:.1f} "
                        f"({100 * fig['matmul_fraction']:.0f} %) | {ratio} |")
    return "\n".join([head] + rows)


if __name__ == "__main__":
    sys.exit(worker_main(run_minigrpo))
