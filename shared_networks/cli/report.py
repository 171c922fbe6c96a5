"""Build the HTML report of one pre-training run and its fine-tuning arms (what ``scripts/demo.py`` writes).

Command line::

    python -m shared_networks.cli.report --output report/report.html --pretrain_dir runs/pretrain \\
        --runs '{"MAE encoder": ["runs/train", "runs/evaluate/summary.json"],
                 "from scratch": ["runs/train_scratch", "runs/evaluate_scratch/summary.json"]}' \\
        [--val_tag val_mean_dice] [--section CT] [--title "MAE self pre-training report"] [--study_dir runs/study]

The test table puts the runs side by side: per class Dice, HD95 (mm) and the counts of missed and false-positive
structures for a segmentation bundle (``MetricsReport``), ROC AUC for classification. For several sections, call
:func:`shared_networks.tools.report.build_report` from Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared_networks.cli import run_fire
from shared_networks.tools.report import FineTuneRun, ReportSection, build_report

__all__ = ["main", "report"]


def report(
    output: str,
    pretrain_dir: str,
    runs: Mapping[str, Sequence[str]],
    val_tag: str = "val_mean_dice",
    section: str = "Results",
    title: str = "MAE self pre-training report",
    max_reconstructions: int = 4,
    study_dir: str | None = None,
) -> str:
    """Write the HTML report of one pre-training run and its fine-tuning runs, with the reconstruction PNGs beside it.

    Args:
        output: HTML file to write; the images go to <output stem>_files/ beside it.
        pretrain_dir: TensorBoard log folder of pre-training (it also holds reconstruction_epoch*.png).
        runs: {name: [train_dir, summary_json]} of each fine-tuning run, e.g. the MAE encoder and from scratch.
        val_tag: TensorBoard tag of the validation metric (val_mean_dice, val_mean_auc).
        section: heading of the section.
        title: title of the page.
        max_reconstructions: reconstruction images shown (the latest epochs).
        study_dir: output folder of ``python -m shared_networks.cli.study``, shown at the end of the section.

    Returns:
        The path of the written HTML file.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"runs must map each run's name to [train_dir, summary_json], got {runs!r}.")
    fine_tune = []
    for name, paths in runs.items():
        if isinstance(paths, str) or len(paths) != 2:
            raise ValueError(f"run {name!r} needs [train_dir, summary_json], got {paths!r}.")
        fine_tune.append(FineTuneRun(str(name), paths[0], paths[1]))
    sections = [
        ReportSection(
            section, pretrain_dir, fine_tune, val_tag, max_reconstructions=int(max_reconstructions), study_dir=study_dir
        )
    ]
    return str(build_report(sections, output, title))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.report --output FILE --pretrain_dir DIR --runs '{NAME: [TRAIN_DIR, SUMMARY]}'``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    run_fire(report, "shared_networks.cli.report", argv)


if __name__ == "__main__":
    main()
