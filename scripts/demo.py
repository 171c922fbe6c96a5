"""The demo: synthetic data -> MAE pre-training -> fine-tuning (from the MAE encoder and from scratch, same data and
seed) -> evaluation of both -> inference, for each bundle; then one HTML report of it all.

Every stage is a bundle's own workflow, run with ``python -m monai.bundle run`` and ``configs/quick.yaml``, exactly
as a user runs it on real data. Run through ``bash scripts/demo.sh`` (which sets up ``.venv`` first):

    bash scripts/demo.sh                      # all parts, writes demo_output/ and demo_output/report.html
    bash scripts/demo.sh --parts ct,cxr       # the abdominal CT and chest X-ray parts only
    bash scripts/demo.sh --output /tmp/demo   # elsewhere
    bash scripts/demo.sh --mlflow             # also track every run with MLflow (demo_output/<part>/runs/mlflow.db)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tqdm import tqdm

from shared_networks.tools.report import (
    SEGMENTATION_NOTE,
    FineTuneRun,
    ReportSection,
    build_report,
    summary_table,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
EPOCH_DONE = re.compile(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete")


class Stages:
    """Numbers the stages of the whole demo and times them; ``mlflow`` adds MLflow tracking to every workflow."""

    def __init__(self, total: int, mlflow: bool = False) -> None:
        self.total, self.done, self.timings, self.mlflow, self.start = total, 0, {}, mlflow, time.time()

    def label(self, text: str) -> str:
        self.done += 1
        return f"[{self.done}/{self.total}, {time.time() - self.start:.0f} s] {text}"


def run_workflow(
    bundle: str, workflow: str, log: Path, desc: str, epochs: int | None, stages: Stages, **overrides
) -> None:
    """Runs one bundle workflow in a subprocess, logging to ``log`` with a progress bar; exits on failure."""
    files = {"evaluate": ["train", "evaluate"]}.get(workflow, [workflow])  # evaluate merges over train (model-zoo)
    configs = [f"configs/{name}.yaml" for name in (*files, "quick")]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs)]
    cmd += ["--logging_file", "configs/logging.conf"]
    if stages.mlflow:  # one SQLite store per part, beside the part's logs
        store = Path(overrides["output_dir"]).parent / "mlflow.db"
        cmd += ["--tracking", "configs/mlflow.yaml", "--tracking_uri", f"sqlite:///{store.resolve().as_posix()}"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    shutil.rmtree(overrides["output_dir"], ignore_errors=True)  # no stale logs of an earlier demo in the report
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
    stages.timings[f"{bundle}/{log.stem}"] = time.time() - start


# the two fine-tuning arms: name in the report, suffix of their folders, --pretrained_ckpt (None: the default mae.pt),
# words for the progress line
ARMS = (("MAE encoder", "", None, "from the MAE encoder"), ("from scratch", "_scratch", "none", "from scratch"))


def pretrain_train_evaluate(
    bundle: str, tag: str, out: Path, stages: Stages, pretrain_epochs: int, train_epochs: int, what: dict[str, str]
) -> dict[str, dict]:
    """Runs a bundle's pretrain, then train and evaluate twice on ``out/data``: from the MAE encoder, and from scratch
    with the same data and seed. Returns each arm's evaluation summary, by arm name.

    The MAE arm writes ``out/models/model.pt`` and ``out/runs/{train,evaluate}``; the scratch arm
    ``out/models_scratch/model.pt`` and ``out/runs/{train,evaluate}_scratch``. ``what`` describes the stages for the
    progress lines: keys ``pretrain``, ``train``, ``evaluate``.
    """
    runs, data = out / "runs", out / "data"
    run_workflow(bundle, "pretrain", runs / "pretrain.log", f"{tag}: {what['pretrain']}", pretrain_epochs, stages,
                 output_dir=runs / "pretrain", max_epochs=pretrain_epochs, dataset_dir=data, ckpt_dir=out / "models",
                 recon_interval=max(1, pretrain_epochs // 4))  # fmt: skip
    for _, suffix, ckpt, words in ARMS:
        extra = {} if ckpt is None else {"pretrained_ckpt": ckpt}
        run_workflow(bundle, "train", runs / f"train{suffix}.log", f"{tag}: {what['train']} {words}",
                     train_epochs, stages, output_dir=runs / f"train{suffix}", max_epochs=train_epochs,
                     dataset_dir=data, ckpt_dir=out / f"models{suffix}", **extra)  # fmt: skip
    for arm, suffix, *_ in ARMS:
        run_workflow(bundle, "evaluate", runs / f"evaluate{suffix}.log", f"{tag}: {what['evaluate']}, {arm}", None,
                     stages, output_dir=runs / f"evaluate{suffix}", dataset_dir=data,
                     ckpt_dir=out / f"models{suffix}")  # fmt: skip
    return {arm: json.loads((runs / f"evaluate{suffix}" / "summary.json").read_text()) for arm, suffix, *_ in ARMS}


def report_section(title: str, out: Path, val_tag: str, notes: list[str]) -> ReportSection:
    """The report's section of one part (the folders ``pretrain_train_evaluate`` wrote)."""
    runs = out / "runs"
    arms = [FineTuneRun(arm, runs / f"train{s}", runs / f"evaluate{s}" / "summary.json") for arm, s, *_ in ARMS]
    return ReportSection(title, runs / "pretrain", arms, val_tag, notes)


def infer(bundle: str, tag: str, out: Path, stages: Stages, inputs: Path, what: str) -> None:
    """Runs a bundle's inference on ``inputs`` with the fine-tuned ``out/models/model.pt``."""
    run_workflow(bundle, "inference", out / "runs" / "inference.log", f"{tag}: {what}", None, stages,
                 dataset_dir=inputs, ckpt_dir=out / "models", output_dir=out / "runs" / "inference")  # fmt: skip


def table_lines(title: str, summaries: dict[str, dict]) -> list[str]:
    """The per-class table (Dice, HD95, missed and false-positive counts; or AUC) of the arms' evaluation summaries,
    side by side, as text; for segmentation, the metric conventions under it."""
    header, rows, _ = summary_table(summaries)
    widths = [max(len(r[i]) for r in [header, *rows]) + 2 for i in range(len(header))]
    lines = [title]
    for row in [header, *rows]:
        cells = "".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        lines.append("  " + row[0].ljust(widths[0]) + cells)
    if any("structures" in s for s in summaries.values()):
        lines += textwrap.wrap(SEGMENTATION_NOTE, width=116, initial_indent="  ", subsequent_indent="  ")
    return lines


def last_reconstruction(out: Path) -> Path | str:
    recon = sorted((out / "runs" / "pretrain").glob("reconstruction_epoch*.png"), key=lambda p: p.stat().st_mtime)
    return recon[-1] if recon else "none"


def ct_part(out: Path, stages: Stages, args: argparse.Namespace) -> tuple[list[str], ReportSection]:
    """BTCV bundle on synthetic abdominal CTs; returns the lines of its summary and its report section."""
    from shared_networks.synthetic.ct import write_btcv_phantom_dataset

    data, runs = out / "data", out / "runs"
    tqdm.write(stages.label(f"CT: generating {args.ct_cases} synthetic abdominal CTs (13 organs, BTCV layout)"))
    write_btcv_phantom_dataset(data, num_cases=args.ct_cases, seed=0)
    b = "btcv_mae_segmentation"
    what = {"pretrain": "MAE pre-training", "train": "UNETR fine-tuning",
            "evaluate": "evaluation on the test split (native resolution)"}  # fmt: skip
    summaries = pretrain_train_evaluate(b, "CT", out, stages, args.ct_pretrain_epochs, args.ct_train_epochs, what)
    cases = summaries[ARMS[0][0]]["cases"]
    unseen = out / "test_images"  # the test split's CTs, never seen in training or model selection
    unseen.mkdir(exist_ok=True)
    for case in cases:
        if not (unseen / case).exists():
            (unseen / case).symlink_to(data / "imagesTr" / case)
    infer(b, "CT", out, stages, unseen, "inference on the test CTs (MAE-initialised model)")
    title = f"CT, 13 organs (BTCV bundle): Dice and HD95 on the test cases {', '.join(cases)}"
    notes = [f"{args.ct_cases} synthetic CTs; MAE pre-training {args.ct_pretrain_epochs} epochs, UNETR fine-tuning "
             f"{args.ct_train_epochs} epochs per arm (configs/quick.yaml, seed 0)."]  # fmt: skip
    return table_lines(title, summaries) + [
        f"  MAE reconstruction (input | masked | reconstruction): {last_reconstruction(out)}",
        f"  metrics: {runs}/evaluate{{,_scratch}}/summary.json and per_case.csv",
        f"  predicted label maps: {runs / 'inference'}",
        f"  weights: {out / 'models'} (mae.pt, model.pt), {out / 'models_scratch'}; logs: {runs}/*.log",
    ], report_section("CT: BTCV bundle (abdominal organs, 3D UNETR)", out, "val_mean_dice", notes)


def mri_part(out: Path, stages: Stages, args: argparse.Namespace) -> tuple[list[str], ReportSection]:
    """BraTS bundle on synthetic 4-channel brain MRI (MSD Task01 layout); returns its summary lines and section."""
    from shared_networks.synthetic.brain import write_msd_phantom_dataset

    tqdm.write(stages.label(f"MRI: generating {args.mri_cases} synthetic 4-channel brain MRIs with tumours (MSD)"))
    write_msd_phantom_dataset(out / "data", num_cases=args.mri_cases, num_unlabelled=2, seed=0)
    b = "brats_mae_segmentation"
    what = {"pretrain": "MAE pre-training (4 channels)", "train": "UNETR fine-tuning",
            "evaluate": "evaluation on the test fold (native resolution)"}  # fmt: skip
    summaries = pretrain_train_evaluate(b, "MRI", out, stages, args.mri_pretrain_epochs, args.mri_train_epochs, what)
    infer(b, "MRI", out, stages, out / "data" / "imagesTs", "inference on the unlabelled MRIs (MAE-initialised model)")
    cases = summaries[ARMS[0][0]]["cases"]
    notes = [f"{args.mri_cases} labelled + 2 unlabelled synthetic MRIs (MSD Task01 layout); MAE pre-training "
             f"{args.mri_pretrain_epochs} epochs, fine-tuning {args.mri_train_epochs} epochs per arm; the "
             "reconstructions show the FLAIR channel."]  # fmt: skip
    return table_lines(f"MRI, tumour regions (BraTS bundle): test cases {', '.join(cases)}", summaries) + [
        f"  MAE reconstruction (FLAIR): {last_reconstruction(out)}",
        f"  metrics: {out / 'runs'}/evaluate{{,_scratch}}/summary.json; label maps (MSD numbering): "
        f"{out / 'runs' / 'inference'}",
    ], report_section("MRI: BraTS bundle (tumour regions TC/WT/ET, 3D UNETR)", out, "val_mean_dice", notes)


def cxr_part(out: Path, stages: Stages, args: argparse.Namespace) -> tuple[list[str], ReportSection]:
    """ChestX-ray14 bundle on synthetic chest radiographs; returns its summary lines and report section."""
    from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

    tqdm.write(stages.label(f"CXR: generating radiographs of {args.cxr_patients} patients (NIH layout, 14 findings)"))
    write_cxr14_phantom_dataset(out / "data", num_patients=args.cxr_patients, size=128, seed=0)
    b = "cxr14_mae_classification"
    what = {"pretrain": "MAE pre-training", "train": "ViT fine-tuning", "evaluate": "evaluation on test_list.txt"}
    summaries = pretrain_train_evaluate(b, "CXR", out, stages, args.cxr_pretrain_epochs, args.cxr_train_epochs, what)
    infer(b, "CXR", out, stages, out / "data" / "images", "inference on the image folder (MAE-initialised model)")
    n = summaries[ARMS[0][0]].get("n_images", "?")
    notes = [f"Synthetic radiographs of {args.cxr_patients} patients (NIH layout), {n} test images; MAE pre-training "
             f"{args.cxr_pretrain_epochs} epochs, fine-tuning {args.cxr_train_epochs} epochs per arm; ROC AUC is "
             "n/a for a finding whose test labels are all negative or all positive."]  # fmt: skip
    return table_lines(f"Chest X-ray, 14 findings (CXR14 bundle): ROC AUC on {n} test images", summaries) + [
        f"  MAE reconstruction: {last_reconstruction(out)}",
        f"  metrics: {out / 'runs'}/evaluate{{,_scratch}}/summary.json; probabilities: {out / 'runs' / 'inference'}",
    ], report_section("Chest X-ray: ChestX-ray14 bundle (14 findings, 2D ViT)", out, "val_mean_auc", notes)


# stages per part: data, pretrain, 2 x train, 2 x evaluate, inference
PARTS = {"ct": (ct_part, 7), "mri": (mri_part, 7), "cxr": (cxr_part, 7)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "demo_output", help="folder for data, weights, results")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--mlflow", action="store_true", help="also track every workflow with MLflow (SQLite store)")
    parser.add_argument("--ct_cases", type=int, default=8, help="synthetic CT cases")
    parser.add_argument("--ct_pretrain_epochs", type=int, default=100)
    parser.add_argument("--ct_train_epochs", type=int, default=25, help="fine-tuning epochs of each arm")
    parser.add_argument("--mri_cases", type=int, default=8, help="synthetic labelled brain MRI cases")
    parser.add_argument("--mri_pretrain_epochs", type=int, default=40)
    parser.add_argument("--mri_train_epochs", type=int, default=30, help="fine-tuning epochs of each arm")
    parser.add_argument("--cxr_patients", type=int, default=200, help="synthetic chest X-ray patients")
    parser.add_argument("--cxr_pretrain_epochs", type=int, default=40)
    parser.add_argument("--cxr_train_epochs", type=int, default=30, help="fine-tuning epochs of each arm")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")

    output = args.output.resolve()
    stages = Stages(sum(PARTS[p][1] for p in parts) + 1, mlflow=args.mlflow)
    tqdm.write(f"demo: {stages.total} stages ({', '.join(parts)}: data, MAE pre-training, fine-tuning from the MAE "
               "encoder and from scratch, evaluation of both, inference; then the report)")  # fmt: skip
    lines, sections = [], []
    for p in parts:
        part_lines, section = PARTS[p][0](output / p, stages, args)
        lines += part_lines + [""]
        sections.append(section)
    tqdm.write(stages.label("writing the report"))
    intro = [f"Made by scripts/demo.py on synthetic data, parts: {', '.join(parts)}. Each part pre-trains an MAE on "
             "its training images, then fine-tunes twice with the same data and seed: from the MAE encoder, and from "
             "scratch (--pretrained_ckpt none); both are evaluated on the same test split. These quick runs (tiny "
             "ViTs, configs/quick.yaml) show the whole chain working; they say nothing about MAE on real data sets."]
    report = build_report(sections, output / "report.html", "MAE self pre-training demo", intro)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in stages.timings.items())
    print(f"\ndemo done in {time.time() - stages.start:.0f} s ({times})\n")
    print("\n".join(lines))
    if args.mlflow:
        print(f"MLflow: mlflow ui --backend-store-uri sqlite:///{output}/<part>/runs/mlflow.db (pip install mlflow)")
    print("The quick variant shows the whole chain working on synthetic data; it says nothing about real results.")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
