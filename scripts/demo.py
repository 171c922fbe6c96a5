"""The demo: synthetic data -> MAE pre-training -> fine-tuning -> evaluation -> inference, for each bundle.

Every stage is a bundle's own workflow, run with ``python -m monai.bundle run`` and ``configs/quick.yaml``, exactly
as a user runs it on real data. Run through ``bash scripts/demo.sh`` (which sets up ``.venv`` first):

    bash scripts/demo.sh                      # all parts, writes demo_output/
    bash scripts/demo.sh --parts ct,cxr       # the abdominal CT and chest X-ray parts only
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
BUNDLES = REPO / "bundles"
EPOCH_DONE = re.compile(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete")


class Stages:
    """Numbers the stages of the whole demo and times them."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.timings = total, 0, {}

    def label(self, text: str) -> str:
        self.done += 1
        return f"[{self.done}/{self.total}] {text}"


def run_workflow(
    bundle: str, workflow: str, log: Path, desc: str, epochs: int | None, stages: Stages, **overrides
) -> None:
    """Runs one bundle workflow in a subprocess, logging to ``log`` with a progress bar; exits on failure."""
    configs = [f"configs/{name}.yaml" for name in ("common", workflow, "quick")]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs)]
    cmd += ["--logging_file", "configs/logging.conf"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    start = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    label = stages.label(desc)
    with open(log, "w") as out, tqdm(total=epochs or 1, desc=label, unit="epoch", dynamic_ncols=True) as bar:
        out.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=BUNDLES / bundle, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(line)
            m = EPOCH_DONE.search(line)
            if m and epochs:
                bar.update(int(m.group(1)) - bar.n)
        if proc.wait() != 0:
            bar.close()
            sys.exit(f"{label} failed (exit code {proc.returncode}); see the full log in {log}")
        bar.update(bar.total - bar.n)
    stages.timings[f"{bundle}/{workflow}"] = time.time() - start


def pretrain_train_evaluate(
    bundle: str, tag: str, out: Path, stages: Stages, pretrain_epochs: int, train_epochs: int, what: dict[str, str]
) -> dict:
    """Runs a bundle's pretrain, train (from the MAE encoder) and evaluate on ``out/data``; returns the summary JSON.

    ``what`` describes the stages for the progress lines: keys ``pretrain``, ``train``, ``evaluate``.
    """
    runs, common = out / "runs", dict(dataset_dir=out / "data", ckpt_dir=out / "models")
    run_workflow(bundle, "pretrain", runs / "pretrain.log", f"{tag}: {what['pretrain']}", pretrain_epochs, stages,
                 output_dir=runs / "pretrain", max_epochs=pretrain_epochs, recon_interval=pretrain_epochs,
                 **common)  # fmt: skip
    run_workflow(bundle, "train", runs / "train.log", f"{tag}: {what['train']}", train_epochs, stages,
                 output_dir=runs / "train", max_epochs=train_epochs, **common)  # fmt: skip
    run_workflow(bundle, "evaluate", runs / "evaluate.log", f"{tag}: {what['evaluate']}", None, stages,
                 output_dir=runs / "evaluate", **common)  # fmt: skip
    return json.loads((runs / "evaluate" / "summary.json").read_text())


def infer(bundle: str, tag: str, out: Path, stages: Stages, inputs: Path, what: str) -> None:
    """Runs a bundle's inference on ``inputs`` with the fine-tuned ``out/models/model.pt``."""
    run_workflow(bundle, "inference", out / "runs" / "inference.log", f"{tag}: {what}", None, stages,
                 dataset_dir=inputs, ckpt_dir=out / "models", output_dir=out / "runs" / "inference")  # fmt: skip


def segmentation_lines(title: str, column: str, summary: dict) -> list[str]:
    """Per-class Dice / HD95 table of a segmentation bundle's evaluation summary."""
    lines = [f"{title} (test cases: {', '.join(summary['cases'])})", f"  {column:<26}{'Dice':>8}{'HD95 mm':>10}"]
    for name, d in summary["dice"]["per_class"].items():
        hd = summary["hd95"]["per_class"][name]["mean"]
        dice = "n/a" if d["mean"] is None else f"{d['mean']:.3f}"
        lines.append(f"  {name:<26}{dice:>8}{'n/a' if hd is None else f'{hd:.1f}':>10}")
    lines.append(f"  {'mean':<26}{summary['dice']['mean']:>8.3f}")
    return lines


def last_reconstruction(out: Path) -> Path | str:
    recon = sorted((out / "runs" / "pretrain").glob("reconstruction_epoch*.png"), key=lambda p: p.stat().st_mtime)
    return recon[-1] if recon else "none"


def ct_part(out: Path, stages: Stages, args: argparse.Namespace) -> list[str]:
    """BTCV bundle on synthetic abdominal CTs; returns the lines of its summary."""
    from shared_networks.data.phantoms import write_btcv_phantom_dataset

    data, runs = out / "data", out / "runs"
    tqdm.write(stages.label(f"CT: generating {args.ct_cases} synthetic abdominal CTs (13 organs, BTCV layout)"))
    write_btcv_phantom_dataset(data, num_cases=args.ct_cases, seed=0)
    b = "btcv_mae_segmentation"
    what = {"pretrain": "MAE pre-training", "train": "UNETR fine-tuning from the MAE encoder",
            "evaluate": "evaluation on the test split (native resolution)"}  # fmt: skip
    summary = pretrain_train_evaluate(b, "CT", out, stages, args.ct_pretrain_epochs, args.ct_train_epochs, what)
    unseen = out / "test_images"  # the test split's CTs, never seen in training or model selection
    unseen.mkdir(exist_ok=True)
    for case in summary["cases"]:
        if not (unseen / case).exists():
            (unseen / case).symlink_to(data / "imagesTr" / case)
    infer(b, "CT", out, stages, unseen, "inference on the test CTs")
    return segmentation_lines("CT, 13 organs", "organ", summary) + [
        f"  MAE reconstruction (input | masked | reconstruction): {last_reconstruction(out)}",
        f"  metrics: {runs / 'evaluate' / 'summary.json'} and per_case.csv",
        f"  predicted label maps: {runs / 'inference'}",
        f"  weights: {out / 'models' / 'mae.pt'} (MAE), {out / 'models' / 'model.pt'} (fine-tuned); logs: {runs}/*.log",
    ]


def mri_part(out: Path, stages: Stages, args: argparse.Namespace) -> list[str]:
    """BraTS bundle on synthetic 4-channel brain MRI (MSD Task01 layout); returns the lines of its summary."""
    from shared_networks.data.brats_phantoms import write_msd_phantom_dataset

    tqdm.write(stages.label(f"MRI: generating {args.mri_cases} synthetic 4-channel brain MRIs with tumours (MSD)"))
    write_msd_phantom_dataset(out / "data", num_cases=args.mri_cases, num_unlabelled=2, seed=0)
    b = "brats_mae_segmentation"
    what = {"pretrain": "MAE pre-training (4 channels)", "train": "UNETR fine-tuning from the MAE encoder",
            "evaluate": "evaluation on the test fold (native resolution)"}  # fmt: skip
    summary = pretrain_train_evaluate(b, "MRI", out, stages, args.mri_pretrain_epochs, args.mri_train_epochs, what)
    infer(b, "MRI", out, stages, out / "data" / "imagesTs", "inference on the unlabelled MRIs")
    return segmentation_lines("MRI, tumour regions", "region", summary) + [
        f"  MAE reconstruction (FLAIR): {last_reconstruction(out)}",
        f"  metrics: {out / 'runs' / 'evaluate' / 'summary.json'}; label maps (MSD numbering): "
        f"{out / 'runs' / 'inference'}",
    ]


def cxr_part(out: Path, stages: Stages, args: argparse.Namespace) -> list[str]:
    """ChestX-ray14 bundle on synthetic chest radiographs; returns the lines of its summary."""
    from shared_networks.data.phantoms import write_cxr14_phantom_dataset

    tqdm.write(stages.label(f"CXR: generating radiographs of {args.cxr_patients} patients (NIH layout, 14 findings)"))
    write_cxr14_phantom_dataset(out / "data", num_patients=args.cxr_patients, size=128, seed=0)
    b = "cxr14_mae_classification"
    what = {"pretrain": "MAE pre-training", "train": "ViT fine-tuning from the MAE encoder",
            "evaluate": "evaluation on test_list.txt"}  # fmt: skip
    summary = pretrain_train_evaluate(b, "CXR", out, stages, args.cxr_pretrain_epochs, args.cxr_train_epochs, what)
    infer(b, "CXR", out, stages, out / "data" / "images", "inference on the image folder")
    lines = [f"Chest X-ray, 14 findings ({summary.get('n_images', '?')} test images)", f"  {'finding':<26}{'AUC':>8}"]
    for finding, d in summary["per_class"].items():
        lines.append(f"  {finding:<26}{'undefined' if d['auc'] is None else format(d['auc'], '.3f'):>8}")
    mean = summary["mean_auc"]
    lines.append(f"  {'mean (defined)':<26}{'n/a' if mean is None else format(mean, '.3f'):>8}")
    return lines + [
        f"  MAE reconstruction: {last_reconstruction(out)}",
        f"  metrics: {out / 'runs' / 'evaluate' / 'summary.json'}; probabilities: {out / 'runs' / 'inference'}",
    ]


PARTS = {"ct": (ct_part, 5), "mri": (mri_part, 5), "cxr": (cxr_part, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "demo_output", help="folder for data, weights, results")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--ct_cases", type=int, default=8, help="synthetic CT cases")
    parser.add_argument("--ct_pretrain_epochs", type=int, default=100)
    parser.add_argument("--ct_train_epochs", type=int, default=50)
    parser.add_argument("--mri_cases", type=int, default=8, help="synthetic labelled brain MRI cases")
    parser.add_argument("--mri_pretrain_epochs", type=int, default=40)
    parser.add_argument("--mri_train_epochs", type=int, default=40)
    parser.add_argument("--cxr_patients", type=int, default=200, help="synthetic chest X-ray patients")
    parser.add_argument("--cxr_pretrain_epochs", type=int, default=40)
    parser.add_argument("--cxr_train_epochs", type=int, default=40)
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")

    t0 = time.time()
    stages = Stages(sum(PARTS[p][1] for p in parts))
    report = []
    for p in parts:
        report += PARTS[p][0](args.output.resolve() / p, stages, args) + [""]
    times = ", ".join(f"{k} {v:.0f} s" for k, v in stages.timings.items())
    print(f"\ndemo done in {time.time() - t0:.0f} s ({times})\n")
    print("\n".join(report))
    print("The quick variant shows the whole chain working on synthetic data; it says nothing about real results.")


if __name__ == "__main__":
    main()
