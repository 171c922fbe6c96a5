"""Attention forward + backward at the ViT-B encoder's and MAE decoder's shapes: SDPA's flash kernel, SDPA's math
kernel and plain matmuls (``networks.vit.attention_matmul``), in bf16 and fp32. One JSON line per shape and
dtype, milliseconds per forward + backward (median of ``--repeats``). Shows why ``Attention`` uses plain matmuls for
bf16 on the CPU and SDPA otherwise.

Usage::

    python benchmarks/bench_attention.py [--device cpu|cuda] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from bench_mae_step import sync
from torch.nn.attention import SDPBackend, sdpa_kernel

from shared_networks.networks.vit import attention_matmul

# (B, heads, tokens, head dim): 2D b8 decoder and encoder, 3D b2 decoder and encoder (mask ratio 0.75)
SHAPES = [(8, 8, 196, 32), (8, 12, 49, 64), (2, 12, 216, 32), (2, 12, 54, 64)]


def sdpa(backend: SDPBackend) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v)

    return run


def time_ms(fn: Callable, shape: tuple[int, ...], dtype: torch.dtype, device: str, repeats: int) -> float:
    """Median milliseconds of one forward + backward."""
    q, k, v = (torch.randn(shape, dtype=dtype, device=device, requires_grad=True) for _ in range(3))
    times = []
    for i in range(repeats + 2):  # 2 warm-up runs
        sync(q.device)
        t0 = time.perf_counter()
        fn(q, k, v).float().sum().backward()
        sync(q.device)
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    arms = {
        "sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa_math": sdpa(SDPBackend.MATH),
        "matmul": attention_matmul,
    }
    for shape in SHAPES:
        for dtype in (torch.bfloat16, torch.float32):
            record = {
                "name": "attention_fwd_bwd",
                "device": args.device,
                "shape": list(shape),
                "dtype": str(dtype).removeprefix("torch."),
                "threads": torch.get_num_threads(),
            }
            for name, fn in arms.items():
                try:
                    record[f"{name}_ms"] = round(time_ms(fn, shape, dtype, args.device, args.repeats), 3)
                except RuntimeError as error:  # a backend that does not run here (e.g. flash on an old GPU)
                    record[f"{name}_ms"] = None
                    record[f"{name}_error"] = str(error).splitlines()[0]
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
