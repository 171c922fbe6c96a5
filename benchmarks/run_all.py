"""Every performance target of the project in one command: JSON lines on stdout, one per measurement.

CPU (default): MAE pre-training step (3D b2, 3D b4, 2D b8) in fp32 and with bf16 autocast, UNETR fine-tuning step,
the BTCV data pipeline, sliding-window inference, whole training workflows against their bare step (``workflow``:
the quick cases; ``--full-workflows`` adds the full-size BTCV ones), and the BTCV inference workflow on a CPU, exact
fp32 against the bundle's defaults (``cpu_inference``). GPU (``--device cuda``): the MAE step in bf16 and fp32
(TF32), the UNETR step and sliding-window inference on the full-size CT. Each part is its own script, run here in
turn; see ``benchmarks/README.md`` for what each measures. ``--skip-slow`` leaves out the parts that run whole
workflows (``workflow``, ``cpu_inference``).

Usage::

    python benchmarks/run_all.py [--device cpu|cuda] [--quick] [--skip-slow] [--full-workflows]
        [--only mae unetr data sliding workflow cpu_inference]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("mae", "unetr", "data", "sliding", "workflow", "cpu_inference")
SLOW_PARTS = ("workflow", "cpu_inference")


def commands(device: str, quick: bool, full_workflows: bool = False) -> dict[str, list[list[str]]]:
    """The script invocations per part."""
    cuda = device.startswith("cuda")
    # MONAI's arm with torch's default AdamW: foreach on CUDA, the scripts' default (the for-loop) on the CPU
    monai_opt = ["--monai-optimizer", "foreach"] if cuda else []
    rep = ["--repeats", "2" if quick else ("20" if cuda else "8"), "--warmup", "1" if quick else "3"]
    mae = [
        ["bench_mae_step.py", "--device", device, "--precision", p, *rep, *monai_opt]
        for p in (("bf16", "fp32") if cuda else ("fp32", "bf16"))
    ]
    if cuda:
        mae = [c + ["--no-flop-count"] for c in mae]
    urep = ["--repeats", "2" if quick else ("10" if cuda else "3"), "--warmup", "1"]
    unetr = [["bench_unetr.py", "--mode", "step", "--device", device, "--batch", "2", *urep, *monai_opt]]
    if cuda:
        unetr.append(
            [
                "bench_unetr.py",
                "--mode",
                "step",
                "--device",
                device,
                "--batch",
                "2",
                "--precision",
                "bf16",
                *urep,
                *monai_opt,
            ]
        )
    volumes = [["--volume", "512", "512", "100"], ["--volume", "273", "273", "125"]] if cuda else [[]]
    srep = ["--repeats", "1" if quick or not cuda else "3", "--warmup", "0" if not cuda else "1"]
    sliding = [["bench_unetr.py", "--mode", "sliding", "--device", device, *v, *srep] for v in volumes]
    data = [] if cuda else [["bench_data.py", "--repeats", "2" if quick else "5"]]
    # whole workflows on the CPU only (the bundles' CPU settings); the full-size BTCV cases take tens of minutes
    cases = ["--all"] if full_workflows else []
    workflow = [] if cuda else [["bench_workflow.py", "--epochs", "3" if quick else "6", *cases]]
    cpu_inference = [] if cuda else [["bench_cpu_inference.py", "--repeats", "1"]]
    return {
        "mae": mae,
        "unetr": unetr,
        "data": data,
        "sliding": sliding,
        "workflow": workflow,
        "cpu_inference": cpu_inference,
    }


def selected(only: Sequence[str], skip_slow: bool) -> list[str]:
    """The parts to run: those in ``only``, less the slow ones with ``skip_slow``."""
    return [p for p in PARTS if p in only and not (skip_slow and p in SLOW_PARTS)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewest repeats: checks that everything runs")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--skip-slow", action="store_true", help=f"leave out {', '.join(SLOW_PARTS)}")
    parser.add_argument("--full-workflows", action="store_true", help="workflow: the full-size BTCV cases too (slow)")
    args = parser.parse_args(argv)
    failed = 0
    for part, cmds in commands(args.device, args.quick, args.full_workflows).items():
        if part not in selected(args.only, args.skip_slow):
            continue
        for cmd in cmds:
            print(f"# {' '.join(cmd)}", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], stdout=sys.stdout, check=False)
            failed += proc.returncode != 0
    if failed:
        raise SystemExit(f"{failed} benchmark command(s) failed")


if __name__ == "__main__":
    main()
