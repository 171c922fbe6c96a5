"""The demo (scripts/demo.py, the README's first command) end to end, on its smallest chest X-ray part."""

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
    cmd = [sys.executable, str(REPO / "scripts" / "demo.py"), "--parts", "cxr", "--output", str(out),
           "--cxr_patients", "24", "--cxr_pretrain_epochs", "2", "--cxr_train_epochs", "1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    report = out / "report.html"
    assert lines[-1] == f"report: {report}" and report.is_file()
    assert re.search(r"\[8/8, \d+ s\] writing the report", proc.stdout + proc.stderr)  # progress: stage of total

    runs = out / "cxr" / "runs"
    assert (out / "cxr" / "models" / "model.pt").is_file() and (out / "cxr" / "models_scratch" / "model.pt").is_file()
    assert "random initialisation" in (runs / "train_scratch.log").read_text()
    assert "pre-trained encoder from" in (runs / "train.log").read_text()
    summaries = {arm: json.loads((runs / f"evaluate{s}" / "summary.json").read_text()) for arm, s in
                 (("MAE encoder", ""), ("from scratch", "_scratch"))}  # fmt: skip
    assert summaries["MAE encoder"]["per_class"] != summaries["from scratch"]["per_class"]  # two different models

    page = report.read_text()
    assert "AUC (MAE encoder)" in page and "AUC (from scratch)" in page
    means = [f"{summaries[arm]['mean_auc']:.3f}" for arm in ("MAE encoder", "from scratch")]
    row = re.search(r'<tr class="mean">(.*?)</tr>', page).group(1)
    assert re.findall(r"<td>(?:<b>)?([^<]+)", row) == ["mean", *means]
    images = re.findall(r'<img src="([^"]+)"', page)
    assert [Path(i).name.split("_reconstruction_")[1] for i in images] == ["epoch1.png", "epoch2.png"]
    assert all((report.parent / i).is_file() for i in images)
    # the table printed at the end matches the report
    printed = next(line for line in lines if line.strip().startswith("mean "))
    assert printed.split()[1:] == means
