"""Where the time of our MAE pre-training step goes: ``torch.profiler`` tables (host and device time per op).

Builds our arm of ``bench_mae_step.py`` (same network, loss, fused AdamW), runs warm-up steps, times ``--steps``
steps, then profiles ``--profile-steps`` more and prints the wall time per step, the device-kernel time per step
(CUDA) and the op tables sorted by device and by host time.

Usage::

    python benchmarks/profile_mae_step.py --device cuda --precision bf16 --case 3d_vitb16_96_b2 --batch 32
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from bench_mae_step import CASES, OPTIMIZERS, PRECISIONS, build_arm, make_input, sync, with_batch
from torch.profiler import ProfilerActivity, profile


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--case", choices=list(CASES), default="3d_vitb16_96_b2")
    parser.add_argument("--batch", type=int, help="batch size instead of the case's own")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="fused")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    case = with_batch(CASES[args.case], args.batch)
    arm = build_arm("ours", case, args.precision, ours_optimizer=args.optimizer, device=device)
    imgs = make_input(case, device)
    for _ in range(args.warmup):
        arm.step(imgs)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        arm.step(imgs)
    sync(device)
    print(f"{case.name} {args.precision} on {device}: wall {(time.perf_counter() - t0) / args.steps * 1e3:.1f} ms/step")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.profile_steps):
            arm.step(imgs)
        sync(device)
    events = prof.key_averages()
    if device.type == "cuda":
        kernels = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        print(f"device kernels {kernels / args.profile_steps / 1e3:.1f} ms/step")
        print(events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=50))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=50))


if __name__ == "__main__":
    main()
