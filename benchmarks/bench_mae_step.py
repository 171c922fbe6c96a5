"""Time one MAE pre-training step of ours against MONAI's ``MaskedAutoEncoderViT`` at the same configuration.

A step is forward, loss, backward, ``torch.optim.AdamW.step`` and ``zero_grad``. Both networks live in this process
and are stepped alternately (warm-up steps first, then ``--repeats`` rounds of ours, MONAI); the median step time of
each arm is reported. Peak memory is measured per arm in a fresh child process (``--child``) from the kernel's
resident-set high-water mark (``VmHWM``). Achieved FLOP/s use an analytic matmul count (see ``step_flops``) and are
set against a large fp32 matmul timed in the same run. One JSON line per case on stdout; see ``benchmarks/README.md``.

Usage::

    python benchmarks/bench_mae_step.py [--cases 3d_vitb16_96_b2 2d_vitb16_224_b8] [--repeats N] [--warmup N]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.nets import MaskedAutoEncoderViT
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shared_networks.networks.mae import MaskedAutoencoderViT, MaskedPatchLoss, normalize_patches

SEED = 0
ARMS = ("ours", "monai")
PRECISIONS = ("fp32", "bf16")
OPTIMIZERS = ("fused", "foreach", "for-loop")
MMAP_THRESHOLD = 64 * 1024  # bytes; glibc malloc threshold pinned in the peak-memory children


@dataclass(frozen=True)
class Case:
    """One benchmark configuration, shared verbatim by both networks."""

    name: str
    spatial_dims: int
    img_size: int
    batch: int
    decoder_hidden_size: int
    decoder_num_heads: int
    decoder_mlp_dim: int
    in_channels: int = 1
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    decoder_num_layers: int = 8
    mask_ratio: float = 0.75
    qkv_bias: bool = True

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** self.spatial_dims

    @property
    def num_visible(self) -> int:
        """Visible patches per sample; both networks keep ``int(L * (1 - mask_ratio))``."""
        return int(self.num_patches * (1 - self.mask_ratio))

    @property
    def patch_dim(self) -> int:
        return self.patch_size**self.spatial_dims * self.in_channels


CASES = {
    c.name: c
    for c in (
        Case(
            "3d_vitb16_96_b2",
            spatial_dims=3,
            img_size=96,
            batch=2,
            decoder_hidden_size=384,
            decoder_num_heads=12,
            decoder_mlp_dim=1536,
        ),
        Case(
            "3d_vitb16_96_b4",
            spatial_dims=3,
            img_size=96,
            batch=4,
            decoder_hidden_size=384,
            decoder_num_heads=12,
            decoder_mlp_dim=1536,
        ),
        Case(
            "2d_vitb16_224_b8",
            spatial_dims=2,
            img_size=224,
            batch=8,
            decoder_hidden_size=256,
            decoder_num_heads=8,
            decoder_mlp_dim=1024,
        ),
    )
}


# ---------------------------------------------------------------------------------------------------------------------
# Networks, losses and the step


def build_ours(case: Case) -> nn.Module:
    """Our MAE at ``case``, built right after seeding."""
    torch.manual_seed(SEED)
    return MaskedAutoencoderViT(
        in_channels=case.in_channels,
        img_size=case.img_size,
        patch_size=case.patch_size,
        hidden_size=case.hidden_size,
        num_layers=case.num_layers,
        num_heads=case.num_heads,
        mlp_dim=case.mlp_dim,
        decoder_hidden_size=case.decoder_hidden_size,
        decoder_num_layers=case.decoder_num_layers,
        decoder_num_heads=case.decoder_num_heads,
        decoder_mlp_dim=case.decoder_mlp_dim,
        mask_ratio=case.mask_ratio,
        qkv_bias=case.qkv_bias,
        cls_token=False,
        spatial_dims=case.spatial_dims,
    )


def build_monai(case: Case) -> nn.Module:
    """MONAI's ``MaskedAutoEncoderViT`` at ``case``, built right after seeding."""
    torch.manual_seed(SEED)
    return MaskedAutoEncoderViT(
        in_channels=case.in_channels,
        img_size=case.img_size,
        patch_size=case.patch_size,
        hidden_size=case.hidden_size,
        mlp_dim=case.mlp_dim,
        num_layers=case.num_layers,
        num_heads=case.num_heads,
        masking_ratio=case.mask_ratio,
        decoder_hidden_size=case.decoder_hidden_size,
        decoder_mlp_dim=case.decoder_mlp_dim,
        decoder_num_layers=case.decoder_num_layers,
        decoder_num_heads=case.decoder_num_heads,
        proj_type="conv",
        pos_embed_type="sincos",
        decoder_pos_embed_type="sincos",
        dropout_rate=0.0,
        spatial_dims=case.spatial_dims,
        qkv_bias=case.qkv_bias,
        save_attn=False,
    )


def monai_patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W[, Z]) -> (B, L, P * C) in the token order of MONAI's conv ``PatchEmbeddingBlock``.

    The conv output (B, D, h, w[, z]) is flattened row-major over the grid, so token l is the patch at
    ``unravel(l, grid)``; each patch is laid out (voxels row-major, channel), i.e. MONAI's own perceptron rearrange
    ``b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)``. :func:`check_monai_patchify` verifies the order.
    """
    b, c, *spatial = imgs.shape
    n = len(spatial)
    grid = [s // patch_size for s in spatial]
    x = imgs.reshape(b, c, *[v for g in grid for v in (g, patch_size)])  # (B, C, h, p, w, p[, z, p])
    x = x.permute(0, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2), 1)  # (B, h, w[, z], p, p[, p], C)
    return x.reshape(b, math.prod(grid), patch_size**n * c)


def check_monai_patchify(net: nn.Module, imgs: torch.Tensor, patch_size: int) -> None:
    """Assert that :func:`monai_patchify` followed by the conv weights as a linear map equals MONAI's embedding."""
    conv = net.patch_embedding.patch_embeddings
    w = conv.weight  # (D, C, p, p[, p])
    w_lin = w.permute(0, *range(2, w.ndim), 1).reshape(w.shape[0], -1)  # (D, P * C), patch laid out (voxels, C)
    with torch.no_grad():  # in float64, so that TF32 on a GPU does not blur the comparison
        x, w64, b64 = imgs.double(), conv.weight.double(), conv.bias.double()
        expected = conv._conv_forward(x, w64, b64).flatten(2).transpose(1, 2)  # (B, L, D)
        got = monai_patchify(x, patch_size) @ w_lin.double().T + b64
    if not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
        raise AssertionError("monai_patchify does not match the token order of MONAI's patch embedding.")


def make_monai_loss(patch_size: int) -> Callable[[tuple[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor]:
    """Masked MSE on normalised patches for MONAI's ``(pred, mask)``, the same computation as ``MaskedPatchLoss``."""

    def loss(output: tuple[torch.Tensor, torch.Tensor], imgs: torch.Tensor) -> torch.Tensor:
        pred, mask = output  # (B, L, P * C), (B, L) int with 1 = hidden
        mask = mask.to(pred.dtype)
        per_patch = ((pred - normalize_patches(monai_patchify(imgs, patch_size))[0]) ** 2).mean(dim=-1)  # (B, L)
        return (per_patch * mask).sum() / mask.sum()

    return loss


@dataclass
class Arm:
    """A network with its loss and optimiser, ready to step."""

    net: nn.Module
    loss_fn: Callable[[tuple[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    precision: str = "fp32"

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """bf16 autocast for the forward pass, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def num_params(self) -> int:
        """Trainable parameters (both networks keep their sin-cos position embeddings frozen)."""
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def step(self, imgs: torch.Tensor) -> float:
        """One pre-training step; returns the loss (forward under autocast in bf16, the loss in fp32)."""
        with self.autocast(imgs.device.type):
            pred, mask = self.net(imgs)
        loss = self.loss_fn((pred.float(), mask), imgs)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()

    def timed_step(self, imgs: torch.Tensor) -> float:
        """One step; returns its wall time in seconds (the device is synchronised before and after)."""
        sync(imgs.device)
        t0 = time.perf_counter()
        self.step(imgs)
        sync(imgs.device)
        return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_adamw(params: list[nn.Parameter], impl: str) -> torch.optim.AdamW:
    """AdamW with MAE's pre-training hyper-parameters; ``impl`` picks torch's implementation.

    "fused": one kernel over all tensors (``fused=True``, CPU and CUDA in torch >= 2.4); "foreach": multi-tensor ops;
    "for-loop": one tensor at a time (``foreach=False``, torch's default on CPU).
    """
    kwargs = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, **kwargs)


def cast_to_float(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: return the module's output in fp32."""
    return output.float()


def build_arm(
    arm: str,
    case: Case,
    precision: str = "fp32",
    ours_optimizer: str = "fused",
    monai_optimizer: str = "for-loop",
    device: torch.device | str = "cpu",
    compile_ours: bool = False,
) -> Arm:
    """Network, loss and AdamW (MAE's hyper-parameters) for ``arm`` in {"ours", "monai"}.

    In bf16, MONAI's network needs one fix to run under autocast at all: its decoder writes the (bf16) decoder
    embedding into a buffer of fp32 mask tokens with an index assignment, which raises a dtype error; a forward hook
    returns ``decoder_embed``'s output in fp32 (the buffer's dtype), and everything else runs as MONAI wrote it.
    """
    if arm == "ours":
        net = build_ours(case)
        loss_fn = MaskedPatchLoss(case.patch_size, case.spatial_dims, norm_pix_loss=True)
    elif arm == "monai":
        net = build_monai(case)
        loss_fn = make_monai_loss(case.patch_size)
        if precision == "bf16":
            net.decoder_embed.register_forward_hook(cast_to_float)
    else:
        raise ValueError(f"unknown arm {arm!r}, expected one of {ARMS}.")
    net.to(device).train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = make_adamw(params, ours_optimizer if arm == "ours" else monai_optimizer)
    if arm == "ours" and compile_ours:
        net = torch.compile(net)  # compiled at the first (warm-up) step
    return Arm(net, loss_fn, opt, precision)


def make_input(case: Case, device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed random batch both arms train on."""
    gen = torch.Generator().manual_seed(SEED)
    shape = (case.batch, case.in_channels, *(case.img_size,) * case.spatial_dims)
    return torch.randn(shape, generator=gen).to(device)


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs


def transformer_flops(batch: int, tokens: int, width: int, mlp: int, layers: int) -> int:
    """Forward matmul FLOPs of ``layers`` pre-norm blocks on ``tokens`` tokens (2 FLOPs per multiply-add).

    Per block and sample: qkv 2*N*D*3D, output projection 2*N*D*D, scores Q K^T 2*N*N*D, weighted sum A V 2*N*N*D,
    MLP 2 * 2*N*D*M; LayerNorm, softmax, GELU, biases and residual adds are not counted.
    """
    return batch * layers * (2 * tokens * (4 * width * width + 2 * width * mlp) + 4 * tokens * tokens * width)


def step_flops(case: Case, prefix_tokens: int = 0, embed_visible_only: bool = False) -> int:
    """Analytic matmul FLOPs of one training step (forward + backward) of an MAE at ``case``.

    Forward: patch embedding on all L patches, the encoder on ``prefix + L_keep`` tokens, the decoder embedding on
    those, the decoder on ``prefix + L`` tokens and the prediction head on ``prefix + L`` tokens (ours has no prefix,
    MONAI has a class token, ``prefix_tokens=1``). Backward costs two forwards (input and weight gradients) except for
    the patch embedding, whose input (the image) needs no gradient: one forward. Step = 3 * forward - embedding.
    ``embed_visible_only``: the patch embedding runs on the ``L_keep`` visible patches only (ours), not on all L.
    """
    b, n_all, n_vis = case.batch, case.num_patches, case.num_visible
    d, dd = case.hidden_size, case.decoder_hidden_size
    embed = 2 * b * (n_vis if embed_visible_only else n_all) * case.patch_dim * d
    encoder = transformer_flops(b, prefix_tokens + n_vis, d, case.mlp_dim, case.num_layers)
    decoder_embed = 2 * b * (prefix_tokens + n_vis) * d * dd
    decoder = transformer_flops(b, prefix_tokens + n_all, dd, case.decoder_mlp_dim, case.decoder_num_layers)
    pred = 2 * b * (prefix_tokens + n_all) * dd * case.patch_dim
    forward = embed + encoder + decoder_embed + decoder + pred
    return 3 * forward - embed


def counted_flops(arm: Arm, imgs: torch.Tensor) -> int:
    """FLOPs of one forward + backward as ``FlopCounterMode`` sees them (it misses CPU SDPA, see the README)."""
    with FlopCounterMode(display=False) as counter:
        with arm.autocast(imgs.device.type):
            pred, mask = arm.net(imgs)
        arm.loss_fn((pred.float(), mask), imgs).backward()
    arm.opt.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_gflops(
    n: int = 2048, reps: int = 7, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> list[float]:
    """Achieved GFLOP/s of ``reps`` ``(n, n) @ (n, n)`` products in ``dtype``, after two warm-up products."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(SEED)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)
    for _ in range(2):
        torch.mm(a, b, out=out)
    rates = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return rates


# ---------------------------------------------------------------------------------------------------------------------
# Peak memory (child process)


def current_rss_kb() -> int:
    """Resident set size of this process now, in KiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def peak_rss_kb() -> int:
    """This process's RSS high-water mark (``VmHWM``), in KiB.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: that is the max of ``VmHWM`` and a per-process value that ``exec`` sets
    from the forked pre-exec image, so a child started from a big parent reports the parent's RSS, and
    ``clear_refs`` does not reset it.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (``VmHWM``) to the current RSS; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_memory(arm_name: str, case: Case, settings: Settings, steps: int) -> dict[str, float | bool]:
    """Peak-RSS figures of ``steps`` training steps of one arm, run in this (fresh) process.

    ``peak_mb``: peak RSS during the measured steps minus RSS just before them, after one warm-up step has allocated
    AdamW's state, so it holds activations, gradients and temporaries. If the high-water mark cannot be reset
    (``hwm_reset`` False), the peak also covers building and the warm-up step. ``peak_total_mb``: the same peak minus
    RSS before the network was built, so it adds weights and optimiser state. Run it under a pinned mmap threshold
    (see :func:`measure_memory`) so that freed buffers leave the RSS.
    """
    torch.set_num_threads(settings.threads)
    gc.collect()
    rss_start = current_rss_kb()
    arm = build_arm(
        arm_name,
        case,
        settings.precision,
        settings.ours_optimizer,
        settings.monai_optimizer,
        compile_ours=settings.compile,
    )
    imgs = make_input(case)
    arm.step(imgs)  # allocates AdamW's exp_avg / exp_avg_sq
    gc.collect()
    rss_before = current_rss_kb()
    hwm_reset = reset_peak_rss()
    for _ in range(steps):
        arm.step(imgs)
    peak = peak_rss_kb()
    return {
        "peak_mb": (peak - rss_before) / 1024,
        "peak_total_mb": (peak - rss_start) / 1024,
        "hwm_reset": hwm_reset,
    }


def measure_memory(arm: str, case: Case, settings: Settings, steps: int) -> dict[str, float | bool]:
    """Run :func:`child_memory` for ``arm`` in a fresh interpreter and return its figures.

    The child runs with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_``, 64 KiB unless already set): every
    tensor buffer of 64 KiB or more is then its own mapping, handed back to the kernel when freed, so RSS follows the
    live tensors. With glibc's default dynamic threshold, buffers freed in the warm-up step stay in the heap, and the
    figures shift by hundreds of MB from run to run.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", arm, "--cases", base_case(case).name]
    cmd += ["--batch", str(case.batch)] + (["--compile"] if settings.compile else [])
    cmd += ["--threads", str(settings.threads), "--mem-steps", str(steps), "--precision", settings.precision]
    cmd += ["--ours-optimizer", settings.ours_optimizer, "--monai-optimizer", settings.monai_optimizer]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {arm}/{case.name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------------
# Driver


@dataclass(frozen=True)
class Settings:
    """How both arms are run: device, precision, optimiser implementations, CPU threads."""

    device: str = "cpu"
    precision: str = "fp32"
    ours_optimizer: str = "fused"
    monai_optimizer: str = "for-loop"
    threads: int = 1
    compile: bool = False  # ours under torch.compile (inductor)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32


def cuda_memory(arm: Arm, imgs: torch.Tensor, steps: int, start: int) -> dict[str, float | bool]:
    """Peak CUDA memory of ``steps`` steps after a warm-up step: above the allocation before them (step-transient)
    and above ``start``, the allocation before the arm was built (adds weights and AdamW state)."""
    device = imgs.device
    sync(device)
    arm.step(imgs)
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        arm.step(imgs)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_mb": (peak - before) / 2**20, "peak_total_mb": (peak - start) / 2**20, "hwm_reset": True}


def run_case(case: Case, repeats: int, warmup: int, settings: Settings, mem_steps: int, count_flops: bool) -> dict:
    """Benchmark one case; returns the JSON record (``mem_steps=0``: no peak-memory measurement)."""
    load_start = os.getloadavg()[0]
    device = torch.device(settings.device)
    on_cuda = device.type == "cuda"
    measure = mem_steps > 0
    mem = {} if on_cuda or not measure else {arm: measure_memory(arm, case, settings, mem_steps) for arm in ARMS}

    imgs = make_input(case, device)
    arms = {}
    for arm in ARMS:
        start = torch.cuda.memory_allocated(device) if on_cuda else 0
        arms[arm] = build_arm(
            arm, case, settings.precision, settings.ours_optimizer, settings.monai_optimizer, device, settings.compile
        )
        if on_cuda and measure:  # each arm's peak right after it is built, in this process
            mem[arm] = cuda_memory(arms[arm], imgs, mem_steps, start)
    check_monai_patchify(arms["monai"].net, imgs, case.patch_size)
    counted = {arm: counted_flops(arms[arm], imgs) for arm in ARMS} if count_flops else {}

    peak_n = 8192 if on_cuda else 2048
    rates = matmul_gflops(peak_n, dtype=settings.dtype, device=device)
    for _ in range(warmup):
        for arm in ARMS:
            arms[arm].step(imgs)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for _ in range(repeats):
        for arm in ARMS:  # A, B, A, B, ...
            times[arm].append(arms[arm].timed_step(imgs))
    rates += matmul_gflops(peak_n, dtype=settings.dtype, device=device)
    peak_gflops = statistics.median(rates)

    ours_s, monai_s = statistics.median(times["ours"]), statistics.median(times["monai"])
    flops = {
        "ours": step_flops(case, prefix_tokens=0, embed_visible_only=True),
        "monai": step_flops(case, prefix_tokens=1),
    }
    ours_gflops, monai_gflops = flops["ours"] / ours_s / 1e9, flops["monai"] / monai_s / 1e9
    record = {
        "name": f"mae_{case.name}_{settings.precision}"
        + ("_compiled" if settings.compile else "")
        + ("_cuda" if on_cuda else ""),
        "case": case.name,
        "device": device_name(device),
        "precision": settings.precision,
        "ours_optimizer": settings.ours_optimizer,
        "monai_optimizer": settings.monai_optimizer,
        "ours_compiled": settings.compile,
        "ours_images_per_s": round(case.batch / ours_s, 2),
        "monai_images_per_s": round(case.batch / monai_s, 2),
        "ours_s": round(ours_s, 4),
        "monai_s": round(monai_s, 4),
        "ratio": round(monai_s / ours_s, 3),
        "ours_peak_mb": round(mem["ours"]["peak_mb"], 1) if measure else None,
        "monai_peak_mb": round(mem["monai"]["peak_mb"], 1) if measure else None,
        "gflops_per_s": round(ours_gflops, 2),
        "peak_fraction": round(ours_gflops / peak_gflops, 3),
        "monai_gflops_per_s": round(monai_gflops, 2),
        "monai_peak_fraction": round(monai_gflops / peak_gflops, 3),
        "matmul_gflops_per_s": round(peak_gflops, 2),
        "matmul_dtype": settings.precision,
        "flops_per_step": flops["ours"],
        "monai_flops_per_step": flops["monai"],
        "ours_params": arms["ours"].num_params,
        "monai_params": arms["monai"].num_params,
        "ours_min_s": round(min(times["ours"]), 4),
        "monai_min_s": round(min(times["monai"]), 4),
        "ours_peak_total_mb": round(mem["ours"]["peak_total_mb"], 1) if measure else None,
        "monai_peak_total_mb": round(mem["monai"]["peak_total_mb"], 1) if measure else None,
        "hwm_reset": bool(mem["ours"]["hwm_reset"] and mem["monai"]["hwm_reset"]) if measure else None,
        "batch": case.batch,
        "threads": settings.threads,
        "ours_times_s": [round(t, 3) for t in times["ours"]],
        "monai_times_s": [round(t, 3) for t in times["monai"]],
        "ours_cv": round(statistics.stdev(times["ours"]) / ours_s, 3) if repeats > 1 else None,
        "monai_cv": round(statistics.stdev(times["monai"]) / monai_s, 3) if repeats > 1 else None,
        "repeats": repeats,
        "warmup": warmup,
        "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # at the case's start and end
    }
    if counted:
        record["counted_flops_ours"] = counted["ours"]
        record["counted_flops_monai"] = counted["monai"]
    return record


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run")
    parser.add_argument("--batch", type=int, help="batch size instead of the case's own (the name follows)")
    parser.add_argument("--compile", action="store_true", help="ours under torch.compile (compiled in the warm-up)")
    parser.add_argument("--repeats", type=int, default=10, help="timed A,B rounds per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per arm before the rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--mem-steps", type=int, default=2, help="steps per peak-memory measurement; 0: skip it")
    parser.add_argument("--no-flop-count", action="store_true", help="skip the FlopCounterMode cross-check")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: forward under autocast")
    parser.add_argument("--ours-optimizer", choices=OPTIMIZERS, default="fused", help="our arm's AdamW")
    parser.add_argument("--monai-optimizer", choices=OPTIMIZERS, default="for-loop", help="MONAI arm's AdamW")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)  # internal: peak-memory child process
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or args.mem_steps < 0:
        raise SystemExit("--repeats and --threads must be >= 1, --warmup and --mem-steps >= 0.")
    settings = Settings(
        args.device, args.precision, args.ours_optimizer, args.monai_optimizer, args.threads, args.compile
    )
    cases = [with_batch(CASES[name], args.batch) for name in args.cases]
    if args.child:
        print(json.dumps(child_memory(args.child, cases[0], settings, args.mem_steps)), flush=True)
        return
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 on a GPU: TF32 tensor cores for both arms
        torch.backends.cudnn.allow_tf32 = True
    for case in cases:
        record = run_case(case, args.repeats, args.warmup, settings, args.mem_steps, not args.no_flop_count)
        print(json.dumps(record), flush=True)


def with_batch(case: Case, batch: int | None) -> Case:
    """``case`` at another batch size, named after it (``3d_vitb16_96_b2`` -> ``3d_vitb16_96_b32``)."""
    if batch is None or batch == case.batch:
        return case
    if batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {batch}.")
    return dataclasses.replace(case, batch=batch, name=f"{case.name.rsplit('_b', 1)[0]}_b{batch}")


def base_case(case: Case) -> Case:
    """The entry of ``CASES`` that ``case`` was made from (by :func:`with_batch` or not)."""
    prefix = case.name.rsplit("_b", 1)[0]
    return next(c for name, c in CASES.items() if name.rsplit("_b", 1)[0] == prefix)


def device_name(device: torch.device) -> str:
    """The processor or GPU, in words."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
