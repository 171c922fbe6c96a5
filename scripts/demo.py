"""The demo: synthetic data -> a study of MAE against scratch (MAE pre-training, fine-tuning from the MAE encoder and
from scratch with the same data and seed, evaluation of both, paired bootstrap CI of the difference) -> inference, for
each bundle; then one HTML report of it all.

Each part's comparison is one run of the study (:func:`shared_networks.study.run_study`, the command
``python -m shared_networks.cli.study``) with one label fraction (1) and one seed (0), so the demo's tables carry the
95 % confidence interval of MAE - scratch and its verdict. Every stage is a bundle's own workflow, run with
``python -m monai.bundle run`` and ``configs/quick.yaml``, exactly as a user runs it on real data. Run through
``bash scripts/demo.sh`` (which sets up ``.venv`` first):

    bash scripts/demo.sh                      # all parts, writes demo_output/ and demo_output/report.html
    bash scripts/demo.sh --parts ct,cxr       # the abdominal CT and chest X-ray parts only
    bash scripts/demo.sh --output /tmp/demo   # elsewhere
    bash scripts/demo.sh --mlflow             # also track every run with MLflow (demo_output/<part>/mlflow.db)

Each part's folder holds ``data/`` (the synthetic data set), ``study/`` (the study's output folder: ``summary.json``,
``study.md``, ``pretrain/models/mae.pt``, ``runs/fraction1_seed0_<mae|scratch>/`` with ``models/model.pt``, the
``train/`` logs and ``evaluate/``), ``inference/`` and ``inference.log``.
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
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from shared_networks.study import Run, run_study
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


def run_bundle(
    bundle: str,
    args: Sequence[str],
    log: Path,
    desc: str,
    epochs: int | None,
    stages: Stages,
    timing: str,
    run_name: str,
) -> None:
    """Runs ``python -m monai.bundle run ARGS`` in the bundle's folder, logging to ``log`` with a progress bar (and,
    with ``--mlflow``, to the part's MLflow store beside its folders as run ``run_name``); exits on failure."""
    root = BUNDLES / bundle
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args, "--logging_file", str(root / "configs" / "logging.conf")]
    if stages.mlflow:  # one SQLite store per part
        store = part_folder(log) / "mlflow.db"
        cmd += [
            "--tracking",
            str(root / "configs" / "mlflow.yaml"),
            "--tracking_uri",
            f"sqlite:///{store.resolve().as_posix()}",
            "--run_name",
            run_name,
        ]
    start = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    label = stages.label(desc)
    with open(log, "w") as out, tqdm(total=epochs or 1, desc=label, unit="epoch", dynamic_ncols=True) as bar:
        out.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(line)
            m = EPOCH_DONE.search(line)
            if m and epochs:
                bar.update(int(m.group(1)) - bar.n)
        if proc.wait() != 0:
            bar.close()
            sys.exit(f"{label} failed (exit code {proc.returncode}); see the full log in {log}")
        bar.update(bar.total - bar.n)
    stages.timings[f"{bundle}/{timing}"] = time.time() - start


def part_folder(path: Path) -> Path:
    """The part's folder (``<output>/<part>``) above a log file of its study or of its inference."""
    return next(p for p in path.parents if (p / "data").is_dir())


# the two arms of the study: name in the tables and the report, arm of the study, words for the progress line
ARMS = (("MAE encoder", "mae", "from the MAE encoder"), ("from scratch", "scratch", "from scratch"))
RUNS = {arm: Run(arm, 1.0, 0) for _, arm, _ in ARMS}  # fraction 1, seed 0: runs/fraction1_seed0_<arm>


def study_runner(bundle: str, tag: str, stages: Stages, epochs: dict[str, int], what: dict[str, str]) -> Callable:
    """The study's runner (``run_study(runner=...)``): each ``monai.bundle run`` of the study as a stage of the demo,
    told apart by the log file the study names (``pretrain/log.txt``, ``runs/<run>/{train,evaluate}.log``)."""
    names = {arm: (name, words) for name, arm, words in ARMS}

    def runner(args: Sequence[str], log_file: Path) -> None:
        log_file = Path(log_file)
        if log_file.name == "log.txt":  # pre-training
            run_bundle(
                bundle, args, log_file, f"{tag}: {what['pretrain']}", epochs["pretrain"], stages, "pretrain", "pretrain"
            )
            return
        stage, arm = log_file.stem, log_file.parent.name.split("_", 2)[2]  # fraction1_seed0_<arm>
        name, words = names[arm]
        desc = f"{tag}: {what['train']} {words}" if stage == "train" else f"{tag}: {what['evaluate']}, {name}"
        run_bundle(bundle, args, log_file, desc, epochs.get(stage), stages, f"{stage}_{arm}", f"{stage}_{arm}")

    return runner


def study(
    bundle: str, tag: str, out: Path, stages: Stages, pretrain_epochs: int, train_epochs: int, what: dict[str, str]
) -> tuple[dict, dict[str, dict]]:
    """The part's study on ``out/data``, in ``out/study`` (started afresh): one MAE pre-training, fine-tuning from the
    MAE encoder and from scratch with the same data and seed, evaluation of both on the test split, and the paired
    bootstrap CI of MAE - scratch. Returns the study's summary and each arm's evaluation summary, by arm name.

    ``what`` describes the stages for the progress lines: keys ``pretrain``, ``train``, ``evaluate``.
    """
    folder = out / "study"
    shutil.rmtree(folder, ignore_errors=True)  # no stale runs of an earlier demo (the study would keep them)
    runner = study_runner(bundle, tag, stages, {"pretrain": pretrain_epochs, "train": train_epochs}, what)
    summary = run_study(
        BUNDLES / bundle,
        out / "data",
        folder,
        fractions="1",
        seeds="0",
        arms="mae,scratch",
        config_overrides="quick",
        runner=runner,
        pretrain_extra=["--max_epochs", str(pretrain_epochs), "--recon_interval", str(max(1, pretrain_epochs // 4))],
        train_extra=["--max_epochs", str(train_epochs)],
    )
    evaluations = {
        name: json.loads((run_dir(out, arm) / "evaluate" / "summary.json").read_text()) for name, arm, _ in ARMS
    }
    return summary, evaluations


def run_dir(out: Path, arm: str) -> Path:
    """The folder of one arm's run in the part's study: ``models/model.pt``, ``train/``, ``evaluate/``, logs."""
    return out / "study" / "runs" / RUNS[arm].name


def report_section(title: str, out: Path, val_tag: str, notes: list[str]) -> ReportSection:
    """The report's section of one part (the folders of its study), with the study's fragment (the arms, MAE -
    scratch with its 95 % CI and the verdict) at its end."""
    arms = [
        FineTuneRun(name, run_dir(out, arm) / "train", run_dir(out, arm) / "evaluate" / "summary.json")
        for name, arm, _ in ARMS
    ]
    return ReportSection(title, out / "study" / "pretrain" / "logs", arms, val_tag, notes, study_dir=out / "study")


def infer(bundle: str, tag: str, out: Path, stages: Stages, inputs: Path, what: str) -> None:
    """Runs a bundle's inference on ``inputs`` with the MAE arm's fine-tuned model, into ``out/inference``."""
    shutil.rmtree(out / "inference", ignore_errors=True)  # no stale outputs of an earlier demo
    configs = [str(BUNDLES / bundle / "configs" / f"{name}.yaml") for name in ("inference", "quick")]
    args = [
        "--config_file",
        repr(configs),
        "--bundle_root",
        str(BUNDLES / bundle),
        "--dataset_dir",
        str(inputs),
        "--ckpt_dir",
        str(run_dir(out, "mae") / "models"),
        "--output_dir",
        str(out / "inference"),
    ]
    run_bundle(bundle, args, out / "inference.log", f"{tag}: {what}", None, stages, "inference", "inference")


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_last: bool = False) -> list[str]:
    """Rows of cells as text lines, indented by two spaces: the first column left-aligned, the others right-aligned,
    except the last when ``text_last`` (a column of words, such as the verdict)."""
    widths = [max(len(r[i]) for r in [header, *rows]) + 2 for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            c.ljust(w) if i == 0 else "  " + c if text_last and i == len(row) - 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(("  " + "".join(cells)).rstrip())
    return lines


METRIC_NAMES = {"dice": ("Dice", 3), "hd95": ("HD95 mm", 1), "auc": ("AUC", 3)}


def _signed(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:+.{digits}f}"


def evaluation_mean(evaluation: dict, metric: str) -> float | None:
    """The mean over classes of ``metric`` in an evaluation's ``summary.json`` (``MetricsReport`` or
    ``ClassificationReport``)."""
    return evaluation["mean_auc"] if metric == "auc" else evaluation[metric]["mean"]


def apart_notes(summary: dict, evaluations: dict[str, dict]) -> list[str]:
    """A note per metric whose mean in the study's ``summary`` differs, as shown, from an arm's evaluation
    ``summary.json`` (``evaluations``, by arm name)."""
    entry, notes = summary["fractions"]["1"], []
    for m in summary["metrics"]:
        label, digits = METRIC_NAMES[m]
        apart = []
        for name, arm, _ in ARMS:
            study_value, evaluation_value = entry["arms"][arm][m]["mean"], evaluation_mean(evaluations[name], m)
            shown = ["n/a" if v is None else f"{v:.{digits}f}" for v in (study_value, evaluation_value)]
            if shown[0] != shown[1]:
                apart.append(f"{name} {shown[0]} against {shown[1]}")
        if apart:
            notes.append(
                f"the study's mean {label} differs from the table's ({'; '.join(apart)}): the study reads the "
                "evaluation's per-case or per-image file (predictions.csv holds probabilities to 6 decimals, "
                "so nearly equal scores tie there)."
            )
    return notes


def difference_lines(summary: dict, folder: Path, evaluations: dict[str, dict]) -> list[str]:
    """MAE against scratch from the study's ``summary``: per metric (mean over classes) each arm's value, the
    difference MAE - scratch, its paired bootstrap 95 % CI over the test cases and the verdict; then the study's
    notes (a small test split), a note where an arm's value differs from its evaluation's ``summary.json``
    (``evaluations``, by arm name), and where the study's files are."""
    entry = summary["fractions"]["1"]
    comparison = entry["comparisons"]["mae - scratch"]
    unit = "images" if summary["task"] == "classification" else "cases"
    share = int(round(summary["confidence"] * 100))
    header = ["metric", *(name for name, *_ in ARMS), "MAE - scratch", f"{share} % CI", "verdict"]
    rows = []
    for m in summary["metrics"]:
        label, digits = METRIC_NAMES[m]
        c = comparison[m]["mean"]
        lo, hi = c["ci95"]
        values = [entry["arms"][arm][m]["mean"] for _, arm, _ in ARMS]
        rows.append(
            [
                f"{label} (mean)",
                *("n/a" if v is None else f"{v:.{digits}f}" for v in values),
                _signed(c["difference"], digits),
                f"[{_signed(lo, digits)}, {_signed(hi, digits)}]",
                c["verdict"],
            ]
        )
    intro = (
        f"MAE against scratch (the study): paired bootstrap {share} % CI of the difference over the "
        f"{summary['n_test']} test {unit}, {summary['n_resamples']} resamples; a CI that contains 0 means the "
        "difference is noise."
    )
    lines = textwrap.wrap(intro, width=116, initial_indent="  ", subsequent_indent="  ")
    lines += text_table(header, rows, text_last=True)
    for note in [*summary["notes"], *apart_notes(summary, evaluations)]:
        lines += textwrap.wrap(f"Note: {note}", width=116, initial_indent="  ", subsequent_indent="  ")
    return lines + [f"  study: {folder}/summary.json, study.md, runs.csv"]


def table_lines(title: str, summaries: dict[str, dict], study_summary: dict, folder: Path) -> list[str]:
    """The per-class table (Dice, HD95, missed and false-positive counts; or AUC) of the arms' evaluation summaries,
    side by side, as text; for segmentation, the metric conventions under it; then the study's difference table
    (:func:`difference_lines`)."""
    header, rows, _ = summary_table(summaries)
    lines = [title, *text_table(header, rows)]
    if any("structures" in s for s in summaries.values()):
        lines += textwrap.wrap(SEGMENTATION_NOTE, width=116, initial_indent="  ", subsequent_indent="  ")
    return lines + difference_lines(study_summary, folder, summaries)


def last_reconstruction(out: Path) -> Path | str:
    logs = out / "study" / "pretrain" / "logs"
    recon = sorted(logs.glob("reconstruction_epoch*.png"), key=lambda p: p.stat().st_mtime)
    return recon[-1] if recon else "none"


def files_lines(out: Path, evaluation: str, inference: str) -> list[str]:
    """Where a part's results lie: evaluation files, inference outputs, weights and logs."""
    runs = out / "study" / "runs"
    return [
        f"  MAE reconstruction: {last_reconstruction(out)}",
        f"  metrics: {runs}/{RUNS['mae'].name}/evaluate/summary.json and {evaluation} (and the same of "
        f"{RUNS['scratch'].name}); {inference}: {out / 'inference'}",
        f"  weights: {out / 'study' / 'pretrain' / 'models' / 'mae.pt'}, {runs}/<run>/models/model.pt; logs: "
        f"{out / 'study'}/pretrain/log.txt, {runs}/<run>/{{train,evaluate}}.log",
    ]


def ct_part(out: Path, stages: Stages, args: argparse.Namespace) -> tuple[list[str], ReportSection]:
    """BTCV bundle on synthetic abdominal CTs; returns the lines of its summary and its report section."""
    from shared_networks.synthetic.ct import write_btcv_phantom_dataset

    data = out / "data"
    tqdm.write(stages.label(f"CT: generating {args.ct_cases} synthetic abdominal CTs (13 organs, BTCV layout)"))
    write_btcv_phantom_dataset(data, num_cases=args.ct_cases, seed=0)
    b = "btcv_mae_segmentation"
    what = {
        "pretrain": "MAE pre-training",
        "train": "UNETR fine-tuning",
        "evaluate": "evaluation on the test split (native resolution)",
    }
    summary, evaluations = study(b, "CT", out, stages, args.ct_pretrain_epochs, args.ct_train_epochs, what)
    cases = evaluations[ARMS[0][0]]["cases"]
    unseen = out / "test_images"  # the test split's CTs, never seen in training or model selection
    unseen.mkdir(exist_ok=True)
    for case in cases:
        if not (unseen / case).exists():
            (unseen / case).symlink_to(data / "imagesTr" / case)
    infer(b, "CT", out, stages, unseen, "inference on the test CTs (MAE-initialised model)")
    title = f"CT, 13 organs (BTCV bundle): Dice and HD95 on the test cases {', '.join(cases)}"
    notes = [
        f"{args.ct_cases} synthetic CTs; MAE pre-training {args.ct_pretrain_epochs} epochs, UNETR fine-tuning "
        f"{args.ct_train_epochs} epochs per arm (configs/quick.yaml, seed 0)."
    ]
    return table_lines(title, evaluations, summary, out / "study") + files_lines(
        out, "per_case.csv", "predicted label maps"
    ), report_section(
        "CT: BTCV bundle (abdominal organs, 3D UNETR)", out, "val_mean_dice", notes + apart_notes(summary, evaluations)
    )


def mri_part(out: Path, stages: Stages, args: argparse.Namespace) -> tuple[list[str], ReportSection]:
    """BraTS bundle on synthetic 4-channel brain MRI (MSD Task01 layout); returns its summary lines and section."""
    from shared_networks.synthetic.brain import write_msd_phantom_dataset

    tqdm.write(stages.label(f"MRI: generating {args.mri_cases} synthetic 4-channel brain MRIs with tumours (MSD)"))
    write_msd_phantom_dataset(out / "data", num_cases=args.mri_cases, num_unlabelled=2, seed=0)
    b = "brats_mae_segmentation"
    what = {
        "pretrain": "MAE pre-training (4 channels)",
        "train": "UNETR fine-tuning",
        "evaluate": "evaluation on the test fold (native resolution)",
    }
    summary, evaluations = study(b, "MRI", out, stages, args.mri_pretrain_epochs, args.mri_train_epochs, what)
    infer(b, "MRI", out, stages, out / "data" / "imagesTs", "inference on the unlabelled MRIs (MAE-initialised model)")
    cases = evaluations[ARMS[0][0]]["cases"]
    notes = [
        f"{args.mri_cases} labelled + 2 unlabelled synthetic MRIs (MSD Task01 layout); MAE pre-training "
        f"{args.mri_pretrain_epochs} epochs, fine-tuning {args.mri_train_epochs} epochs per arm; the "
        "reconstructions show the FLAIR channel."
    ]
    title = f"MRI, tumour regions (BraTS bundle): test cases {', '.join(cases)}"
    return table_lines(title, evaluations, summary, out / "study") + files_lines(
        out, "per_case.csv", "label maps (MSD numbering)"
    ), report_section(
        "MRI: BraTS bundle (tumour regions TC/WT/ET, 3D UNETR)",
        out,
        "val_mean_dice",
        notes + apart_notes(summary, evaluations),
    )


def cxr_part(out: Path, stages: Stages, args: argparse.Namespace) -> tuple[list[str], ReportSection]:
    """ChestX-ray14 bundle on synthetic chest radiographs; returns its summary lines and report section."""
    from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

    tqdm.write(stages.label(f"CXR: generating radiographs of {args.cxr_patients} patients (NIH layout, 14 findings)"))
    write_cxr14_phantom_dataset(out / "data", num_patients=args.cxr_patients, size=128, seed=0)
    b = "cxr14_mae_classification"
    what = {"pretrain": "MAE pre-training", "train": "ViT fine-tuning", "evaluate": "evaluation on test_list.txt"}
    summary, evaluations = study(b, "CXR", out, stages, args.cxr_pretrain_epochs, args.cxr_train_epochs, what)
    infer(b, "CXR", out, stages, out / "data" / "images", "inference on the image folder (MAE-initialised model)")
    n = evaluations[ARMS[0][0]].get("n_images", "?")
    notes = [
        f"Synthetic radiographs of {args.cxr_patients} patients (NIH layout), {n} test images; MAE pre-training "
        f"{args.cxr_pretrain_epochs} epochs, fine-tuning {args.cxr_train_epochs} epochs per arm; ROC AUC is "
        "n/a for a finding whose test labels are all negative or all positive."
    ]
    title = f"Chest X-ray, 14 findings (CXR14 bundle): ROC AUC on {n} test images"
    return table_lines(title, evaluations, summary, out / "study") + files_lines(
        out, "predictions.csv", "probabilities"
    ), report_section(
        "Chest X-ray: ChestX-ray14 bundle (14 findings, 2D ViT)",
        out,
        "val_mean_auc",
        notes + apart_notes(summary, evaluations),
    )


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
    tqdm.write(
        f"demo: {stages.total} stages ({', '.join(parts)}: data; a study of MAE against scratch: MAE "
        "pre-training, fine-tuning from the MAE encoder and from scratch, evaluation of both; inference; then "
        "the report)"
    )
    lines, sections = [], []
    for p in parts:
        part_lines, section = PARTS[p][0](output / p, stages, args)
        lines += part_lines + [""]
        sections.append(section)
    tqdm.write(stages.label("writing the report"))
    intro = [
        f"Made by scripts/demo.py on synthetic data, parts: {', '.join(parts)}. Each part is a study of MAE "
        "against scratch (python -m shared_networks.cli.study, label fraction 1, seed 0): it pre-trains an MAE "
        "on its training images, then fine-tunes twice with the same data and seed, from the MAE encoder and "
        "from scratch (--pretrained_ckpt none); both are evaluated on the same test split, and the study gives "
        "the paired bootstrap 95 % CI of MAE - scratch with its verdict (a CI that contains 0: noise). These "
        "quick runs (tiny ViTs, configs/quick.yaml) show the whole chain working; they say nothing about MAE on "
        "real data sets."
    ]
    report = build_report(sections, output / "report.html", "MAE self pre-training demo", intro)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in stages.timings.items())
    print(f"\ndemo done in {time.time() - stages.start:.0f} s ({times})\n")
    print("\n".join(lines))
    if args.mlflow:
        print(f"MLflow: mlflow ui --backend-store-uri sqlite:///{output}/<part>/mlflow.db (pip install mlflow)")
    print("The quick variant shows the whole chain working on synthetic data; it says nothing about real results.")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
