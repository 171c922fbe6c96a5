"""The demo (scripts/demo.py, the README's first command) end to end, on its smallest chest X-ray part: a study of MAE
against scratch whose difference, 95 % CI and verdict the printed tables and the report show."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_fine_tunes_both_arms_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "demo.py"),
        "--parts",
        "cxr",
        "--output",
        str(out),
        "--cxr_patients",
        "24",
        "--cxr_pretrain_epochs",
        "2",
        "--cxr_train_epochs",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    report = out / "report.html"
    assert lines[-1] == f"report: {report}" and report.is_file()
    assert re.search(r"\[8/8, \d+ s\] writing the report", proc.stdout + proc.stderr)  # progress: stage of total

    study = out / "cxr" / "study"
    runs = {arm: study / "runs" / f"fraction1_seed0_{arm}" for arm in ("mae", "scratch")}
    assert (study / "pretrain" / "models" / "mae.pt").is_file()
    assert all((r / "models" / "model.pt").is_file() for r in runs.values())
    assert "random initialisation" in (runs["scratch"] / "train.log").read_text()
    assert "pre-trained encoder from" in (runs["mae"] / "train.log").read_text()
    assert (out / "cxr" / "inference").is_dir()
    summaries = {
        arm: json.loads((runs[a] / "evaluate" / "summary.json").read_text())
        for arm, a in (("MAE encoder", "mae"), ("from scratch", "scratch"))
    }
    assert summaries["MAE encoder"]["per_class"] != summaries["from scratch"]["per_class"]  # two different models

    page = report.read_text()
    assert "AUC (MAE encoder)" in page and "AUC (from scratch)" in page
    means = [f"{summaries[arm]['mean_auc']:.3f}" for arm in ("MAE encoder", "from scratch")]
    row = re.search(r'<tr class="mean">(.*?)</tr>', page).group(1)
    assert re.findall(r"<td>(?:<b>)?([^<]+)", row) == ["mean", *means]
    images = re.findall(r'<img src="([^"]+)"', page)
    recons = [Path(i).name.split("_reconstruction_")[1] for i in images if "_reconstruction_" in Path(i).name]
    assert recons == ["epoch1.png", "epoch2.png"]
    assert all((report.parent / i).is_file() for i in images)
    # the table printed at the end matches the report
    printed = next(line for line in lines if line.strip().startswith("mean "))
    assert printed.split()[1:] == means

    # MAE - scratch is the study's: its summary.json gives the difference, its 95 % CI and the verdict, printed as a
    # row of the difference table and shown in the report's study fragment
    study_summary = json.loads((study / "summary.json").read_text())
    arms = study_summary["fractions"]["1"]["arms"]
    study_means = [arms[a]["auc"]["mean"] for a in ("mae", "scratch")]
    comparison = study_summary["fractions"]["1"]["comparisons"]["mae - scratch"]["auc"]["mean"]
    lo, hi = comparison["ci95"]
    assert comparison["difference"] == pytest.approx(study_means[0] - study_means[1]) and lo <= hi
    verdict = "MAE ahead" if lo > 0 else "scratch ahead" if hi < 0 else "difference within noise (CI contains 0)"
    assert comparison["verdict"] == verdict
    header = next(line for line in lines if line.strip().startswith("metric "))
    assert " ".join(header.split()) == "metric MAE encoder from scratch MAE - scratch 95 % CI verdict"
    auc_row = next(line for line in lines if line.strip().startswith("AUC (mean)"))
    shown = [f"{v:.3f}" for v in study_means]
    assert auc_row.split()[2:5] == [*shown, f"{comparison['difference']:+.3f}"]
    assert auc_row.rstrip().endswith(f"[{lo:+.3f}, {hi:+.3f}]  {verdict}")
    # the study reads predictions.csv (6 decimals): where its mean shows otherwise than summary.json's, a note says so
    noted = any(line.strip().startswith("Note: the study's mean AUC differs") for line in lines)
    assert noted == (shown != means)
    fragment = re.search(r'<section id="[a-z0-9_]+-study">(.*?)</section>', page, re.S).group(1)
    cells = re.findall(r"<td>([^<]*)</td>", fragment)
    assert cells[-5:] == ["1", "mae - scratch", f"{comparison['difference']:.3f}", f"[{lo:.3f}, {hi:.3f}]", verdict]
