"""A visual report of pre-training and fine-tuning runs: one HTML file, with the reconstruction PNGs beside it.

Built only from what the bundles' workflows write: the TensorBoard event files of ``pretrain.yaml`` (``train_loss``
per iteration) and of each fine-tuning run of ``train.yaml`` (``train_loss`` per iteration, the validation metric
per validation epoch), the reconstruction PNGs of ``shared_networks.ReconstructionSaver``, and the
``summary.json`` of each evaluation (per-class Dice, HD95 and missed / false-positive counts of ``MetricsReport``, or
ROC AUC of ``ClassificationReport``). Curves are matplotlib charts inlined as SVG; the page loads nothing from the
network.

    from shared_networks.tools.report import FineTuneRun, ReportSection, build_report
    section = ReportSection("CT", pretrain_dir="runs/pretrain", val_tag="val_mean_dice", runs=[
        FineTuneRun("MAE encoder", "runs/train", "runs/evaluate/summary.json"),
        FineTuneRun("from scratch", "runs/train_scratch", "runs/evaluate_scratch/summary.json")])
    build_report([section], "report/report.html")
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

from shared_networks.utils.files import atomic_write_text

__all__ = [
    "SEGMENTATION_NOTE",
    "FineTuneRun",
    "ReportSection",
    "build_report",
    "read_scalars",
    "svg_line_chart",
    "summary_table",
]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_RECON = re.compile(r"reconstruction_epoch(\d+)\.png$")


@dataclass
class FineTuneRun:
    """One fine-tuning run and its evaluation.

    Args:
        name: label in the legend and the table, e.g. ``"MAE encoder"`` or ``"from scratch"``.
        train_dir: the run's TensorBoard log folder (``output_dir`` of ``train.yaml``).
        summary: the evaluation's ``summary.json``.
    """

    name: str
    train_dir: str | os.PathLike
    summary: str | os.PathLike


@dataclass
class ReportSection:
    """One bundle's part of the report.

    Args:
        title: section heading.
        pretrain_dir: TensorBoard log folder of pre-training, which also holds ``reconstruction_epoch*.png``.
        runs: fine-tuning runs shown side by side (curves on one chart, one table column each).
        val_tag: TensorBoard tag of the validation metric (``val_mean_dice``, ``val_mean_auc``).
        notes: lines of text shown under the title.
        max_reconstructions: how many reconstruction images to show (the latest epochs).
        study_dir: output folder of ``python -m shared_networks.cli.study`` for this bundle (its ``study.html`` and
            ``label_efficiency.png`` are shown at the end of the section), or None.
    """

    title: str
    pretrain_dir: str | os.PathLike
    runs: Sequence[FineTuneRun]
    val_tag: str
    notes: Sequence[str] = field(default_factory=tuple)
    max_reconstructions: int = 4
    study_dir: str | os.PathLike | None = None


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """All scalars of the TensorBoard event files in ``log_dir`` (not recursive): ``{tag: [(step, value), ...]}``.

    Files are read in the order they were created (``events.out.tfevents.<time>.<host>.<pid>.<counter>``); where a
    step appears twice, the later file's value wins (a re-run or resumed run into the same folder). Steps are
    returned sorted.

    Raises:
        ValueError: ``log_dir`` holds no event file.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    folder = Path(log_dir)
    files = sorted(folder.glob("events.out.tfevents.*"), key=_creation_order) if folder.is_dir() else []
    if not files:
        raise ValueError(f"{folder}: no TensorBoard event file (events.out.tfevents.*) there.")
    scalars: dict[str, dict[int, float]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={SCALARS: 0})  # 0: keep every value, no sampling
        acc.Reload()
        for tag in acc.Tags()[SCALARS]:
            scalars.setdefault(tag, {}).update({e.step: float(e.value) for e in acc.Scalars(tag)})
    return {tag: sorted(values.items()) for tag, values in scalars.items()}


def _creation_order(path: Path) -> tuple[int, int, str]:
    parts = path.name.split(".")
    created, counter = parts[3] if len(parts) > 3 else "", parts[-1]
    return (int(created) if created.isdigit() else 0, int(counter) if counter.isdigit() else 0, path.name)


def _scalar(log_dir: str | os.PathLike, tag: str) -> list[tuple[int, float]]:
    scalars = read_scalars(log_dir)
    if tag not in scalars:
        raise ValueError(f"{log_dir}: no scalar '{tag}' in its TensorBoard events (found: {sorted(scalars)}).")
    return scalars[tag]


def svg_line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 560,
    height: int = 300,
    markers: bool = False,
) -> str:
    """An inline SVG line chart drawn by matplotlib: one line per series (in ``COLOURS`` order), a legend.

    The x axis runs from the smallest x to the largest (steps: iterations, epochs; whole-number ticks); the y range is
    widened by 5 % of its span on both sides. Non-finite values are left out. Each line's group carries
    ``data-series="<name>"``; text stays text (searchable, escaped).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend
    from matplotlib.ticker import MaxNLocator

    clean = {
        k: [(float(x), float(y)) for x, y in v if math.isfinite(x) and math.isfinite(y)] for k, v in series.items()
    }
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if not any(clean.values()):
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    for i, (name, points) in enumerate(clean.items()):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        (line,) = ax.plot(xs, ys, color=COLOURS[i % len(COLOURS)], lw=1.6, marker="o" if markers else None, ms=3)
        line.set_label(name)
        line.set_gid(f"series-{i}")
    if any(clean.values()):
        ax.margins(x=0, y=0.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(color="#eee")
        ax.legend(loc="best", fontsize=9)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "report", "font.size": 9}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})  # the same page for the same runs
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # inline: no XML declaration or doctype
    svg = svg.replace("<svg ", f'<svg class="chart" role="img" aria-label="{html.escape(title)}" ', 1)
    for i, name in enumerate(clean):
        svg = svg.replace(f'<g id="series-{i}">', f'<g id="series-{i}" data-series="{html.escape(name)}">', 1)
    return svg


def _load_summary(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: evaluation summary not found (run the bundle's evaluate workflow first).")
    try:
        summary = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not valid JSON ({err}).") from err
    if not isinstance(summary, dict) or not ("dice" in summary or "per_class" in summary):
        raise ValueError(f"{p}: neither a segmentation (dice/hd95) nor a classification (per_class AUC) summary.")
    return summary


def _fmt(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


SEGMENTATION_NOTE = (
    "HD95 in mm. A structure in the label but not the prediction (missed) or in the prediction but not the label "
    "(false positive, FP) has Dice 0 and the bundle's HD95 penalty (hd95_penalty_mm); one empty in both has Dice 1 "
    "and is left out of HD95. Missed and FP: cases per class; last row: means of Dice and HD95, totals of the counts."
)


def summary_table(summaries: Mapping[str, dict]) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """The per-class table of several runs' evaluation summaries, side by side.

    Segmentation summaries (``MetricsReport``) give the columns ``Dice (<run>)`` for every run, then ``HD95 mm
    (<run>)``, then, where the summaries count them (``structures``), ``missed (<run>)`` and ``FP (<run>)``: the
    cases where the class is in the label but not the prediction, and in the prediction but not the label.
    Classification summaries (``ClassificationReport``) give ``AUC (<run>)``. The last row holds the means (over
    the classes where the metric is defined) and the totals of the counts.

    Returns:
        header, rows of cell text (the first cell is the class), and per cell whether it holds the best value of
        its metric in that row (highest Dice/AUC, lowest HD95 and counts; never when fewer than two runs have a
        value).
    """
    names, items = list(summaries), list(summaries.values())
    kinds = {"segmentation" if "dice" in s else "classification" for s in items}
    if len(kinds) != 1:
        raise ValueError(f"runs {names} mix segmentation and classification summaries.")
    if kinds == {"segmentation"}:
        metrics = [("Dice", "dice", 3, True)] + ([("HD95 mm", "hd95", 1, False)] if "hd95" in items[0] else [])
        if any("structures" in s for s in items):
            metrics += [("missed", "missed", 0, False), ("FP", "false_positives", 0, False)]
        classes = list(items[0]["dice"]["per_class"])

        def value(s: dict, key: str, cls: str | None) -> float | None:
            if key in ("missed", "false_positives"):
                counts = s.get("structures")
                if counts is None:
                    return None
                return (counts if cls is None else counts["per_class"].get(cls, {})).get(key)
            return s[key]["mean"] if cls is None else s[key]["per_class"].get(cls, {}).get("mean")
    else:
        metrics = [("AUC", "auc", 3, True)]
        classes = list(items[0]["per_class"])

        def value(s: dict, key: str, cls: str | None) -> float | None:
            return s["mean_auc"] if cls is None else s["per_class"].get(cls, {}).get("auc")

    header = ["class"] + [f"{label} ({n})" for label, *_ in metrics for n in names]
    rows, best = [], []
    last = "mean / total" if any(key == "missed" for _, key, *_ in metrics) else "mean"
    for cls in [*classes, None]:
        row, flags = [last if cls is None else cls], [False]
        for _, key, digits, higher in metrics:
            vals = [value(s, key, cls) for s in items]
            defined = [v for v in vals if v is not None]
            top = (max if higher else min)(defined) if len(defined) > 1 else None
            row += [_fmt(v, digits) for v in vals]
            flags += [top is not None and v == top for v in vals]
        rows.append(row)
        best.append(flags)
    return header, rows, best


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], best: Sequence[Sequence[bool]]) -> str:
    e = html.escape
    out = ["<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, (row, flags) in enumerate(zip(rows, best, strict=True)):
        cls = ' class="mean"' if i == len(rows) - 1 else ""
        cells = "".join(f"<td><b>{e(c)}</b></td>" if f else f"<td>{e(c)}</td>" for c, f in zip(row, flags, strict=True))
        out.append(f"<tr{cls}>{cells}</tr>")
    return "".join(out) + "</tbody></table>"


def _reconstructions(pretrain_dir: Path, keep: int) -> list[tuple[int, Path]]:
    found = [
        (int(m.group(1)), p) for p in pretrain_dir.glob("reconstruction_epoch*.png") if (m := _RECON.search(p.name))
    ]
    return sorted(found)[-keep:] if keep > 0 else []


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower())[:24].strip("_") or "section"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { font-size: 1.05em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .recons { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; }
.recons img { max-width: 560px; image-rendering: pixelated; border: 1px solid #ddd; }
svg.chart { background: #fff; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.mean td { border-top: 2px solid #666; font-weight: 600; }
.note { color: #555; }
"""


def study_fragment(study_dir: str | os.PathLike, files_dir: Path, slug: str, copies: list[tuple[Path, Path]]) -> str:
    """The study's ``study.html`` fragment for a report section; queues its PNG in ``copies`` (source, destination).

    Raises:
        ValueError: the folder has no ``study.html`` (the study has not finished there).
    """
    folder = Path(study_dir)
    fragment_file = folder / "study.html"
    if not fragment_file.is_file():
        raise ValueError(f"{fragment_file}: no study.html; run `python -m shared_networks.cli.study` to the end first.")
    fragment = fragment_file.read_text(encoding="utf-8")
    png = folder / "label_efficiency.png"
    if png.is_file():
        dest = files_dir / f"{slug}_label_efficiency.png"
        copies.append((png, dest))
        fragment = fragment.replace('src="label_efficiency.png"', f'src="{html.escape(files_dir.name)}/{dest.name}"')
    # one level below the section's own heading, with an id of its own per section
    fragment = fragment.replace('<section id="study">', f'<section id="{slug}-study">')
    return fragment.replace("<h2>", "<h3>").replace("</h2>", "</h3>")


def build_report(
    sections: Sequence[ReportSection],
    output: str | os.PathLike,
    title: str = "MAE self pre-training report",
    intro: Sequence[str] = (),
) -> Path:
    """Writes the HTML report to ``output`` and copies the reconstruction PNGs beside it; returns its path.

    The images go to ``<output stem>_files/`` next to the HTML file, which refers to them by relative path, so the
    folder can be moved or archived as a whole. Every input is read and checked before anything is written; the
    HTML file is written atomically.

    Raises:
        ValueError: a log folder without events or without the needed tag, or a missing or malformed summary.
    """
    out = Path(output).expanduser().resolve()
    files_dir = out.with_name(f"{out.stem}_files")
    e = html.escape
    body, copies = [f"<h1>{e(title)}</h1>"] + [f'<p class="note">{e(t)}</p>' for t in intro], []
    for section in sections:
        pre = Path(section.pretrain_dir)
        loss = _scalar(pre, "train_loss")
        runs = {r.name: r for r in section.runs}
        if len(runs) != len(section.runs):
            raise ValueError(f"section '{section.title}': fine-tuning run names must differ.")
        val = {n: _scalar(r.train_dir, section.val_tag) for n, r in runs.items()}
        train_loss = {n: _scalar(r.train_dir, "train_loss") for n, r in runs.items()}
        summaries = {n: _load_summary(r.summary) for n, r in runs.items()}
        header, rows, best = summary_table(summaries)

        slug = _slug(section.title)
        body.append(f'<h2 id="{slug}">{e(section.title)}</h2>')
        body += [f'<p class="note">{e(t)}</p>' for t in section.notes]
        recons = _reconstructions(pre, section.max_reconstructions)
        body.append("<h3>MAE reconstructions (input | masked input, hidden patches black | reconstruction)</h3>")
        if recons:
            body.append('<div class="recons">')
            for epoch, src in recons:
                dest = files_dir / f"{slug}_{src.name}"
                copies.append((src, dest))
                rel = f"{files_dir.name}/{dest.name}"
                body.append(
                    f'<figure><img src="{e(rel)}" alt="{e(f"reconstruction after epoch {epoch}")}">'
                    f"<figcaption>after pre-training epoch {epoch}</figcaption></figure>"
                )
            body.append("</div>")
        else:
            body.append(f'<p class="note">no reconstruction_epoch*.png in {e(str(pre))}</p>')
        body.append('<h3>Curves</h3><div class="charts">')
        body.append(svg_line_chart({"MAE loss": loss}, "MAE pre-training loss (masked patches)", "iteration", "loss"))
        body.append(
            svg_line_chart(
                val, f"fine-tuning: {section.val_tag} on the validation split", "epoch", section.val_tag, markers=True
            )
        )
        body.append(svg_line_chart(train_loss, "fine-tuning: training loss", "iteration", "loss"))
        body.append("</div>")
        body.append("<h3>Test split, per class (bold: the better run)</h3>")
        body.append(_table_html(header, rows, best))
        if any("structures" in v for v in summaries.values()):
            body.append(f'<p class="note">{e(SEGMENTATION_NOTE)}</p>')
        body.append(
            '<p class="note">' + "; ".join(f"{e(n)}: {e(str(Path(r.summary)))}" for n, r in runs.items()) + "</p>"
        )
        if section.study_dir is not None:
            body.append(study_fragment(section.study_dir, files_dir, slug, copies))

    files_dir.mkdir(parents=True, exist_ok=True)
    for src, dest in copies:
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    head = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{CSS}</style>'
    page = head + "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    return atomic_write_text(out, page)
