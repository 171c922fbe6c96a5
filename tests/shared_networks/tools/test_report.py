"""The HTML report builder, on event files, PNGs and summaries that the tests write the way the workflows do."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from shared_networks.tools.report import (
    FineTuneRun,
    ReportSection,
    build_report,
    read_scalars,
    summary_table,
    svg_line_chart,
)


def write_scalars(log_dir: Path, tag: str, values: dict[int, float]) -> None:
    """One event file in ``log_dir`` (one SummaryWriter, as each TensorBoardStatsHandler of a workflow)."""
    with SummaryWriter(log_dir=str(log_dir)) as w:
        for step, v in values.items():
            w.add_scalar(tag, v, step)


def seg_summary(
    dice: dict[str, float | None], hd95: dict[str, float | None], counts: dict[str, tuple[int, int]] | None = None
) -> dict:
    """A summary.json as ``MetricsReport`` writes it; ``counts``: (missed, false positives) per class, of 4 cases
    (without it, a summary of before the counts)."""
    means = [v for v in dice.values() if v is not None]
    summary = {
        "n_cases": 4,
        "cases": ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"],
        "dice": {"mean": float(np.mean(means)), "per_class": {c: {"mean": v, "n": 4} for c, v in dice.items()}},
        "hd95": {"mean": None, "per_class": {c: {"mean": v, "n": 4} for c, v in hd95.items()}},
    }
    if counts is not None:
        per_class = {
            c: {"detected": 4 - m - f, "missed": m, "false_positives": f, "both_empty": 0}
            for c, (m, f) in counts.items()
        }
        totals = {k: sum(v[k] for v in per_class.values()) for k in ("detected", "missed", "false_positives")}
        summary["structures"] = {"per_class": per_class, **totals, "both_empty": 0}
    return summary


def cls_summary(aucs: dict[str, float | None]) -> dict:
    """A summary.json as ``ClassificationReport`` writes it."""
    defined = [a for a in aucs.values() if a is not None]
    per_class = {c: {"auc": a, "positives": 1, "negatives": 3} for c, a in aucs.items()}
    return {"n_images": 4, "mean_auc": float(np.mean(defined)), "per_class": per_class}


@pytest.fixture
def segmentation_runs(tmp_path: Path) -> ReportSection:
    """A pretrain folder (loss events, two reconstruction PNGs) and two fine-tuning runs with their summaries."""
    pre = tmp_path / "runs" / "pretrain"
    write_scalars(pre, "train_loss", {1: 1.0, 2: 0.8, 3: 0.7, 4: 0.5})
    for epoch in (2, 4):
        Image.fromarray(np.full((8, 20), 40 * epoch, np.uint8)).save(pre / f"reconstruction_epoch{epoch}.png")
    runs = []
    for name, folder, val, dice, hd, counts in (
        (
            "MAE encoder",
            "train",
            {5: 0.4, 10: 0.6},
            {"liver": 0.9, "a<b & c": 0.5},
            {"liver": 3.0, "a<b & c": 9.0},
            {"liver": (0, 0), "a<b & c": (1, 0)},
        ),
        (
            "from scratch",
            "train_scratch",
            {5: 0.2, 10: 0.3},
            {"liver": 0.8, "a<b & c": None},
            {"liver": 4.5, "a<b & c": None},
            {"liver": (0, 1), "a<b & c": (2, 0)},
        ),
    ):
        d = tmp_path / "runs" / folder
        write_scalars(d, "val_mean_dice", val)  # validation and training write separate files into one folder
        write_scalars(d, "train_loss", {i: 1.0 / i for i in range(1, 21)})
        summary = tmp_path / "runs" / f"evaluate_{folder}" / "summary.json"
        summary.parent.mkdir(parents=True)
        summary.write_text(json.dumps(seg_summary(dice, hd, counts)))
        runs.append(FineTuneRun(name, d, summary))
    return ReportSection("CT <organs> & more", pre, runs, "val_mean_dice", notes=["tiny & synthetic"])


def test_read_scalars_merges_files_and_keeps_every_step(tmp_path):
    write_scalars(tmp_path, "val_mean_dice", {5: 0.25, 10: 0.5})
    write_scalars(tmp_path, "train_loss", {i: float(i) for i in range(1, 12001)})  # more than the default 10000 kept
    scalars = read_scalars(tmp_path)
    assert scalars["val_mean_dice"] == [(5, 0.25), (10, 0.5)]
    assert len(scalars["train_loss"]) == 12000 and scalars["train_loss"][-1] == (12000, 12000.0)


def test_read_scalars_later_file_wins_for_a_repeated_step(tmp_path):
    write_scalars(tmp_path, "val_mean_auc", {1: 0.5, 2: 0.5})
    write_scalars(tmp_path, "val_mean_auc", {2: 0.75, 3: 0.875})  # a resumed run: newer file, later name
    assert read_scalars(tmp_path)["val_mean_auc"] == [(1, 0.5), (2, 0.75), (3, 0.875)]


def test_read_scalars_without_events_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "nothing"))):
        read_scalars(tmp_path / "nothing")


def _lines(svg: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """``(series name, points in SVG coordinates)`` of each line of a chart."""
    found = re.findall(r'<g id="series-\d+" data-series="([^"]+)">\s*<path[^>]*? d="([^"]+)"', svg)
    return [
        (html.unescape(n), [tuple(map(float, p)) for p in re.findall(r"[ML] ([\d.]+) ([\d.]+)", d)]) for n, d in found
    ]


def test_svg_chart_maps_the_data_linearly_and_leaves_out_non_finite_points():
    svg = svg_line_chart({"a<b": [(0, 1.0), (10, 3.0)], "c": [(5, 2.0), (10, float("nan"))]}, "t&t", "x", "y")
    (name_a, a), (name_c, c) = _lines(svg)
    assert (name_a, name_c) == ("a<b", "c") and len(a) == 2 and len(c) == 1  # the NaN point is left out
    (ax0, ay0), (ax1, ay1) = a
    assert ax0 < ax1 and ay0 > ay1  # SVG y grows downwards
    # x = 5 is the middle of 0..10, y = 2 the middle of 1..3: a linear map puts (5, 2) at the middle of a's ends
    assert c[0] == (pytest.approx((ax0 + ax1) / 2, abs=0.01), pytest.approx((ay0 + ay1) / 2, abs=0.01))
    assert "t&amp;t" in svg and 'data-series="a&lt;b"' in svg and "a<b" not in svg
    assert svg.startswith('<svg class="chart"') and "<?xml" not in svg and "<script" not in svg
    assert svg == svg_line_chart({"a<b": [(0, 1.0), (10, 3.0)], "c": [(5, 2.0), (10, float("nan"))]}, "t&t", "x", "y")


def test_svg_chart_without_points_says_so():
    assert "no data" in svg_line_chart({"a": []}, "t", "x", "y")


def test_summary_table_segmentation_side_by_side():
    header, rows, best = summary_table(
        {
            "MAE": seg_summary({"liver": 0.9, "kidney": None}, {"liver": 3.0, "kidney": None}),
            "scratch": seg_summary({"liver": 0.8, "kidney": 0.1}, {"liver": 4.25, "kidney": 20.0}),
        }
    )
    assert header == ["class", "Dice (MAE)", "Dice (scratch)", "HD95 mm (MAE)", "HD95 mm (scratch)"]
    assert rows == [
        ["liver", "0.900", "0.800", "3.0", "4.2"],
        ["kidney", "n/a", "0.100", "n/a", "20.0"],
        ["mean", "0.900", "0.450", "n/a", "n/a"],
    ]
    # best: higher Dice, lower HD95; no winner where only one run has a value
    assert best == [[False, True, False, True, False], [False] * 5, [False, True, False, False, False]]


def test_summary_table_segmentation_with_missed_and_false_positive_counts():
    header, rows, best = summary_table(
        {
            "MAE": seg_summary(
                {"liver": 0.9, "kidney": 0.5}, {"liver": 3.0, "kidney": 40.0}, {"liver": (0, 0), "kidney": (1, 2)}
            ),
            "scratch": seg_summary(
                {"liver": 0.8, "kidney": 0.1}, {"liver": 4.25, "kidney": 20.0}, {"liver": (1, 0), "kidney": (0, 0)}
            ),
        }
    )
    assert header == [
        "class",
        "Dice (MAE)",
        "Dice (scratch)",
        "HD95 mm (MAE)",
        "HD95 mm (scratch)",
        "missed (MAE)",
        "missed (scratch)",
        "FP (MAE)",
        "FP (scratch)",
    ]
    assert rows == [
        ["liver", "0.900", "0.800", "3.0", "4.2", "0", "1", "0", "0"],
        ["kidney", "0.500", "0.100", "40.0", "20.0", "1", "0", "2", "0"],
        ["mean / total", "0.700", "0.450", "n/a", "n/a", "1", "1", "2", "0"],
    ]
    # fewer missed structures and false positives are better; a tie marks both
    assert best[0] == [False, True, False, True, False, True, False, True, True]
    assert best[1] == [False, True, False, False, True, False, True, False, True]
    # a summary written before the counts: n/a there
    _, rows, _ = summary_table(
        {
            "new": seg_summary({"liver": 0.9}, {"liver": 3.0}, {"liver": (1, 2)}),
            "old": seg_summary({"liver": 0.8}, {"liver": 4.0}),
        }
    )
    assert rows[0] == ["liver", "0.900", "0.800", "3.0", "4.0", "1", "n/a", "2", "n/a"]


def test_summary_table_classification_and_mixed_kinds():
    header, rows, best = summary_table(
        {"MAE": cls_summary({"Edema": 0.75, "Mass": None}), "scratch": cls_summary({"Edema": 0.5, "Mass": None})}
    )
    assert header == ["class", "AUC (MAE)", "AUC (scratch)"]
    assert rows == [["Edema", "0.750", "0.500"], ["Mass", "n/a", "n/a"], ["mean", "0.750", "0.500"]]
    assert best[0] == [False, True, False] and best[1] == [False, False, False]
    with pytest.raises(ValueError, match="mix segmentation and classification"):
        summary_table({"a": cls_summary({"Edema": 0.5}), "b": seg_summary({"liver": 0.5}, {"liver": 1.0})})


def test_build_report_writes_html_and_images(segmentation_runs, tmp_path):
    out = build_report([segmentation_runs], tmp_path / "report" / "report.html", "Demo <report>", ["intro & more"])
    assert out == (tmp_path / "report" / "report.html").resolve()
    page = out.read_text()
    # text is escaped, nothing is loaded from elsewhere
    assert "<title>Demo &lt;report&gt;</title>" in page and "CT &lt;organs&gt; &amp; more" in page
    assert "a&lt;b &amp; c" in page and "a<b" not in page and "tiny &amp; synthetic" in page
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    # both reconstruction images copied beside the page and referenced relatively, oldest first
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert [Path(s).name for s in srcs] == [
        "ct_organs_more_reconstruction_epoch2.png",
        "ct_organs_more_reconstruction_epoch4.png",
    ]
    for s, epoch in zip(srcs, (2, 4), strict=True):
        assert (out.parent / s).is_file() and np.asarray(Image.open(out.parent / s)).max() == 40 * epoch
    # three charts: pre-training loss (4 points), validation Dice of both runs (2 points each), training losses
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 3
    series = [[(n, len(points)) for n, points in _lines(c)] for c in charts]
    assert series[0] == [("MAE loss", 4)]
    assert series[1] == [("MAE encoder", 2), ("from scratch", 2)]
    assert series[2] == [("MAE encoder", 20), ("from scratch", 20)]
    # the per-class table, the better value in bold
    cells = [html.unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", page)]
    assert cells[:9] == [
        "class",
        "Dice (MAE encoder)",
        "Dice (from scratch)",
        "HD95 mm (MAE encoder)",
        "HD95 mm (from scratch)",
        "missed (MAE encoder)",
        "missed (from scratch)",
        "FP (MAE encoder)",
        "FP (from scratch)",
    ]
    assert cells[9:] == [
        "liver",
        "0.900",
        "0.800",
        "3.0",
        "4.5",
        "0",
        "0",
        "0",
        "1",
        "a<b & c",
        "0.500",
        "n/a",
        "9.0",
        "n/a",
        "1",
        "2",
        "0",
        "0",
        "mean / total",
        "0.700",
        "0.800",
        "n/a",
        "n/a",
        "1",
        "2",
        "0",
        "1",
    ]
    assert "hd95_penalty_mm" in page  # the conventions under the table
    assert "<td><b>0.900</b></td>" in page and "<td><b>3.0</b></td>" in page and "<td><b>0.800</b></td>" in page


def test_build_report_checks_its_inputs_before_writing(segmentation_runs, tmp_path):
    out = tmp_path / "r" / "report.html"
    missing = Path(segmentation_runs.runs[1].summary)
    missing.unlink()
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        build_report([segmentation_runs], out)
    missing.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        build_report([segmentation_runs], out)
    missing.write_text(json.dumps(seg_summary({"liver": 0.5}, {"liver": 1.0})))
    segmentation_runs.val_tag = "val_mean_auc"
    with pytest.raises(ValueError, match=r"no scalar 'val_mean_auc'.*found: \['train_loss', 'val_mean_dice'\]"):
        build_report([segmentation_runs], out)
    assert not out.parent.exists()  # nothing half-written


def test_command_line(segmentation_runs, tmp_path, capsys):
    """``python -m shared_networks.cli.report``: one section from the command line (here in process)."""
    from shared_networks.cli.report import main

    runs = {r.name: [str(r.train_dir), str(r.summary)] for r in segmentation_runs.runs}
    out = tmp_path / "cli" / "report.html"
    main(
        [
            "--output",
            str(out),
            "--pretrain_dir",
            str(segmentation_runs.pretrain_dir),
            "--runs",
            json.dumps(runs),
            "--section",
            "CT",
            "--title",
            "Demo",
        ]
    )
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    assert "<title>Demo</title>" in page and "MAE encoder" in page and "from scratch" in page
    with pytest.raises(ValueError, match="run 'x' needs"):
        main(["--output", str(out), "--pretrain_dir", ".", "--runs", '{"x": ["only one"]}'])
