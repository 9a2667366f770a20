"""Plain attention against torch's fused kernel on this CPU, at the shapes a GRPO step uses.

    python bench/attention_cpu.py [--threads 2]

``CausalLMPolicy(attention="auto")`` uses plain attention (q·kᵀ, softmax, ·v, transformers' "eager")
on a CPU for sequences of at most ``lm.SHORT_CONTEXT`` positions, because of what this prints:
microseconds per call, median of 30, for decoding (1 query) and scoring (all queries) shapes of the
GPT-2-size workload (64 rows × 12 heads × head size 64), in fp32 and bf16.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from args import Parser, positive_int

SHAPES = [("decode, 38 keys", 64, 12, 1, 38, 64), ("score, 31 queries × 37 keys", 64, 12, 31, 37, 64),
          ("score, 38 × 38", 64, 12, 38, 38, 64), ("decode, 134 keys (T = 128)", 16, 12, 1, 134, 64)]


def timed(f, repeats: int = 30) -> float:
    for _ in range(5):
        f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=positive_int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| shape (B, H, Q, S, D) | dtype | fused SDPA µs | plain µs | fused ÷ plain |\n|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for name, B, H, Q, S, D in SHAPES:
            q, k, v = (torch.randn(B, H, n, D, dtype=dtype) for n in (Q, S, S))
            keep = torch.ones(B, 1, Q, S, dtype=torch.bool).tril(S - Q)
            add = torch.zeros(B, 1, Q, S, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)

            def plain():
                w = torch.matmul(q, k.transpose(-1, -2)) * D ** -0.5 + add
                return torch.matmul(w.softmax(-1, dtype=torch.float32).to(dtype), v)

            fused = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=keep))
            eager = timed(plain)
            print(f"| {name} ({B}, {H}, {Q}, {S}, {D}) | {str(dtype)[6:]} | {fused:.0f} | {eager:.0f} | "
                  f"{fused / eager:.1f}× |")


if __name__ == "__main__":
    main()
