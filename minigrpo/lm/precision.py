"""Does this device compute in bf16 at speed? ``bf16_support(device)`` answers, and ``require_bf16``
refuses ``precision='bf16'`` where the answer is no.

Why it matters: a CPU without bf16 units (no AVX-512 BF16, no AMX) runs a bf16 matmul in torch's
scalar fallback. On one such machine a 256² bf16 matmul ran at 0.3 GFLOP/s against 117 GFLOP/s in
fp32, and a GPT-2-size bf16 step did not finish in 150 s: ~400× slower, in silence.

How it decides
--------------
* **CUDA:** ``torch.cuda.is_bf16_supported()``; the answer names the GPU and its compute capability
  (sm_80 and later have bf16 tensor cores).
* **CPU:** the CPU's own flags where the OS lists them (Linux ``/proc/cpuinfo``: x86 ``avx512_bf16``,
  ``amx_bf16``; Arm ``bf16``). Where they are absent or unknown (macOS, Windows), a micro-benchmark of
  about 50 ms: the rate of a 128² matmul in bf16 against fp32, on one thread. bf16 counts as slow below
  ``SLOW_FRACTION`` (¼) of the fp32 rate: a CPU that converts bf16 to fp32 inside an optimised
  matmul can come near the fp32 rate and passes; the scalar fallback runs 50–400× slower (2.8
  against 140 GFLOP/s here with oneDNN switched off) and fails by far.
* **MPS and others:** a bf16 product is tried; an error is the answer.

The answer is cached per device, so a run pays for the benchmark at most once.

The choice: refuse, not fall back
---------------------------------
``require_bf16`` raises ``ValueError`` with one line that names what was found and says to use
``precision='fp32'``; the command line prints that line and exits with code 2, before a run folder
is made. A silent (or warned) fall-back to fp32 would leave a run folder whose config says bf16
while it trained in fp32, and a benchmark row labelled bf16 that measured fp32; the user fixes a
refusal with one flag. Notebooks that pick bf16 already ask ``torch.cuda.is_bf16_supported()``.
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

SLOW_FRACTION = 0.25        # bf16 matmul rate below this fraction of fp32's: "slow", bf16 emulated
BENCH_N = 128               # the micro-benchmark's matrices are BENCH_N × BENCH_N
BENCH_SECONDS = 0.03        # time spent timing the two dtypes, after one warm-up product each
CPU_BF16_FLAGS = {"avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16"}


class Bf16Support(NamedTuple):
    """``ok``: bf16 runs at speed here. ``why``: what was found, one line, e.g. "CPU bf16: AVX-512 BF16,
    AMX-BF16 (/proc/cpuinfo)" or "none: bf16 emulated (…)"."""

    ok: bool
    why: str


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags (Linux: the ``flags`` line on x86, ``Features`` on Arm, of
    ``/proc/cpuinfo``); None where the OS does not list them."""
    if cpuinfo is None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def matmul_rates(n: int = BENCH_N, seconds: float = BENCH_SECONDS) -> tuple[float, float]:
    """(bf16, fp32) GFLOP/s of an n×n·n×n product on this CPU, on one thread: the fastest of the
    products timed, bf16 and fp32 alternating, for about ``seconds`` (three each at least, 2n³ FLOPs a
    product). One thread and alternation, because on a shared machine a second thread that is
    descheduled stalls a product by milliseconds (an fp32 rate of 0.5 GFLOP/s against 116 was seen),
    and a stall should not fall on one dtype only: the ratio, not the level, is the answer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pairs = [(torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)) for dtype in (torch.bfloat16, torch.float32)]
        for a, b in pairs:
            a @ b                                       # warm-up: first-call set-up is not the rate
        best = [float("inf"), float("inf")]
        start, rounds = time.perf_counter(), 0
        while rounds < 3 or time.perf_counter() - start < seconds:
            for k, (a, b) in enumerate(pairs):
                t0 = time.perf_counter()
                a @ b
                best[k] = min(best[k], time.perf_counter() - t0)
            rounds += 1
    finally:
        torch.set_num_threads(threads)
    bf16, fp32 = (2 * n ** 3 / max(t, 1e-9) / 1e9 for t in best)
    return bf16, fp32


def cpu_bf16_support(flags: set[str] | None, measure: Callable[[], tuple[float, float]] | None = None) -> Bf16Support:
    """The CPU's answer from its flags (None: unknown) and, where they show no bf16 unit, ``measure()``
    → (bf16, fp32) GFLOP/s (default ``matmul_rates``)."""
    units = [name for flag, name in CPU_BF16_FLAGS.items() if flags and flag in flags]
    if units:
        return Bf16Support(True, f"CPU bf16: {', '.join(units)} (/proc/cpuinfo)")
    bf16, fp32 = (measure or matmul_rates)()
    seen = "CPU flags unknown" if flags is None else "no bf16 flag in /proc/cpuinfo"
    rates = f"a {BENCH_N}² bf16 matmul ran at {bf16:.1f} GFLOP/s against {fp32:.1f} in fp32"
    if bf16 < SLOW_FRACTION * fp32:
        return Bf16Support(False, f"none: bf16 emulated ({seen}; {rates}, {fp32 / max(bf16, 1e-9):.0f}× slower)")
    return Bf16Support(True, f"CPU bf16: converted to fp32 at speed ({seen}; {rates})")


def _device_key(device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)


def bf16_support(device: torch.device | str = "cpu") -> Bf16Support:
    """(ok, why) for bf16 on ``device``; see the module docstring for how it is decided. Cached per device."""
    return _support(_device_key(device))


@functools.lru_cache(maxsize=None)
def _support(key: str) -> Bf16Support:
    dev = torch.device(key)
    if dev.type == "cpu":
        return cpu_bf16_support(cpu_flags())
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return Bf16Support(False, "none: torch sees no CUDA GPU")
        major, minor = torch.cuda.get_device_capability(dev)
        name = torch.cuda.get_device_name(dev)
        with torch.cuda.device(dev):
            supported = torch.cuda.is_bf16_supported()
        if not supported:
            return Bf16Support(False, f"none: {name} (sm_{major}{minor}) has no bf16 support in this torch")
        cores = "bf16 tensor cores" if major >= 8 else "no bf16 tensor cores: bf16 emulated in fp32 units"
        return Bf16Support(True, f"CUDA bf16: {name} (sm_{major}{minor}, {cores})")
    try:
        x = torch.ones(2, 2, dtype=torch.bfloat16, device=dev)
        (x @ x).cpu()
    except (RuntimeError, TypeError) as e:
        return Bf16Support(False, f"none: {dev.type} refused a bf16 matmul ({str(e).splitlines()[0]})")
    return Bf16Support(True, f"{dev.type} bf16: a bf16 matmul ran (speed not measured)")


bf16_support.cache_clear = _support.cache_clear     # forget the cached answers (tests mock the flags)


def require_bf16(device: torch.device | str = "cpu") -> str:
    """Refuse bf16 where it would be emulated: ``ValueError`` with one line naming what was found.
    Returns ``why`` where bf16 runs at speed."""
    ok, why = bf16_support(device)
    if not ok:
        raise ValueError(f"precision='bf16' on {torch.device(device)}: {why}. bf16 would run far slower than "
                         "fp32 here; use precision='fp32' (--precision fp32), or a machine with bf16 units")
    return why
