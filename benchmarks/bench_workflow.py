"""Whole training workflows against their bare step: how much of the step's throughput a real epoch keeps.

Each case runs a bundle's own pre-training or fine-tuning workflow for a few epochs, as a user does
(``python -m monai.bundle run --config_file ...`` in a child process, the bundle's configs plus the case's size
overrides, on the real sample data), and reads each epoch's wall time from ignite's ``Epoch[N] Complete. Time
taken`` log line: the time from the epoch's start to the end of its handlers, so data loading, the loader workers'
start, validation (fine-tuning: every ``val_interval`` epochs, and at the last) and checkpoints are in it. Epoch 1
(caches warm, first-call set-ups) and the last epoch (the final model and resume checkpoint, written once per run:
``run_end_s``) are left out; ``workflow_epoch_s`` is the mean of the others, which amortises the validation over the
epochs (with the default 6 epochs and validation every 2nd: epochs 2-5, two of them validated). Periodic resume
checkpoints come every ``ckpt_every_minutes`` (10), after none of these short runs' middle epochs.

The bare arm, in this process: the same workflow's trainer built from the same configs and overrides, one real
batch of its training loader pre-loaded, and the trainer's own iteration (``SupervisedTrainer._iteration``:
forward, loss, backward, optimiser step) repeated on it, with the torch threads the workflow's main process used
(its ``CPU threads:`` log line). ``bare_epoch_s`` = median step time x iterations per epoch. ``ratio`` =
``bare_epoch_s / workflow_epoch_s``: 1.0 is a workflow as fast as its bare step; the target is 0.9.

Cases (``--cases``; the default are the quick ones):

* ``cxr14_pretrain_tiny112``: chest X-ray MAE pre-training, ViT-Tiny (192 x 12, 3 heads, patch 16) at 112^2,
  decoder 128 x 4, batch 64, on ``chestxray14/``.
* ``cxr14_train_tiny112``: fine-tuning the same ViT-Tiny (from scratch), batch 64, validation every 2 epochs.
* ``btcv_pretrain_quick``, ``btcv_train_quick``: BTCV with ``configs/quick.yaml`` (tiny ViT on 48^3 at 4 mm), on
  ``btcv/``; fine-tuning validates every 2 epochs (sliding window over the validation CT).
* ``btcv_pretrain_vitb96``, ``btcv_train_vitb96`` (slow): the full-size ViT-B/16 at 96^3, the configs as shipped.

Usage::

    python benchmarks/bench_workflow.py [--cases ...] [--epochs 5] [--torch-threads auto] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from monai.bundle import ConfigParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mae_step import device_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.9
EPOCH_LINE = re.compile(r"Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")
THREADS_LINE = re.compile(r"CPU threads: (\d+) torch thread")
VIT_TINY_112 = {
    "img_size": [112, 112],
    "patch_size": 16,
    "hidden_size": 192,
    "num_layers": 12,
    "num_heads": 3,
    "mlp_dim": 768,
    "batch_size": 64,
}


@dataclass(frozen=True)
class Case:
    """A workflow run: bundle, config files (relative to its configs/), data folder (under --data), overrides."""

    bundle: str
    configs: tuple[str, ...]
    data: str
    overrides: dict = field(default_factory=dict)
    slow: bool = False


CASES = {
    "cxr14_pretrain_tiny112": Case(
        "cxr14_mae_classification",
        ("pretrain.yaml",),
        "chestxray14",
        {
            **VIT_TINY_112,
            "decoder_hidden_size": 128,
            "decoder_num_layers": 4,
            "decoder_num_heads": 4,
            "cache_rate": 1.0,
        },
    ),
    "cxr14_train_tiny112": Case(
        "cxr14_mae_classification",
        ("train.yaml",),
        "chestxray14",
        {**VIT_TINY_112, "pretrained_ckpt": "none", "drop_path_rate": 0.0, "val_interval": 2, "cache_rate": 1.0},
    ),
    "btcv_pretrain_quick": Case("btcv_mae_segmentation", ("pretrain.yaml", "quick.yaml"), "btcv"),
    "btcv_train_quick": Case(
        "btcv_mae_segmentation", ("train.yaml", "quick.yaml"), "btcv", {"pretrained_ckpt": "none", "val_interval": 2}
    ),
    "btcv_pretrain_vitb96": Case("btcv_mae_segmentation", ("pretrain.yaml",), "btcv", slow=True),
    "btcv_train_vitb96": Case(
        "btcv_mae_segmentation", ("train.yaml",), "btcv", {"pretrained_ckpt": "none", "val_interval": 2}, slow=True
    ),
}
QUICK_CASES = [name for name, case in CASES.items() if not case.slow]


def case_overrides(case: Case, data: Path, work: Path, epochs: int, torch_threads: str) -> dict:
    """The case's settings for a short run: its sizes, few epochs, outputs in ``work``, no reconstruction images."""
    pretrain = {"recon_interval": 10 * epochs} if "pretrain.yaml" in case.configs else {}
    return {
        "dataset_dir": str(data / case.data),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "runs"),
        "max_epochs": epochs,
        "warmup_epochs": 1,
        "torch_threads": torch_threads,
        **pretrain,
        **case.overrides,
    }


def config_files(case: Case) -> list[str]:
    return [str(ROOT / "bundles" / case.bundle / "configs" / f) for f in case.configs]


def run_workflow(case: Case, overrides: dict) -> tuple[list[float], int, float, str]:
    """Runs the workflow with ``python -m monai.bundle run``; (epoch seconds, main-process torch threads, wall
    seconds, log)."""
    files = config_files(case)
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr(files),
        "--bundle_root",
        str(ROOT / "bundles" / case.bundle),
        "--meta_file",
        str(ROOT / "bundles" / case.bundle / "configs" / "metadata.json"),
        "--logging_file",
        str(ROOT / "bundles" / case.bundle / "configs" / "logging.conf"),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"workflow failed ({' '.join(cmd)}):\n{log[-4000:]}")
    epochs, threads = parse_log(log)
    if not epochs or threads is None:
        raise SystemExit(f"no epoch times or thread line in the log of {' '.join(cmd)}:\n{log[-4000:]}")
    return epochs, threads, wall, log


def parse_log(log: str) -> tuple[list[float], int | None]:
    """The trainer's epoch seconds, by epoch (the evaluator's own ``Epoch[N] Complete`` lines left out), and the
    main process's torch threads (``None`` without the line)."""
    epochs: dict[int, float] = {}
    for m in EPOCH_LINE.finditer(log):
        line = log[log.rfind("\n", 0, m.start()) + 1 : m.start()]
        if "Evaluator" not in line:
            epochs[int(m[1])] = int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4])
    threads = THREADS_LINE.search(log)
    return [epochs[k] for k in sorted(epochs)], None if threads is None else int(threads[1])


def bare_epoch(case: Case, overrides: dict, threads: int, steps: int) -> tuple[float, int, list[float], list[int]]:
    """The trainer's own iteration on one pre-loaded batch: (median step seconds, iterations per epoch, step
    times, batch shape)."""
    parser = ConfigParser()
    parser.read_config(config_files(case))
    parser.read_meta(str(ROOT / "bundles" / case.bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(ROOT / "bundles" / case.bundle)
    parser.update({**overrides, "num_workers": 0})
    torch.set_num_threads(threads)
    trainer = parser.get_parsed_content("train#trainer")
    loader = parser.get_parsed_content("train#dataloader")
    batch = next(iter(loader))
    trainer.state.max_epochs, trainer.state.epoch_length = 1, len(loader)
    trainer.network.train()
    times = []
    for i in range(steps + 1):  # the first one warms up
        start = time.perf_counter()
        trainer._iteration(trainer, batch)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times), len(loader), times, list(batch["image"].shape)


def run_case(name: str, args: argparse.Namespace, work: Path) -> dict:
    case = CASES[name]
    overrides = {**case_overrides(case, Path(args.data), work, args.epochs, args.torch_threads), **args.set}
    epoch_s, threads, wall, _ = run_workflow(case, overrides)
    later = epoch_s[1:-1] or epoch_s
    workflow_epoch = statistics.mean(later)
    bare_threads = args.bare_threads or os.cpu_count() or 1
    step, iterations, step_times, shape = bare_epoch(case, overrides, bare_threads, args.bare_steps)
    bare = step * iterations
    return {
        "name": f"workflow_{name}",
        "device": device_name(torch.device("cpu")),
        "configs": list(case.configs),
        "overrides": {k: v for k, v in overrides.items() if k not in ("dataset_dir", "ckpt_dir", "output_dir")},
        "epochs": args.epochs,
        "epoch_s": [round(t, 3) for t in epoch_s],
        "workflow_epoch_s": round(workflow_epoch, 3),
        "workflow_train_epoch_median_s": round(statistics.median(later), 3),
        "run_end_s": round(epoch_s[-1], 3),
        "iterations_per_epoch": iterations,
        "batch_shape": shape,
        "bare_step_s": round(step, 4),
        "bare_step_times_s": [round(t, 3) for t in step_times],
        "bare_epoch_s": round(bare, 3),
        "ratio": round(bare / workflow_epoch, 3),
        "target": TARGET,
        "target_met": bare / workflow_epoch >= TARGET,
        "torch_threads": threads,
        "bare_torch_threads": bare_threads,
        "workflow_wall_s": round(wall, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=QUICK_CASES)
    parser.add_argument("--all", action="store_true", help="every case, the slow full-size ones too")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--bare-steps", type=int, default=5)
    parser.add_argument("--torch-threads", default="auto", help="the workflows' torch_threads setting")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument(
        "--bare-threads",
        type=int,
        default=0,
        help="torch threads of the bare loop; default: every core (the machine's whole compute)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra overrides of every case (VALUE read as YAML), e.g. num_workers=1",
    )
    args = parser.parse_args(argv)
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        settings[key] = yaml.safe_load(value)
    args.set = settings
    if args.all:
        args.cases = list(CASES)
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (epoch 1 and the last are left out)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    for name in args.cases:
        with tempfile.TemporaryDirectory(prefix=f"bench_workflow_{name}_") as tmp:
            print(json.dumps(run_case(name, args, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
