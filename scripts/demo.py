"""The demo: synthetic abdominal CTs -> MAE pre-training -> UNETR fine-tuning -> evaluation -> inference.

Every stage is the BTCV bundle's own workflow, run with ``python -m monai.bundle run`` and ``configs/quick.yaml``,
exactly as a user runs it on real data. Run through ``bash scripts/demo.sh`` (which sets up ``.venv`` first):

    bash scripts/demo.sh                      # writes demo_output/
    bash scripts/demo.sh --output /tmp/demo   # elsewhere
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
BTCV = REPO / "bundles" / "btcv_mae_segmentation"
EPOCH_DONE = re.compile(r"Epoch\[(\d+)\] Complete")


def run_workflow(bundle: Path, workflow: str, log: Path, desc: str, epochs: int | None, **overrides) -> float:
    """Runs one bundle workflow in a subprocess, logging to ``log`` and showing a progress bar; returns seconds."""
    configs = [f"configs/{name}.yaml" for name in ("common", workflow, "quick")]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs)]
    cmd += ["--logging_file", "configs/logging.conf"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    start = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out, tqdm(total=epochs, desc=desc, unit="epoch", leave=True, dynamic_ncols=True) as bar:
        out.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=bundle, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(line)
            m = EPOCH_DONE.search(line)
            if m and epochs and "SupervisedTrainer" in line:
                bar.update(int(m.group(1)) - bar.n)
        if proc.wait() != 0:
            bar.close()
            sys.exit(f"{desc} failed (exit code {proc.returncode}); see the full log in {log}")
        if epochs is None:
            bar.total = bar.n = 1
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "demo_output", help="folder for data, weights, results")
    parser.add_argument("--cases", type=int, default=8, help="synthetic CT cases to generate")
    parser.add_argument("--pretrain_epochs", type=int, default=100)
    parser.add_argument("--train_epochs", type=int, default=60)
    args = parser.parse_args()

    from shared_networks.data.phantoms import write_btcv_phantom_dataset

    out = args.output.resolve() / "btcv"
    data, models, runs = out / "data", out / "models", out / "runs"
    t0 = time.time()
    print(f"[1/5] generating {args.cases} synthetic abdominal CTs (13 organs, BTCV layout) in {data}")
    write_btcv_phantom_dataset(data, num_cases=args.cases, seed=0)
    common = dict(dataset_dir=data, ckpt_dir=models)
    timings = {}
    timings["pretrain"] = run_workflow(
        BTCV, "pretrain", runs / "pretrain.log", "[2/5] MAE pre-training", args.pretrain_epochs,
        output_dir=runs / "pretrain", max_epochs=args.pretrain_epochs, recon_interval=args.pretrain_epochs, **common,
    )  # fmt: skip
    timings["train"] = run_workflow(
        BTCV, "train", runs / "train.log", "[3/5] UNETR fine-tuning from the MAE encoder", args.train_epochs,
        output_dir=runs / "train", max_epochs=args.train_epochs, **common,
    )  # fmt: skip
    timings["evaluate"] = run_workflow(
        BTCV, "evaluate", runs / "evaluate.log", "[4/5] evaluation on the test split (native resolution)", None,
        output_dir=runs / "evaluate", **common,
    )  # fmt: skip
    summary = json.loads((runs / "evaluate" / "summary.json").read_text())
    unseen = out / "test_images"  # the test split's CTs, never seen in training or model selection
    unseen.mkdir(exist_ok=True)
    for case in summary["cases"]:
        link = unseen / case
        if not link.exists():
            link.symlink_to(data / "imagesTr" / case)
    timings["inference"] = run_workflow(
        BTCV, "inference", runs / "inference.log", "[5/5] inference on the test CTs, in each input's geometry", None,
        dataset_dir=unseen, ckpt_dir=models, output_dir=runs / "inference",
    )  # fmt: skip

    print(f"\ndone in {time.time() - t0:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ")")
    print(f"test cases: {', '.join(summary['cases'])}")
    print(f"{'organ':<26}{'Dice':>8}{'HD95 mm':>10}")
    for organ, d in summary["dice"]["per_class"].items():
        hd = summary["hd95"]["per_class"][organ]["mean"]
        dice = "n/a" if d["mean"] is None else f"{d['mean']:.3f}"
        print(f"{organ:<26}{dice:>8}{'n/a' if hd is None else f'{hd:.1f}':>10}")
    print(f"{'mean':<26}{summary['dice']['mean']:>8.3f}")
    recon = sorted((runs / "pretrain").glob("reconstruction_epoch*.png"))
    print(f"\nMAE reconstruction (input | masked | reconstruction): {recon[-1] if recon else 'none'}")
    print(f"metrics: {runs / 'evaluate' / 'summary.json'} and per_case.csv")
    print(f"predicted label maps: {runs / 'inference'}")
    print(f"weights: {models / 'mae.pt'} (MAE), {models / 'model.pt'} (fine-tuned); logs: {runs}/*.log")


if __name__ == "__main__":
    main()
