"""UNETR fine-tuning step and sliding-window inference: ours against ``monai.networks.nets.UNETR`` of the same size.

Both networks hold the same weights (ours mapped with :func:`~.networks.unetr.monai_unetr_state_dict`, MONAI's
LayerNorm eps set to ours), so their outputs can be compared value for value. Arms are run alternately in one
process; median times are reported. Peak memory: on CPU the kernel's resident-set high-water mark (``VmHWM``, reset
before every timed run) above the RSS just before it; on CUDA ``torch.cuda.max_memory_allocated`` above the
allocation before it. One JSON line per measurement; see ``benchmarks/README.md``.

Usage::

    python benchmarks/bench_unetr.py --mode step [--batch 2] [--repeats 5]
    python benchmarks/bench_unetr.py --mode sliding [--volume 273 273 125] [--repeats 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.networks.nets import UNETR as MonaiUNETR
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mae_step import (  # noqa: E402
    MMAP_THRESHOLD,
    current_rss_kb,
    device_name,
    make_adamw,
    peak_rss_kb,
    reset_peak_rss,
    sync,
)

from shared_networks.networks.unetr import UNETR, monai_unetr_state_dict  # noqa: E402

SEED = 0
ROI = (96, 96, 96)
NUM_CLASSES = 14  # BTCV: background + 13 organs


def build_pair(device: torch.device) -> dict[str, nn.Module]:
    """Our UNETR (BTCV bundle settings, no drop path) and MONAI's with the same weights."""
    torch.manual_seed(SEED)
    ours = UNETR(1, NUM_CLASSES, ROI, patch_size=16, feature_size=16, qkv_bias=True, drop_path_rate=0.0)
    monai = MonaiUNETR(1, NUM_CLASSES, ROI, feature_size=16, qkv_bias=True, norm_name="instance", res_block=True)
    result = monai.load_state_dict(monai_unetr_state_dict(ours), strict=False)
    assert not result.unexpected_keys and all(".norm_cross_attn." in k for k in result.missing_keys), result
    for m in monai.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = 1e-6  # ours
    return {"ours": ours.to(device), "monai": monai.to(device)}


class Meter:
    """Times one call and its peak memory above the memory just before it (CPU: VmHWM; CUDA: allocator peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, fn: Callable[[], object]) -> tuple[float, float, object]:
        sync(self.device)
        if self.device.type == "cuda":
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            before = current_rss_kb() * 1024
            reset_peak_rss()
        t0 = time.perf_counter()
        out = fn()
        sync(self.device)
        dt = time.perf_counter() - t0
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = peak_rss_kb() * 1024
        return dt, (peak - before) / 2**20, out


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_step(args: argparse.Namespace, device: torch.device) -> dict:
    """Fine-tuning step: DiceCE loss, backward, AdamW (ours fused, MONAI's torch default), zero_grad."""
    nets = build_pair(device)
    gen = torch.Generator().manual_seed(SEED)
    image = torch.rand(args.batch, 1, *ROI, generator=gen).to(device)
    label = torch.randint(0, NUM_CLASSES, (args.batch, 1, *ROI), generator=gen).to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True)
    opts = {
        "ours": make_adamw(list(nets["ours"].parameters()), args.ours_optimizer),
        "monai": make_adamw([p for p in nets["monai"].parameters()], args.monai_optimizer),
    }

    def step(arm: str) -> Callable[[], float]:
        def fn() -> float:
            with autocast(device, args.precision):
                logits = nets[arm](image)
            loss = loss_fn(logits.float(), label)
            loss.backward()
            opts[arm].step()
            opts[arm].zero_grad(set_to_none=True)
            return loss.item()

        return fn

    for net in nets.values():
        net.train()
    meter = Meter(device)
    for _ in range(args.warmup):
        for arm in nets:
            step(arm)()
    times: dict[str, list[float]] = {a: [] for a in nets}
    peaks: dict[str, list[float]] = {a: [] for a in nets}
    for _ in range(args.repeats):
        for arm in nets:
            dt, peak, _ = meter(step(arm))
            times[arm].append(dt)
            peaks[arm].append(peak)
    return record(
        f"unetr_step_b{args.batch}_{args.precision}",
        args,
        device,
        times,
        peaks,
        extra={
            "ours_optimizer": args.ours_optimizer,
            "monai_optimizer": args.monai_optimizer,
            "ours_params": sum(p.numel() for p in nets["ours"].parameters()),
            "monai_params": sum(p.numel() for p in nets["monai"].parameters()),
        },
    )


def make_ct(shape: Sequence[int]) -> torch.Tensor:
    """A CT-like volume (1, 1, H, W, D) in 0..1: smooth blobs on a body ellipse, with noise (seeded)."""
    gen = torch.Generator().manual_seed(SEED)
    coarse = torch.rand(1, 1, *[max(2, s // 16) for s in shape], generator=gen)
    vol = nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=False)
    axes = [torch.linspace(-1, 1, s) for s in shape]
    h, w, _ = torch.meshgrid(*axes, indexing="ij")
    body = ((h / 0.9) ** 2 + (w / 0.7) ** 2 < 1).float()
    vol = body * (0.3 + 0.5 * vol) + 0.02 * torch.randn(1, 1, *shape, generator=gen)
    return vol.clamp(0, 1)


def run_sliding(args: argparse.Namespace, device: torch.device) -> dict:
    """Sliding-window inference of the whole volume, same window, overlap, batch and blending for both arms."""
    nets = build_pair(device)
    for net in nets.values():
        net.eval()
    if args.channels_last:
        nets["ours"].to(memory_format=torch.channels_last_3d)
    volume = make_ct(args.volume).to(device)
    inferer = SlidingWindowInferer(ROI, sw_batch_size=args.sw_batch_size, overlap=args.overlap, mode="gaussian")

    def infer(arm: str) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            with torch.inference_mode(), autocast(device, args.precision):
                return inferer(volume, nets[arm])

        return fn

    meter = Meter(device)
    times: dict[str, list[float]] = {a: [] for a in nets}
    peaks: dict[str, list[float]] = {a: [] for a in nets}
    outs = {}
    for _ in range(args.warmup):
        for arm in nets:
            infer(arm)()
    for _ in range(args.repeats):
        for arm in nets:
            dt, peak, out = meter(infer(arm))
            times[arm].append(dt)
            peaks[arm].append(peak)
            outs[arm] = out.float()
            del out
    diff = (outs["ours"] - outs["monai"]).abs().max().item()
    agree = (outs["ours"].argmax(1) == outs["monai"].argmax(1)).float().mean().item()
    return record(
        f"unetr_sliding_window_{args.precision}",
        args,
        device,
        times,
        peaks,
        extra={
            "volume": list(args.volume),
            "roi": list(ROI),
            "overlap": args.overlap,
            "sw_batch_size": args.sw_batch_size,
            "mode": "gaussian",
            "channels_last": args.channels_last,
            "max_abs_logit_diff": diff,
            "label_agreement": round(agree, 7),
        },
    )


def record(name: str, args, device, times, peaks, extra: dict) -> dict:
    ours_s, monai_s = statistics.median(times["ours"]), statistics.median(times["monai"])
    rec = {
        "name": name + ("_cuda" if device.type == "cuda" else ""),
        "device": device_name(device),
        "precision": args.precision,
        "ours_s": round(ours_s, 4),
        "monai_s": round(monai_s, 4),
        "ratio": round(monai_s / ours_s, 3),
        "ours_peak_mb": round(max(peaks["ours"]), 1),
        "monai_peak_mb": round(max(peaks["monai"]), 1),
        "ours_min_s": round(min(times["ours"]), 4),
        "monai_min_s": round(min(times["monai"]), 4),
        "ours_times_s": [round(t, 3) for t in times["ours"]],
        "monai_times_s": [round(t, 3) for t in times["monai"]],
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    rec.update(extra)
    return rec


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("step", "sliding"), required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, default=2, help="step: batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--ours-optimizer", choices=("fused", "foreach", "for-loop"), default="fused")
    parser.add_argument("--monai-optimizer", choices=("fused", "foreach", "for-loop"), default="for-loop")
    parser.add_argument(
        "--volume",
        type=int,
        nargs=3,
        default=[273, 273, 125],
        help="sliding: volume size; default = 512x512x100 at 0.8x0.8x2.5 mm resampled to 1.5x1.5x2",
    )
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--channels-last", action="store_true", help="sliding: ours in channels_last_3d")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # RSS must follow the live tensors
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if device.type == "cuda":  # exact fp32 in both arms, so that their outputs can be compared
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rec = run_step(args, device) if args.mode == "step" else run_sliding(args, device)
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
