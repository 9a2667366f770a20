"""The peer in the speed benchmark: Hugging Face TRL's ``GRPOTrainer`` on the same workload.

It runs as a worker process of ``minigrpo.runs.speed.compare`` (``python bench/peer_trl.py`` reads the
workload on stdin, see ``bench/trl_compare.py``); nothing in the package imports it. TRL is a
benchmark-only extra (``pip install -e '.[bench]'``). The settings mirror ``speed.run_minigrpo``:

=====================================  ==========================================================
minigrpo                               TRL ``GRPOConfig``
=====================================  ==========================================================
P prompts × G completions              ``per_device_train_batch_size = P·G``, ``num_generations = G``
T new tokens, all generated            ``max_completion_length = T``, ``min_new_tokens = T`` (no EOS)
group mean/std advantages              ``scale_rewards = "group"``
k3 KL in the loss, β                   ``beta = β``, ``use_bias_correction_kl = False`` (DeepSeekMath's k3;
                                       TRL's default multiplies it by the importance ratio)
PPO clip 0.2, per-sequence token mean  ``epsilon = 0.2``, ``loss_type = "grpo"``
one update per batch                   ``num_iterations = 1``, ``steps_per_generation = 1``
AdamW, constant lr, clip ‖∇‖ at 1      ``lr_scheduler_type = "constant"``, ``max_grad_norm = 1``
bf16 autocast                          ``bf16 = True`` (Trainer/accelerate autocast)
gradient checkpointing off (or on)     ``gradient_checkpointing`` set the same (TRL defaults to on)
=====================================  ==========================================================

A step is timed from one ``on_step_end`` callback to the next, so it holds everything the
trainer does between two optimizer steps (data loading, generation, reward, both forwards,
backward, optimizer, logging).
"""
from __future__ import annotations

import sys
import tempfile
import time

from minigrpo.runs.speed import worker_main


def run_trl(cfg, work) -> dict:
    """Train ``len(work.prompts) / P`` steps with TRL's GRPOTrainer; per-step times and mean rewards."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    P, G, T = cfg.prompts, cfg.group_size, cfg.new_tokens
    n_steps = len(work.prompts) // P
    tok = AutoTokenizer.from_pretrained(work.model_dir)
    tok.padding_side = "left"
    data = Dataset.from_dict({"prompt": work.prompts[:n_steps * P], "answer": work.answers[:n_steps * P]})
    rewards, lengths = [], []

    def correct(prompts, completions, answer, completion_ids=None, **kwargs):
        """The exact-answer reward, as minigrpo's ``checks.exact_answer``."""
        r = [float(c == a) for c, a in zip(completions, answer)]
        rewards.append(sum(r) / len(r))
        if completion_ids is not None:
            lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
        return r

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available() and cfg.device.startswith("cuda"):
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

    clock = Clock()
    generation = {"min_new_tokens": T} if work.full_length else {}
    with tempfile.TemporaryDirectory(prefix="minigrpo-trl-") as out:
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=P * G, num_generations=G, max_completion_length=T,
            steps_per_generation=1, num_iterations=1, gradient_accumulation_steps=1,
            beta=cfg.beta, epsilon=0.2, loss_type="grpo", scale_rewards="group", use_bias_correction_kl=False,
            learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            max_steps=n_steps, temperature=1.0, top_p=1.0, generation_kwargs=generation,
            bf16=cfg.precision == "bf16", use_cpu=cfg.device == "cpu", seed=cfg.seed, data_seed=cfg.seed,
            gradient_checkpointing=cfg.gradient_checkpointing,
            shuffle_dataset=False, save_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0, log_completions=False,
        )
        trainer = GRPOTrainer(model=work.model_dir, reward_funcs=correct, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[clock])
        trainer.train()
    times = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    return {"step_seconds": times, "rewards": rewards, "completion_lengths": lengths,
            "prompt_tokens": None}


if __name__ == "__main__":
    sys.exit(worker_main(run_trl))
